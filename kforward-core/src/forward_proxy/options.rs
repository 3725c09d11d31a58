//! The forward proxy's settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::no_proxy::NoProxy;
use crate::relay::{RelayOptions, SharedRelayPods};
use crate::transport::Transport;

use super::auth::ProxyAuth;

/// The address the proxy listens on by default, as SOCKS proxies do.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";

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
/// assert_eq!(o.listen.port(), 1080);
/// ```
#[derive(Debug, Clone)]
pub struct ForwardProxyOptions {
    /// Where [`Forwarder::start`](crate::Forwarder::start) listens (port 0 picks a free
    /// one).
    pub listen: SocketAddr,
    /// The namespace of bare service names and of the relay pod (default: the context's).
    pub namespace: Option<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Destinations to connect to from this machine (`NO_PROXY` syntax).
    pub direct: NoProxy,
    /// The relay's settings; `None` refuses what would need the relay.
    pub relay: Option<RelayOptions>,
    /// Relay pods shared with other forwards of the session (a supervisor's); `None`
    /// makes the proxy own its relay pods and delete them when it stops.
    pub relay_pods: Option<SharedRelayPods>,
    /// Credentials clients must give; `None`: none (only allowed on loopback).
    pub auth: Option<ProxyAuth>,
    /// How long a client may take to say where it goes.
    pub handshake_timeout: Duration,
    /// How long a direct connection may take.
    pub connect_timeout: Duration,
    /// How long to wait for a ready pod of a service.
    pub pod_wait: Duration,
    /// How long open connections get to finish when the proxy stops.
    pub stop_grace: Duration,
    /// The port-forward transport of streams to pods (relay streams are always
    /// `v4.channel.k8s.io` WebSockets).
    pub transport: Transport,
    /// After a client ends its writes, how long replies may stay quiet before its
    /// connection is closed, on a transport that cannot pass a half-close on (as a
    /// forward's [`ForwardOptions::half_close_linger`](crate::ForwardOptions)).
    pub half_close_linger: Duration,
}

impl Default for ForwardProxyOptions {
    fn default() -> Self {
        ForwardProxyOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 1080)),
            namespace: None,
            cluster_domain: "cluster.local".into(),
            direct: NoProxy::default(),
            relay: Some(RelayOptions::default()),
            relay_pods: None,
            auth: None,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            pod_wait: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
            transport: Transport::Auto,
            half_close_linger: Duration::from_secs(15),
        }
    }
}
