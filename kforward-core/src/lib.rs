//! kforward-core: reach services inside Kubernetes clusters from a developer's machine.
//!
//! Build a [`ForwardSpec`](spec::ForwardSpec) (or load kftray-style
//! [`ForwardConfig`](config::ForwardConfig)s), connect with a [`KubeContext`], and start a
//! [`Forward`]: local listeners whose connections each get their own port-forward stream
//! to a ready pod of the target, spread over the ready pods as a Service would, with the
//! set of pods kept current by a watch; UDP and remote addresses go through a relay pod.
//! A [`Supervisor`] keeps many forwards up (probes, reconnects, shared relay pods), and
//! [`Tunnel`] is one port-forward stream for tools that talk to a pod themselves.
//!
//! The library takes no global state and runs inside the caller's tokio runtime.
//!
//! # Example
//!
//! This runs for real, against the testkit's simulated cluster:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use kforward_core::spec::{ForwardSpec, PortMapping, Target};
//! use kforward_core::{Forward, Forwarder, KubeContext, KubeconfigSource};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let cluster = kforward_testkit::Cluster::demo().await.unwrap();
//! let src = KubeconfigSource::default().with_path(cluster.kubeconfig_path());
//! let ctx = KubeContext::load(&src).await?;
//!
//! let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)])
//!     .with_namespace("demo");
//! let mut fwd = Forward::new(ctx, spec, Default::default());
//! let bound = fwd.start().await?;
//!
//! let mut conn = tokio::net::TcpStream::connect(bound[0].local_addr).await?;
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").await?;
//! let mut reply = String::new();
//! conn.read_to_string(&mut reply).await?;
//! assert!(reply.contains("\r\n\r\nweb-"), "a web pod answered with its name");
//!
//! fwd.stop().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod client;
pub mod config;
mod connector;
pub mod doctor;
pub mod error;
pub mod forward;
pub mod forward_proxy;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod kube_config;
mod pod_order;
pub mod proxy_protocol;
pub mod relay;
pub mod resolve;
mod single_flight;
pub mod spec;
pub mod supervisor;
pub mod transport;
mod watches;

pub use kforward_relay::no_proxy;

pub use client::{KubeContext, KubeconfigSource};
pub use error::{Error, Result};
pub use forward::{
    BoundPort, Event, Forward, ForwardOptions, ForwardState, Forwarder, Shell, Stats, StatsSnapshot,
};
pub use resolve::{Endpoint, Endpoints};
pub use supervisor::{ForwardStatus, Supervisor, SupervisorEvent, SupervisorOptions};
pub use transport::websocket::{Tunnel, TunnelReader, TunnelWriter};
