//! End-to-end tests of kforward-core against the testkit cluster, through real sockets.

mod common;
mod errors;
mod forward;
mod proxy;
mod relay;
mod supervisor;
