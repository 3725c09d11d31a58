//! A forward proxy into the cluster: SOCKS5, SOCKS4/4a, HTTP CONNECT and plain HTTP on
//! one local port, each connection routed by its destination.
//!
//! - Cluster service names (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster domain>`),
//!   ClusterIPs, pod IPs and pod DNS names go straight to a ready pod through a
//!   port-forward (service port to targetPort, spread over the ready pods): no relay pod.
//! - Any other name or address goes through the namespace's relay pod, where the
//!   cluster's DNS resolves it.
//! - `--direct` rules (`NO_PROXY` syntax) connect from this machine instead.
//!
//! It is the third front end of the forwarding pipeline (after the TCP listener and the
//! UDP socket): a [`Forwarder`](crate::Forwarder) the supervisor runs like any forward,
//! whose pod and relay streams come from the pipeline's dialer and whose connections and
//! bytes count in the same [`Stats`](crate::Stats).
//!
//! The pieces: [`socks`] (the SOCKS wire formats, sans I/O), [`route`] (the decision),
//! `dial` (one stream per connection along a [`Route`]), [`Catalog`] (services and
//! pods, watched), [`pac`] (the PAC file) and [`ForwardProxy`] (the accept loop).
//!
//! # Example
//!
//! ```no_run
//! # async fn f(ctx: kforward_core::KubeContext) -> Result<(), Box<dyn std::error::Error>> {
//! use kforward_core::forward_proxy::{ForwardProxy, ForwardProxyOptions};
//! let proxy = ForwardProxy::new(ctx, ForwardProxyOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1080").await?;
//! proxy.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod auth;
mod catalog;
mod conn;
mod dial;
mod error;
pub(crate) mod http;
mod options;
pub mod pac;
pub mod route;
mod server;
pub mod socks;
mod socks_conn;
mod udp;

pub use crate::spec::check_exposure;
pub use auth::ProxyAuth;
pub use catalog::{Catalog, PodInfo, ServiceInfo, ServicePortInfo};
pub use error::ProxyError;
pub use options::{DEFAULT_LISTEN, ForwardProxyOptions};
pub use route::{Route, RouteOptions, Router};
pub use server::ForwardProxy;
