//! The API server: a real hyper 1 HTTP/1.1 server, over TLS by default.

mod admin;
mod discovery;
mod handlers;
mod openapi;
mod patch;
mod protobuf;
mod route;
mod scale;
mod table;
mod watch;
mod write;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::response::{Body, error_response};
use crate::state::{Shared, lock};
use crate::{ApiError, Error};

pub(crate) use patch::merge as merge_patch;

/// Binds `addr` (port 0 for a free one) and serves there until the cluster shuts down or
/// the server is restarted; returns the address bound.
///
/// # Errors
///
/// [`Error::Bind`] when the address cannot be bound.
pub(crate) async fn start(shared: &Arc<Shared>, addr: SocketAddr) -> Result<SocketAddr, Error> {
    let mut running = shared.api_conns.lock().await;
    let (addr, conns) = listen(shared, addr).await?;
    if let Some(old) = running.replace(conns) {
        old.cancel();
    }
    Ok(addr)
}

/// Stops the API server, cutting every connection (watches and port-forwards included),
/// and starts it again on the same address. Stored objects survive, as they would in etcd.
///
/// The future is boxed to break the type cycle server -> admin endpoint -> restart -> server.
pub(crate) fn restart(
    shared: &Arc<Shared>,
) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
    Box::pin(async move {
        let mut running = shared.api_conns.lock().await;
        if let Some(old) = running.take() {
            old.cancel();
        }
        let addr = *lock(&shared.api_addr);
        let mut last = None;
        // The old listener closes as its accept loop sees the cancellation: retry briefly.
        for _ in 0..50 {
            match listen(shared, addr).await {
                Ok((_, conns)) => {
                    *running = Some(conns);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Timeout(std::time::Duration::from_secs(1), "API restart".into())
        }))
    })
}

/// Binds and spawns the accept loop; the token stops it and every connection it accepted.
async fn listen(
    shared: &Arc<Shared>,
    addr: SocketAddr,
) -> Result<(SocketAddr, CancellationToken), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Bind(addr, e))?;
    let addr = listener.local_addr().map_err(|e| Error::Bind(addr, e))?;
    let conns = shared.shutdown.child_token();
    tokio::spawn(accept_loop(
        shared.clone(),
        listener,
        shared.tls.clone(),
        conns.clone(),
    ));
    Ok((addr, conns))
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
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(r) = openapi::handle(&path, req.uri().query(), accept) {
        return r;
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
