//! Opening a SPDY session to a pod through the API server, with the same client stack as
//! every other request of the [`KubeContext`] (its proxy, its spare connection, its
//! credentials): kube's `Client::send` with the upgrade headers, then hyper's upgrade.
//! kube's own `Client::connect` is not used: it accepts only the `v4`/`v5` channel
//! subprotocols.
//!
//! The two requests, as client-go makes them: the plain upgrade
//! (`client-go/transport/spdy/spdy.go`): `POST .../portforward` with `Connection: Upgrade`,
//! `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`, answered 101 with
//! the same `Upgrade` and protocol version; the WebSocket tunnel
//! (`client-go/tools/portforward/tunneling_dialer.go`): `GET .../portforward` as a
//! WebSocket upgrade offering the one subprotocol `SPDY/3.1+portforward.k8s.io`.

use std::time::Duration;

use http::header;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::session::{Session, SessionConfig};
use super::wsio::WsBytes;
use crate::client::KubeContext;
use crate::error::Error;
use crate::transport::Transport;

/// How long opening a session (the HTTP upgrade) may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a refusal's body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a refusal's body kept for the message.
const BODY_SHOWN: usize = 512;
/// The WebSocket subprotocol of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol both SPDY transports negotiate.
pub const STREAM_PROTOCOL: &str = "portforward.k8s.io";
/// The tunnel's read buffer: two TLS records' worth.
const TUNNEL_READ_BUFFER: usize = 32 * 1024;

/// The two ways an API server offers SPDY/3.1 port-forward.
///
/// # Example
///
/// ```
/// use kforward_core::transport::{Transport, spdy::SpdyTransport};
/// assert_eq!(Transport::from(SpdyTransport::WebSocket), Transport::WebsocketSpdy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpdyTransport {
    /// SPDY in a WebSocket tunnel (needs the API server's `PortForwardWebsockets`, on by
    /// default since Kubernetes 1.31).
    WebSocket,
    /// The plain `Upgrade: SPDY/3.1` POST.
    Upgrade,
}

impl From<SpdyTransport> for Transport {
    fn from(t: SpdyTransport) -> Transport {
        match t {
            SpdyTransport::WebSocket => Transport::WebsocketSpdy,
            SpdyTransport::Upgrade => Transport::Spdy,
        }
    }
}

/// Why a session did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The server does not offer this transport (or something between refuses it): worth
    /// trying the next one. The text says what the server answered.
    NotOffered(String),
    /// A failure every transport would meet (credentials, permissions, a missing pod, an
    /// unreachable server).
    Failed(Error),
}

impl OpenError {
    /// The error for a caller who asked for this transport only.
    pub(crate) fn into_error(self, ctx: &KubeContext, how: SpdyTransport) -> Error {
        match self {
            OpenError::Failed(e) => e,
            OpenError::NotOffered(answer) => Error::TransportRefused {
                server: ctx.server().to_string(),
                transport: Transport::from(how).name().to_string(),
                message: answer,
            },
        }
    }
}

impl Session {
    /// Opens a session to `pod` in `namespace` over `how`.
    ///
    /// # Errors
    ///
    /// [`Error::TransportRefused`] when the API server does not offer `how`;
    /// [`Error::Forbidden`] without `create pods/portforward`, [`Error::NotFound`] for a
    /// missing pod, [`Error::Unauthorized`], [`Error::Unreachable`] or [`Error::Api`].
    pub async fn open(
        ctx: &KubeContext,
        namespace: &str,
        pod: &str,
        how: SpdyTransport,
        config: SessionConfig,
    ) -> Result<Session, Error> {
        open(ctx, namespace, pod, how, config)
            .await
            .map_err(|e| e.into_error(ctx, how))
    }
}

fn unreachable(ctx: &KubeContext, message: String) -> OpenError {
    OpenError::Failed(Error::Unreachable {
        server: ctx.server().to_string(),
        message,
    })
}

fn header_has(
    res: &http::Response<kube::client::Body>,
    name: header::HeaderName,
    want: &str,
) -> bool {
    res.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)))
    })
}

