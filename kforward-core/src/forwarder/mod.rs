//! Forwarders: each owns local listeners and one target, and carries every accepted
//! connection to a pod of that target.
//!
//! [`TcpForwarder`] does the work for every TCP target; [`ServiceForwarder`] and
//! [`PodForwarder`] are its service and pod forms. UDP and `proxy` targets go through the
//! in-cluster relay and get their own implementations of [`Forwarder`].

/// Events a forwarder buffers for a slow subscriber before it starts missing some (told
/// as `RecvError::Lagged`). tokio's broadcast channel allocates every slot up front, about
/// 170 bytes each: 1,024 of them were 33 of the 60 MiB that a `kforward run` of 200 idle
/// forwards held (`compare --only idle`). A subscriber that keeps up (the supervisor, the
/// CLI) never has more than a few waiting.
pub(crate) const EVENT_BUFFER: usize = 256;

mod pod;
mod proxy;
mod relay;
mod service;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

pub use pod::PodForwarder;
pub use proxy::ProxyForwarder;
pub use service::ServiceForwarder;
pub use tcp::TcpForwarder;
pub use udp::UdpForwarder;

use crate::client::KubeContext;
use crate::error::Result;
use crate::event::Event;
use crate::spec::{ForwardSpec, Protocol, RemotePort, Target};

/// Where a forward is in its life.
///
/// # Example
///
/// ```
/// let s = kforward_core::ForwardState::Failed { error: "boom".into() };
/// assert_eq!(serde_json::to_value(&s).unwrap()["state"], "failed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ForwardState {
    /// Not started yet.
    Idle,
    /// Resolving the target and binding local ports.
    Starting,
    /// Listening and carrying connections.
    Ready,
    /// Trying again after a failure; the local ports stay bound when they were.
    Reconnecting {
        /// The attempt about to be made (1 for the first retry).
        attempt: u32,
        /// How long until that attempt, in milliseconds.
        next_delay_ms: u64,
        /// What failed.
        error: String,
    },
    /// Stopped by request.
    Stopped,
    /// Could not start or keep going.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// A local address a forward listens on, and what it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundPort {
    /// The local address bound.
    pub local_addr: SocketAddr,
    /// The remote port as asked for.
    pub remote: String,
    /// The port on the pods, when it is known.
    pub pod_port: Option<u16>,
}

/// Settings of a forward beyond its spec.
///
/// # Example
///
/// ```
/// let o = kforward_core::ForwardOptions::default();
/// assert_eq!(o.pod_running_timeout.as_secs(), 60);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOptions {
    /// How long to wait for a ready pod, at start and for each connection (kubectl's
    /// `--pod-running-timeout`, 60 s by default).
    pub pod_running_timeout: Duration,
    /// After the local client ends its writes, how long replies may stay quiet before the
    /// connection is closed (the port-forward protocol cannot pass a half-close on).
    pub half_close_linger: Duration,
    /// How long open connections get to finish when the forward stops.
    pub stop_grace: Duration,
    /// The relay pods' settings (UDP and proxy forwards).
    pub relay: crate::relay::RelayOptions,
    /// Relay pods shared with other forwards of the session; `None` makes the forward own
    /// its relay pods and delete them when it stops.
    pub relay_pods: Option<crate::relay::SharedRelayPods>,
    /// A UDP session (one local peer) with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            pod_running_timeout: Duration::from_secs(60),
            half_close_linger: Duration::from_secs(15),
            stop_grace: Duration::from_secs(2),
            relay: crate::relay::RelayOptions::default(),
            relay_pods: None,
            udp_idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Live counters of a forward.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_failed: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// A copy of a forward's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since the start.
    pub connections_total: u64,
    /// Connections that could not reach a pod.
    pub connections_failed: u64,
    /// Bytes from pods to local clients.
    pub bytes_in: u64,
    /// Bytes from local clients to pods.
    pub bytes_out: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_failed: self.connections_failed.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// A forward: local listeners carrying connections to one target.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
/// use kforward_core::Forwarder;
/// let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)]);
/// let mut fwd = kforward_core::forwarder_for(ctx, spec, Default::default())?;
/// let bound = fwd.start().await?;
/// println!("listening on {}", bound[0].local_addr);
/// fwd.stop().await;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Forwarder: Send + Sync {
    /// Resolves the target, binds the local ports and starts accepting; returns the
    /// addresses bound.
    ///
    /// # Errors
    ///
    /// The target cannot be resolved, no pod is ready in time, a local port cannot be
    /// bound, or the API server refuses.
    async fn start(&mut self) -> Result<Vec<BoundPort>>;

    /// Stops accepting, gives open connections a moment to finish, then closes them.
    async fn stop(&mut self);

    /// The current state.
    fn state(&self) -> ForwardState;

    /// A receiver of this forward's events from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// The counters now.
    fn stats(&self) -> StatsSnapshot;

    /// The forward's label (its alias, or target and ports).
    fn label(&self) -> String;
}

/// The forwarder for a spec.
///
/// # Errors
///
/// None today; the `Result` leaves room for specs no forwarder serves.
pub fn forwarder_for(
    ctx: KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
) -> Result<Box<dyn Forwarder>> {
    if spec.protocol == Protocol::Udp {
        return Ok(Box::new(UdpForwarder::new(ctx, spec, opts)));
    }
    if matches!(spec.target, Target::Proxy { .. }) {
        return Ok(Box::new(ProxyForwarder::new(ctx, spec, opts)));
    }
    Ok(Box::new(TcpForwarder::new(ctx, spec, opts)))
}

pub(crate) fn remote_label(r: &RemotePort) -> String {
    r.to_string()
}
