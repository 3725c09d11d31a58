//! The forward proxy's settings.

use std::time::Duration;

use crate::no_proxy::NoProxy;
use crate::relay::RelayOptions;

use super::auth::ProxyAuth;

/// Settings of a [`ForwardProxy`](super::ForwardProxy).
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::ForwardProxyOptions;
/// use kforward_core::no_proxy::NoProxy;
/// let o = ForwardProxyOptions {
///     namespace: Some("demo".into()),
///     direct: NoProxy::parse("localhost, 192.168.0.0/16"),
///     relay: None, // like --no-relay
///     ..Default::default()
/// };
/// assert_eq!(o.cluster_domain, "cluster.local");
/// ```
#[derive(Debug, Clone)]
pub struct ForwardProxyOptions {
    /// The namespace of bare service names and of the relay pod (default: the context's).
    pub namespace: Option<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Destinations to connect to from this machine (`NO_PROXY` syntax).
    pub direct: NoProxy,
    /// The relay's settings; `None` refuses what would need the relay.
    pub relay: Option<RelayOptions>,
    /// Credentials clients must give; `None`: none (only allowed on loopback).
    pub auth: Option<ProxyAuth>,
    /// How long a client may take to say where it goes.
    pub handshake_timeout: Duration,
    /// How long a direct connection may take.
    pub connect_timeout: Duration,
    /// How long to wait for a ready pod of a service.
    pub pod_wait: Duration,
}

impl Default for ForwardProxyOptions {
    fn default() -> Self {
        ForwardProxyOptions {
            namespace: None,
            cluster_domain: "cluster.local".into(),
            direct: NoProxy::default(),
            relay: Some(RelayOptions::default()),
            auth: None,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            pod_wait: Duration::from_secs(10),
        }
    }
}
