//! The TCP front end: a listener whose connections each get a stream of their own, with
//! the PROXY header layers around them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::Lane;
use crate::forward::backend::open_stream;
use crate::forward::pump::pump;

/// How long accepting pauses after it failed (out of file descriptors and the like),
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until `stop`; `serve` carries each in `conns` until it ends or
/// `kill`. Every front end that takes TCP connections (this one, the forward proxy)
/// accepts with it.
pub(crate) async fn accept_loop<S, F>(
    listener: TcpListener,
    serve: S,
    stop: CancellationToken,
    kill: CancellationToken,
    conns: TaskTracker,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let work = serve(sock, peer);
        let kill = kill.clone();
        conns.spawn(
            async move {
                tokio::select! {
                    () = kill.cancelled() => {}
                    () = work => {}
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

/// Carries the connections of `lane`'s listener.
pub(crate) fn carrier(lane: Arc<Lane>) -> impl Fn(TcpStream, SocketAddr) -> BoxFuture<'static, ()> {
    move |sock, peer| {
        let lane = lane.clone();
        Box::pin(async move { handle(sock, peer, &lane).await })
    }
}

/// Carries one connection: the client's PROXY header (when accepted), a stream to the
/// target, the header toward it (when sent), then the bytes both ways.
async fn handle(mut sock: TcpStream, peer: SocketAddr, lane: &Lane) {
    let _ = sock.set_nodelay(true);
    let conn = lane.stats.open();
    let local = sock.local_addr().unwrap_or(peer);
    let accepted = match lane.layers.accept(&mut sock, peer, local).await {
        Ok(a) => a,
        Err(e) => {
            conn.failed();
            warn!(error = %e, "connection refused");
            lane.error(format!("connection from {peer} closed: {e}"));
            return;
        }
    };
    let stream = match open_stream(&lane.backend, lane.index, accepted.client, &lane.open()).await {
        Ok(s) => s,
        Err(e) => {
            conn.failed();
            warn!(error = %e, "cannot reach the target for this connection");
            lane.error(e.to_string());
            return;
        }
    };
    let pod = stream.pod().to_string();
    lane.opened(peer, &stream);
    let (reader, mut writer) = stream.into_split();
    let prelude = lane.layers.prelude(&accepted);
    let sent = if prelude.is_empty() {
        Ok(())
    } else {
        writer.write_all(&prelude).await
    };
    let error = match sent {
        Ok(()) => {
            conn.sent(accepted.early.len());
            pump(
                sock.into_split(),
                (reader, writer),
                &conn,
                lane.opts.half_close_linger,
            )
            .await
        }
        Err(e) => Some(e),
    };
    conn.close();
    if let Some(e) = &error {
        debug!(%pod, error = %e, "connection ended with an error");
    }
    lane.closed(peer, &conn, error.map(|e| e.to_string()));
}
