//! Events a forward publishes: what the CLI prints, the C ABI hands to its callback and a
//! GUI shows.

use std::net::SocketAddr;

use serde::Serialize;

/// One thing that happened to a forward. Serialized with an `event` tag:
/// `{"event":"ready","forward":"svc/web 0:80","local_addr":"127.0.0.1:40123",...}`.
///
/// # Example
///
/// ```
/// let e = kforward_core::Event::Stopped { forward: "svc/web 0:80".into() };
/// assert_eq!(serde_json::to_value(&e).unwrap()["event"], "stopped");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A local address is listening.
    Ready {
        /// The forward's label (its alias, or target and ports).
        forward: String,
        /// The address bound locally.
        local_addr: SocketAddr,
        /// The target, like `svc/web`.
        target: String,
        /// The namespace of the target.
        namespace: String,
        /// The remote port as asked for (a number or a name).
        remote_port: String,
        /// The port on the pods, when it is known.
        #[serde(skip_serializing_if = "Option::is_none")]
        pod_port: Option<u16>,
        /// The port-forward transport pod streams use (`websocket-spdy`, `spdy`,
        /// `websocket`; `auto` while no pod stream has been opened yet). Only the SPDY
        /// ones pass a local half-close on to the pod.
        transport: crate::transport::Transport,
    },
    /// The set of ready pods behind the forward changed.
    Endpoints {
        /// The forward's label.
        forward: String,
        /// The remote port as asked for.
        remote_port: String,
        /// The ready pods, as `pod:port`.
        pods: Vec<String>,
    },
    /// A local connection was accepted and is being carried to a pod.
    ConnectionOpened {
        /// The forward's label.
        forward: String,
        /// The local client.
        peer: SocketAddr,
        /// The pod it goes to.
        pod: String,
        /// The port on the pod.
        pod_port: u16,
        /// The transport carrying it (`websocket` for relayed streams).
        transport: crate::transport::Transport,
    },
    /// A connection was opened again on another pod before any byte reached its first
    /// one: the container runtime answered that the pod it went to is gone (deleted, or
    /// deleted and created again under its name, as a StatefulSet's pod is). What the
    /// client had written is sent again to the new pod.
    ConnectionMoved {
        /// The forward's label.
        forward: String,
        /// The local client.
        peer: SocketAddr,
        /// The pod it had gone to.
        from: String,
        /// The pod it goes to now.
        pod: String,
        /// The port on the pod.
        pod_port: u16,
    },
    /// A forward proxy's client named a destination, and the way there was decided.
    Routed {
        /// The forward's label.
        forward: String,
        /// The local client.
        peer: SocketAddr,
        /// `socks5`, `socks4`, `http-connect`, `http` or `socks5-udp`.
        protocol: String,
        /// The destination as the client named it.
        destination: String,
        /// Where it goes.
        #[serde(flatten)]
        route: crate::forward_proxy::Route,
    },
    /// A connection ended.
    ConnectionClosed {
        /// The forward's label.
        forward: String,
        /// The local client.
        peer: SocketAddr,
        /// Bytes from the client to the pod.
        bytes_out: u64,
        /// Bytes from the pod to the client.
        bytes_in: u64,
        /// Why it ended badly, when it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Something failed; the forward goes on unless a `stopped` event follows.
    Error {
        /// The forward's label.
        forward: String,
        /// What failed.
        message: String,
    },
    /// The forward's state changed (see [`super::state::ForwardState`]).
    State {
        /// The forward's label.
        forward: String,
        /// The new state.
        #[serde(flatten)]
        state: super::state::ForwardState,
    },
    /// The forward's counters, published when they change.
    Stats {
        /// The forward's label.
        forward: String,
        /// The counters.
        #[serde(flatten)]
        stats: super::stats::StatsSnapshot,
    },
    /// The forward stopped and its ports are closed.
    Stopped {
        /// The forward's label.
        forward: String,
    },
}
