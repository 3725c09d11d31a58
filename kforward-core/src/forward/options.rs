//! Settings of a forward beyond its spec.

use std::time::Duration;

use crate::relay::{RelayOptions, SharedRelayPods};

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
    /// connection is closed, on a transport that cannot pass a half-close on.
    pub half_close_linger: Duration,
    /// How long open connections get to finish when the forward stops.
    pub stop_grace: Duration,
    /// How long a client may take to send its PROXY header (with
    /// `accept_proxy_protocol`).
    pub header_timeout: Duration,
    /// The relay pods' settings (UDP and remote-address forwards).
    pub relay: RelayOptions,
    /// Relay pods shared with other forwards of the session; `None` makes the forward own
    /// its relay pods and delete them when it stops.
    pub relay_pods: Option<SharedRelayPods>,
    /// A UDP session (one local peer) with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            pod_running_timeout: Duration::from_secs(60),
            half_close_linger: Duration::from_secs(15),
            stop_grace: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            relay: RelayOptions::default(),
            relay_pods: None,
            udp_idle_timeout: Duration::from_secs(120),
        }
    }
}
