//! Where a forward is in its life, and the local addresses it serves.

use std::net::SocketAddr;

use serde::Serialize;

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
///
/// # Example
///
/// ```
/// let b = kforward_core::BoundPort {
///     local_addr: "127.0.0.1:8080".parse().unwrap(),
///     remote: "http".into(),
///     pod_port: Some(80),
/// };
/// assert_eq!(serde_json::to_value(&b).unwrap()["pod_port"], 80);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundPort {
    /// The local address bound.
    pub local_addr: SocketAddr,
    /// The remote port as asked for.
    pub remote: String,
    /// The port on the pods, when it is known.
    pub pod_port: Option<u16>,
}