pub(crate) async fn open(
    ctx: &KubeContext,
    namespace: &str,
    pod: &str,
    how: SpdyTransport,
    config: SessionConfig,
) -> Result<Session, OpenError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward");
    let key = generate_key();
    let req = match how {
        SpdyTransport::Upgrade => http::Request::post(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", STREAM_PROTOCOL),
        SpdyTransport::WebSocket => http::Request::get(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, key.as_str())
            .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL),
    }
    .body(kube::client::Body::empty())
    .map_err(|e| unreachable(ctx, e.to_string()))?;
    let res = match tokio::time::timeout(OPEN_TIMEOUT, ctx.client().send(req)).await {
        Err(_) => {
            return Err(unreachable(
                ctx,
                format!(
                    "opening a port-forward took longer than {}s",
                    OPEN_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(OpenError::Failed(Error::from_kube(
                e,
                ctx.server(),
                "create",
                "pods/portforward",
                namespace,
                Some(pod),
            )));
        }
        Ok(Ok(res)) => res,
    };
    if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(ctx, namespace, pod, res).await);
    }
    let agreed = match how {
        SpdyTransport::Upgrade => {
            header_has(&res, header::UPGRADE, "SPDY/3.1")
                && header_has(&res, header::CONNECTION, "upgrade")
                && res
                    .headers()
                    .get("X-Stream-Protocol-Version")
                    .is_some_and(|v| v == STREAM_PROTOCOL)
        }
        SpdyTransport::WebSocket => {
            header_has(&res, header::UPGRADE, "websocket")
                && header_has(&res, header::CONNECTION, "upgrade")
                && res
                    .headers()
                    .get(header::SEC_WEBSOCKET_ACCEPT)
                    .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes())
                && res
                    .headers()
                    .get(header::SEC_WEBSOCKET_PROTOCOL)
                    .is_some_and(|v| v == TUNNEL_PROTOCOL)
        }
    };
    if !agreed {
        return Err(OpenError::NotOffered(format!(
            "it switched protocols without agreeing to {} (answer headers: {:?})",
            Transport::from(how),
            res.headers()
        )));
    }
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| unreachable(ctx, format!("the upgraded connection failed: {e}")))?;
    let io = TokioIo::new(upgraded);
    Ok(match how {
        SpdyTransport::Upgrade => Session::start(io, pod, config),
        SpdyTransport::WebSocket => {
            // No write buffer: each batch of frames goes out as one message at once.
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(TUNNEL_READ_BUFFER)
                .write_buffer_size(0)
                .max_message_size(Some(64 << 20));
            let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(ws_config)).await;
            Session::start(WsBytes::new(ws), pod, config)
        }
    })
}

/// Classifies an answer other than 101. The API server's own refusals (401, 403, 404 with
/// a `Status` body) would be the same for every transport; anything else (an older API
/// server's kubelet refusing the tunnel with a bare 403, the 400 "Upgrade request
/// required" of a server whose proxy stripped the upgrade, a proxy's 4xx or 5xx) means
/// this transport is not offered. client-go falls back on any non-101
/// (`httpstream.IsUpgradeFailure` in `portforward/fallback_dialer.go`); kforward keeps
/// the API server's own refusals, which a fallback would only repeat.
async fn refusal(
    ctx: &KubeContext,
    namespace: &str,
    pod: &str,
    res: http::Response<kube::client::Body>,
) -> OpenError {
    let code = res.status();
    let body = tokio::time::timeout(BODY_TIMEOUT, res.into_body().collect_bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let status = serde_json::from_slice::<kube::core::Status>(&body)
        .ok()
        .filter(|s| s.code != 0 || !s.message.is_empty());
    if let Some(mut status) = status
        && matches!(code.as_u16(), 401 | 403 | 404)
    {
        status.code = code.as_u16();
        return OpenError::Failed(Error::from_kube(
            kube::Error::Api(Box::new(status)),
            ctx.server(),
            "create",
            "pods/portforward",
            namespace,
            Some(pod),
        ));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SHOWN)]);
    let text = text.trim();
    OpenError::NotOffered(if text.is_empty() {
        format!("it answered {code}")
    } else {
        format!("it answered {code}: {text}")
    })
}
