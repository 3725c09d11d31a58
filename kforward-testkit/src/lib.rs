//! An in-process Kubernetes API server whose pods are real loopback servers.
//!
//! kforward's tests, benchmarks and `kforward demo` run against this instead of a real
//! cluster. A [`Cluster`] serves the API that port-forwarding and kubectl touch over HTTPS
//! (its own CA, a bearer token, a kubeconfig written for it), runs each pod as real servers
//! on its own loopback address (127.x.y.z), forwards ClusterIPs like kube-proxy, answers
//! cluster DNS, and injects faults on demand (dropped streams, a paused or restarted API
//! server, 403s, expired tokens, NotReady pods).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let cluster = kforward_testkit::Cluster::demo().await.unwrap();
//! let svc = cluster.service("demo", "echo").unwrap();
//! let ip = svc.spec.unwrap().cluster_ip.unwrap();
//! let mut c = tokio::net::TcpStream::connect((ip.as_str(), 7000)).await.unwrap();
//! c.write_all(b"ping").await.unwrap();
//! let mut buf = [0u8; 4];
//! c.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"ping");
//! # });
//! ```

mod admission;
mod cluster;
mod controller;
mod error;
mod faults;
mod kubeconfig;
pub mod network;
pub mod portforward;
pub mod proxies;
mod registry;
mod resource;
mod response;
mod scenario;
mod schema;
mod selector;
mod server;
mod state;
mod status;
mod store;
mod tls;
mod workloads;

pub use admission::POD_SECURITY_ENFORCE;
pub use cluster::{BehindProxy, Cluster, ClusterBuilder};
pub use error::Error;
pub use kubeconfig::{KubeconfigEntry, kubeconfig_json, write_kubeconfig};
pub use resource::Kind;
pub use scenario::{
    DEMO_EXTERNAL_HOST, DEMO_NAMESPACE, DemoObjects, ECHO_IMAGE, HTTP_IMAGE, PASSTHROUGH_IMAGE,
    PortSpec, SLEEP_IMAGE, UDP_ECHO_IMAGE, demo_objects, deployment, headless_service, service,
    statefulset,
};
pub use state::{StatsSnapshot, USER};
pub use status::{ApiError, Cause, MoreDetails};
pub use store::{EventType, Store, StoreEvent};
