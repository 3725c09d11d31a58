//! What the forward proxy reports: it is listening, and each connection's destination,
//! route and end.

use std::net::SocketAddr;

use serde::Serialize;

use super::route::Route;

/// One thing that happened in the proxy. Serialized with an `event` tag, like
/// [`crate::Event`]: `{"event":"ready","forward":"socks","local_addr":"127.0.0.1:1080",...}`.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::ProxyEvent;
/// let e = ProxyEvent::Ready {
///     forward: "socks".into(),
///     local_addr: "127.0.0.1:1080".parse().unwrap(),
///     namespace: "demo".into(),
///     pac_url: "http://127.0.0.1:1080/proxy.pac".into(),
/// };
/// assert_eq!(serde_json::to_value(&e).unwrap()["event"], "ready");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProxyEvent {
    /// The proxy is listening.
    Ready {
        /// The proxy's label.
        forward: String,
        /// The address it listens on.
        local_addr: SocketAddr,
        /// The namespace of bare service names.
        namespace: String,
        /// Where its PAC file is.
        pac_url: String,
    },
    /// A client asked for a destination and its route was decided.
    ConnectionOpened {
        /// The client.
        peer: SocketAddr,
        /// `socks5`, `socks4`, `http-connect`, `http` or `socks5-udp`.
        protocol: &'static str,
        /// The destination as the client named it.
        destination: String,
        /// Where it goes.
        #[serde(flatten)]
        route: Route,
    },
    /// A connection ended.
    ConnectionClosed {
        /// The client.
        peer: SocketAddr,
        /// The destination as the client named it.
        destination: String,
        /// Bytes from the client.
        bytes_out: u64,
        /// Bytes to the client.
        bytes_in: u64,
        /// Why it ended badly, when it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A destination could not be reached; the client was told why.
    ConnectionFailed {
        /// The client.
        peer: SocketAddr,
        /// The protocol.
        protocol: &'static str,
        /// The destination as the client named it.
        destination: String,
        /// Why.
        message: String,
    },
}
