//! kforward-core: reach services inside Kubernetes clusters from a developer's machine.
//!
//! Build a [`ForwardSpec`](spec::ForwardSpec) (or load kftray-style
//! [`ForwardConfig`](config::ForwardConfig)s), connect with a [`KubeContext`], and start a
//! [`Forwarder`]: local listeners whose connections each get their own port-forward
//! [`Tunnel`] to a ready pod of the target, spread over the ready pods as a Service would,
//! with the set of pods kept current by a watch.
//!
//! The library takes no global state and runs inside the caller's tokio runtime.

pub mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod forwarder;
pub mod resolve;
pub mod spec;
pub mod tunnel;

pub use client::{KubeContext, KubeconfigSource};
pub use error::{Error, Result};
pub use event::Event;
pub use forwarder::{
    BoundPort, ForwardOptions, ForwardState, Forwarder, PodForwarder, ServiceForwarder, Stats,
    StatsSnapshot, TcpForwarder, forwarder_for,
};
pub use resolve::{Endpoint, Endpoints};
pub use tunnel::Tunnel;
