//! What a forward proxy entry (`kforward socks`, `workload_type: "socks"`) sets beyond
//! its local address and port.

use crate::forward_proxy::ProxyAuth;

/// The settings of a [`Target::Socks`](super::Target::Socks) forward: one local port
/// where each client names its own destination (SOCKS5, SOCKS4a, HTTP).
///
/// # Example
///
/// ```
/// use kforward_core::spec::SocksSettings;
/// let s = SocksSettings { direct: "localhost, .corp.example".into(), ..Default::default() };
/// assert!(s.relay && s.auth.is_none());
/// assert_eq!(s.cluster_domain, "cluster.local");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SocksSettings {
    /// Credentials clients must give; required beyond loopback.
    pub auth: Option<ProxyAuth>,
    /// Destinations to connect to from this machine (`NO_PROXY` syntax).
    pub direct: String,
    /// Whether destinations outside the cluster's services and pods go through the relay
    /// pod (`false`: `--no-relay`, they are refused).
    pub relay: bool,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
}

impl Default for SocksSettings {
    fn default() -> Self {
        SocksSettings {
            auth: None,
            direct: String::new(),
            relay: true,
            cluster_domain: "cluster.local".into(),
        }
    }
}
