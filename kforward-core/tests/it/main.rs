//! End-to-end tests of kforward-core against the testkit cluster, through real sockets.

mod common;
mod doctor;
mod errors;
mod forward;
mod forward_proxy;
mod forward_proxy_pipeline;
mod peers;
mod proxy;
mod proxy_protocol;
mod relay;
mod relay_pods;
mod shared_pool;
mod spdy;
mod supervisor;
mod transport;
mod watches;
mod workloads;
