//! What a forward proxy entry (`kforward socks`, `workload_type: "socks"`) sets beyond
//! its local address and port.

use std::net::SocketAddr;

use super::SpecError;
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

/// Refuses a non-loopback `addr` without credentials.
///
/// # Errors
///
/// [`SpecError::ExposedProxy`].
///
/// # Example
///
/// ```
/// use kforward_core::spec::check_exposure;
/// assert!(check_exposure("127.0.0.1:1080".parse().unwrap(), false).is_ok());
/// assert!(check_exposure("0.0.0.0:1080".parse().unwrap(), false).is_err());
/// assert!(check_exposure("0.0.0.0:1080".parse().unwrap(), true).is_ok());
/// ```
pub fn check_exposure(addr: SocketAddr, auth: bool) -> Result<(), SpecError> {
    if addr.ip().is_loopback() || auth {
        Ok(())
    } else {
        Err(SpecError::ExposedProxy { addr })
    }
}
