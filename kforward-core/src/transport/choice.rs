//! Which port-forward transport to use ([`Transport`]), and what `auto` found for each
//! cluster ([`TransportMemo`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// The port-forward transport: a forward's `transport` option, in the config file as
/// `auto`, `websocket-spdy`, `spdy` or `websocket` (`websocket_spdy` is accepted too).
///
/// - `auto` (the default) tries, once per cluster, the WebSocket tunnel, then the plain
///   SPDY upgrade, then `v4.channel.k8s.io`, and keeps the first that the API server
///   offers for the client's life.
/// - `websocket-spdy`: SPDY/3.1 tunnelled in a WebSocket
///   (`Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`, kubectl 1.31+'s default).
/// - `spdy`: the plain `Upgrade: SPDY/3.1` POST that every API server offers.
/// - `websocket`: `v4.channel.k8s.io`, one WebSocket per connection, no half-close.
///
/// # Example
///
/// ```
/// use kforward_core::transport::Transport;
///
/// let t: Transport = "websocket-spdy".parse()?;
/// assert_eq!(t, Transport::WebsocketSpdy);
/// assert_eq!(t.to_string(), "websocket-spdy");
/// assert!(t.half_close());
/// let from_config: Transport = serde_json::from_str("\"websocket_spdy\"").expect("json");
/// assert_eq!(from_config, t);
/// # Ok::<(), kforward_core::transport::UnknownTransport>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The first of the others that the cluster offers, in the order below.
    #[default]
    Auto,
    /// SPDY/3.1 in a WebSocket tunnel.
    #[serde(alias = "websocket_spdy")]
    WebsocketSpdy,
    /// SPDY/3.1 over a plain HTTP upgrade.
    Spdy,
    /// `v4.channel.k8s.io`.
    Websocket,
}

impl Transport {
    /// Every transport, `auto` first, then the order `auto` tries them in.
    pub const ALL: [Transport; 4] = [
        Transport::Auto,
        Transport::WebsocketSpdy,
        Transport::Spdy,
        Transport::Websocket,
    ];

    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::WebsocketSpdy => "websocket-spdy",
            Transport::Spdy => "spdy",
            Transport::Websocket => "websocket",
        }
    }

    /// Whether a local half-close reaches the server (DATA+FIN): the SPDY transports.
    /// `auto` says true, as it ends on SPDY wherever the API server offers it.
    pub fn half_close(self) -> bool {
        !matches!(self, Transport::Websocket)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport name that is not one of [`Transport::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (use auto, websocket-spdy, spdy or websocket)")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == norm)
            .ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

/// What `auto` found for one cluster: kept in its [`KubeContext`](crate::KubeContext), so
/// that the negotiation happens once per client.
#[derive(Debug, Default)]
pub struct TransportMemo {
    found: Mutex<Option<Transport>>,
}

impl TransportMemo {
    /// The transport `auto` settled on, if it has.
    pub fn get(&self) -> Option<Transport> {
        *self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, t: Transport) {
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *found != Some(t) {
            tracing::info!(transport = %t, "port-forward transport chosen for this cluster");
            *found = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_in_both_spellings_and_unknown_ones_say_what_exists() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>(), Ok(t));
            assert_eq!(t.name().replace('-', "_").parse::<Transport>(), Ok(t));
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<Transport>(&json).expect("back"), t);
        }
        let err = "spdy3".parse::<Transport>().expect_err("unknown");
        assert!(err.to_string().contains("websocket-spdy"), "{err}");
        assert_eq!(Transport::default(), Transport::Auto);
        assert!(!Transport::Websocket.half_close());
    }
}
