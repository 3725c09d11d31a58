//! The API server: a real hyper 1 HTTP/1.1 server, over TLS by default.

mod admin;
mod discovery;
mod handlers;
mod labels;
mod patch;
mod protobuf;
mod route;
mod table;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::state::{Shared, lock};
use crate::{ApiError, Error};

pub(crate) use handlers::delete as delete_object;
pub(crate) use labels::Selector;
pub(crate) use patch::merge as merge_patch;

/// The body type every handler answers with.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// A full body from bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A JSON answer.
pub(crate) fn json_response(code: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The `Status` answer of an API error.
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// A running API server; it stops when dropped.
pub(crate) struct ApiServer {
    pub(crate) addr: SocketAddr,
    /// Cancelled to stop the listener and every connection it accepted.
    conns: CancellationToken,
}

impl ApiServer {
    /// Binds `addr` (port 0 for a free one) and serves.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<ApiServer, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Bind(addr, e))?;
        let addr = listener.local_addr().map_err(|e| Error::Bind(addr, e))?;
        let conns = shared.shutdown.child_token();
        tokio::spawn(accept_loop(shared, listener, tls, conns.clone()));
        Ok(ApiServer { addr, conns })
    }

    /// Stops the listener and cuts every connection (watches and port-forwards included).
    pub(crate) fn stop(&self) {
        self.conns.cancel();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.conns.cancel();
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Some(allowed) = lock(&shared.faults.api_only_from).as_ref()
            && !allowed.contains(&peer.ip())
        {
            debug!(%peer, "API connection from outside the allowed addresses; resetting");
            if let Err(e) = tcp.set_zero_linger() {
                debug!(error = %e, "could not set SO_LINGER 0; closing normally");
            }
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(
            async move {
                let conn = async {
                    match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => serve(shared, s, peer).await,
                            Err(e) => debug!(error = %e, "TLS handshake failed"),
                        },
                        None => serve(shared, tcp, peer).await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

async fn serve<S>(shared: Arc<Shared>, io: S, _peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Reads a request body, up to 8 MiB.
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    const LIMIT: usize = 8 << 20;
    let limited = http_body_util::Limited::new(req.into_body(), LIMIT);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.stats.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/testkit/") {
        return admin::handle(shared, rest, req).await;
    }
    let latency = *lock(&shared.faults.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    shared.faults.wait_unpaused().await;
    if !authenticated(&shared, &req) {
        return error_response(&ApiError::unauthorized());
    }
    handlers::dispatch(shared, req).await
}

fn authenticated(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    token.trim() == lock(&shared.auth).token
}
