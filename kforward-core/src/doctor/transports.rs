//! Which port-forward transports the API server offers: each upgrade is asked for once
//! against a ready pod, and only the answer (101 with the protocol, or not) is read.

use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::client::KubeContext;
use crate::error::{Error, Result};

/// A port-forward transport, as the API server negotiates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`), kubectl's first
    /// choice since 1.31; needs the API server's `PortForwardWebsockets` feature.
    SpdyOverWebSocket,
    /// The plain SPDY/3.1 upgrade, which every API server offers.
    Spdy,
    /// The `v4.channel.k8s.io` WebSocket protocol (kube-rs and the Python client).
    WebSocketV4,
}

impl Transport {
    /// Every transport, in the order they are probed.
    pub const ALL: [Transport; 3] = [
        Transport::SpdyOverWebSocket,
        Transport::Spdy,
        Transport::WebSocketV4,
    ];

    /// How the transport is named in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::SpdyOverWebSocket => "SPDY over WebSocket",
            Transport::Spdy => "SPDY",
            Transport::WebSocketV4 => "WebSocket v4.channel.k8s.io",
        }
    }
}

/// A ready pod of `namespace` and a port it declares (80 when it declares none), to probe
/// against; `None` when no pod is ready.
///
/// # Errors
///
/// The API errors of listing pods.
pub async fn ready_pod(ctx: &KubeContext, namespace: &str) -> Result<Option<(String, u16)>> {
    let api: Api<Pod> = Api::namespaced(ctx.client().clone(), namespace);
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::from_kube(e, ctx.server(), "list", "pods", namespace, None))?;
    for pod in pods.items {
        let status = pod.status.unwrap_or_default();
        let ready = status.phase.as_deref() == Some("Running")
            && pod.metadata.deletion_timestamp.is_none()
            && status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        let Some(name) = pod.metadata.name.filter(|_| ready) else {
            continue;
        };
        let port = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(80);
        return Ok(Some((name, port)));
    }
    Ok(None)
}

/// Asks for `transport`'s upgrade on `pod`'s port-forward endpoint and reports whether the
/// API server agreed (101 with that protocol). The upgraded connection is closed at once,
/// before any stream is opened.
///
/// # Errors
///
/// [`Error::Unreachable`] when no answer came within `timeout`, the other errors of the
/// request.
pub async fn offers(
    ctx: &KubeContext,
    namespace: &str,
    pod: &str,
    port: u16,
    transport: Transport,
    timeout: Duration,
) -> Result<(bool, String)> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward");
    let req = match transport {
        Transport::Spdy => Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", "portforward.k8s.io"),
        Transport::SpdyOverWebSocket | Transport::WebSocketV4 => {
            let protocol = match transport {
                Transport::SpdyOverWebSocket => "SPDY/3.1+portforward.k8s.io",
                _ => "v4.channel.k8s.io",
            };
            let uri = match transport {
                Transport::WebSocketV4 => format!("{path}?ports={port}"),
                _ => path,
            };
            Request::builder()
                .method(Method::GET)
                .uri(uri)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_VERSION, "13")
                .header(
                    header::SEC_WEBSOCKET_KEY,
                    tokio_tungstenite::tungstenite::handshake::client::generate_key(),
                )
                .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        }
    };
    let req = req
        .body(kube::client::Body::empty())
        .map_err(|e| Error::Api {
            action: format!("build the {} probe", transport.name()),
            code: 0,
            message: e.to_string(),
        })?;
    let res = tokio::time::timeout(timeout, ctx.client().send(req))
        .await
        .map_err(|_| Error::Unreachable {
            server: ctx.server().to_string(),
            message: format!(
                "no answer to the {} upgrade within {timeout:?}",
                transport.name()
            ),
        })?
        .map_err(|e| {
            Error::from_kube(
                e,
                ctx.server(),
                "create",
                "pods/portforward",
                namespace,
                Some(pod),
            )
        })?;
    let status = res.status();
    let got = |name: header::HeaderName| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok((false, format!("answered {status}")));
    }
    let agreed = match transport {
        Transport::Spdy => got(header::UPGRADE).eq_ignore_ascii_case("SPDY/3.1"),
        Transport::SpdyOverWebSocket => {
            got(header::SEC_WEBSOCKET_PROTOCOL) == "SPDY/3.1+portforward.k8s.io"
        }
        Transport::WebSocketV4 => got(header::SEC_WEBSOCKET_PROTOCOL) == "v4.channel.k8s.io",
    };
    let detail = if agreed {
        "101 Switching Protocols".to_string()
    } else {
        format!(
            "101 but with another protocol ({:?})",
            got(header::SEC_WEBSOCKET_PROTOCOL)
        )
    };
    Ok((agreed, detail))
}
