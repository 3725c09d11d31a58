//! `pods/portforward`: the upgrade negotiation, then the transport the client chose.
//!
//! Protocol facts from `kubernetes/kubernetes`:
//! `staging/src/k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go` (ports from the
//! query, channel `2i` data and `2i+1` errors, the port written first on both) and
//! `staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go` (framing,
//! protocol choice in the client's order).

pub mod spdy;
mod websocket;

use std::net::Ipv4Addr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::response::Body;
use crate::state::Shared;
use crate::{ApiError, Kind};

/// The WebSocket subprotocols the kubelet offers for port-forward, and whether each
/// carries base64 text instead of binary frames.
const WS_PROTOCOLS: [(&str, bool); 2] = [
    ("v4.channel.k8s.io", false),
    ("v4.base64.channel.k8s.io", true),
];

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Vec<&str> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The WebSocket subprotocol of SPDY tunnelled in WebSocket (kubectl >= 1.31).
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

fn running_pod(pod: &serde_json::Value, name: &str) -> Result<(Ipv4Addr, String), ApiError> {
    if pod["status"]["phase"] != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: pod {name} is not running (phase {})",
            pod["status"]["phase"].as_str().unwrap_or("Unknown")
        )));
    }
    let ip: Ipv4Addr = pod["status"]["podIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::internal(format!("pod {name} has no IP")))?;
    Ok((
        ip,
        pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
    ))
}

/// The 101 answer to a WebSocket upgrade, with the subprotocol chosen ("" for none).
fn websocket_101(key: &[u8], protocol: &'static str) -> Response<Body> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let mut resp = Response::new(crate::response::full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !protocol.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(protocol),
        );
    }
    resp
}

/// SPDY/3.1 over a raw HTTP upgrade (kubectl's fallback): 101 with the same `Upgrade` and
/// `X-Stream-Protocol-Version`, then SPDY frames on the connection.
fn spdy_upgrade(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    pod: &serde_json::Value,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let (ip, uid) = running_pod(pod, name)?;
    let mut resp = Response::new(crate::response::full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        "X-Stream-Protocol-Version",
        header::HeaderValue::from_static("portforward.k8s.io"),
    );
    let name = name.to_string();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => spdy::serve(hyper_util::rt::TokioIo::new(up), shared, name, uid, ip).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    Ok(resp)
}

/// SPDY/3.1 tunnelled in WebSocket binary messages (kubectl's first choice).
fn spdy_over_websocket(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    pod: &serde_json::Value,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let (ip, uid) = running_pod(pod, name)?;
    let resp = websocket_101(&key, SPDY_TUNNEL);
    let name = name.to_string();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(64 << 20))
                    .write_buffer_size(0);
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(config),
                )
                .await;
                spdy::serve(spdy::WsByteStream::new(ws), shared, name, uid, ip).await;
            }
            Err(e) => tracing::debug!(error = %e, "SPDY tunnel upgrade failed"),
        }
    });
    Ok(resp)
}

/// Parses the `ports` query parameter (comma separated and/or repeated).
pub(crate) fn parse_ports(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "error parsing port {p:?}: port must be > 0 and <= 65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required",
        ));
    }
    Ok(ports)
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let pod = shared.store.get(Kind::Pod, ns, name)?;
    let upgrade = header_str(&req, header::UPGRADE);
    if upgrade.is_empty() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return spdy_upgrade(shared, req, &pod, name);
    }
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::bad_request(format!(
            "unsupported upgrade protocol {:?}",
            upgrade.join(",")
        )));
    }
    let offered = header_str(&req, header::SEC_WEBSOCKET_PROTOCOL);
    let spdy_tunnel = offered.first().is_some_and(|p| *p == SPDY_TUNNEL)
        || (offered.contains(&SPDY_TUNNEL)
            && !offered
                .iter()
                .any(|o| WS_PROTOCOLS.iter().any(|(p, _)| p == o)));
    if spdy_tunnel {
        return spdy_over_websocket(shared, req, &pod, name);
    }
    let chosen = if offered.is_empty() {
        Some(("", false))
    } else {
        offered
            .iter()
            .find_map(|o| WS_PROTOCOLS.iter().find(|(p, _)| p == o).copied())
    };
    let Some((protocol, base64)) = chosen else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {:?}",
            WS_PROTOCOLS.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        )));
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let ports = parse_ports(req.uri().query())?;
    let (ip, uid) = running_pod(&pod, name)?;
    let resp = websocket_101(&key, protocol);
    let session = websocket::Session {
        shared,
        pod: name.to_string(),
        uid,
        ip,
        ports,
        base64,
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => session.run(upgraded).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_query() {
        assert_eq!(
            parse_ports(Some("&ports=80%2C1234")).expect("kube"),
            vec![80, 1234]
        );
        assert_eq!(
            parse_ports(Some("ports=80&ports=81")).expect("repeated"),
            vec![80, 81]
        );
        assert_eq!(parse_ports(Some("ports=0")).expect_err("zero").code, 400);
        assert_eq!(parse_ports(None).expect_err("none").code, 400);
    }
}
