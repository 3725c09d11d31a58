//! The UDP front end: each local peer (address and port) gets a session, that is one
//! stream to the relay pod carrying length-prefixed datagrams to the target and back, so
//! replies, however many, go to that peer only. A session with no datagram either way for
//! the idle timeout ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::Lane;
use crate::error::{Error, Result};
use crate::forward::backend::open_stream;
use crate::forward::stats::Connection;
use crate::relay::protocol::{MAX_DATAGRAM, decode_datagram, encode_datagram};

/// Datagrams queued per session (while its stream opens, or a slow stream) before new ones
/// are dropped, as a full socket buffer would.
const SESSION_QUEUE: usize = 1024;
/// Datagrams taken into one message toward the relay, at most this many bytes.
const BATCH: usize = 128 * 1024;

/// Live sessions by local peer: an id (so an ended session removes only itself) and its queue.
type Sessions = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>>>;

/// Receives datagrams until `stop`, handing each to its peer's session (a new one for a
/// new peer), spawned in `tasks`.
pub(crate) async fn receive_loop(
    socket: Arc<UdpSocket>,
    lane: Arc<Lane>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    loop {
        let (len, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier replies surface here on Linux; keep serving.
                    debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let datagram = buf[..len].to_vec();
        let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, queue)) = map.get(&peer)
            && !queue.is_closed()
        {
            // A full queue drops the datagram, as UDP may.
            let _ = queue.try_send(datagram);
            continue;
        }
        let (queue, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = queue.try_send(datagram);
        next_id += 1;
        map.insert(peer, (next_id, queue));
        drop(map);
        let id = next_id;
        let (lane, socket, sessions, stop) =
            (lane.clone(), socket.clone(), sessions.clone(), stop.clone());
        tasks.spawn(
            async move {
                let conn = lane.stats.open();
                let result = tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    r = session(&lane, &socket, peer, rx, &conn) => r,
                };
                if let Err(e) = &result {
                    conn.failed();
                    warn!(error = %e, "udp session failed");
                    lane.error(e.to_string());
                }
                drop(conn);
                let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
                if map.get(&peer).is_some_and(|(i, _)| *i == id) {
                    map.remove(&peer);
                }
            }
            .instrument(info_span!("udp_session", %peer)),
        );
    }
}

/// One peer's session: a stream through the relay, datagrams framed both ways.
async fn session(
    lane: &Lane,
    socket: &UdpSocket,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    conn: &Connection,
) -> Result<()> {
    let stream = open_stream(&lane.backend, lane.index, peer, &lane.open()).await?;
    let pod = stream.pod().to_string();
    lane.opened(peer, &stream);
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::new();
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 2);
    let broken = |e: std::io::Error| Error::RelayHandshake {
        pod: pod.clone(),
        message: format!("the relay stream broke: {e}"),
    };
    let outcome = loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break Ok(()) };
                frame.clear();
                // A datagram comes from one recv of at most MAX_DATAGRAM bytes: it fits.
                if encode_datagram(&d, &mut frame).is_err() {
                    continue;
                }
                let mut sent = d.len();
                // Take what else is queued into the same message.
                while frame.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => {
                            if encode_datagram(&more, &mut frame).is_ok() {
                                sent += more.len();
                            }
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = wr.write_all(&frame).await {
                    break Err(broken(e));
                }
                conn.sent(sent);
            }
            chunk = rd.read_chunk() => {
                let chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(broken(e)),
                };
                inbuf.extend_from_slice(&chunk);
                let mut used = 0;
                while let Ok(Some((d, len))) = decode_datagram(&inbuf[used..]) {
                    if let Err(e) = socket.send_to(d, peer).await {
                        debug!(error = %e, "udp reply to the local peer failed");
                    }
                    conn.received(d.len());
                    used += len;
                }
                inbuf.advance(used);
            }
            () = tokio::time::sleep(lane.opts.udp_idle_timeout) => break Ok(()),
        }
    };
    lane.closed(peer, conn, outcome.as_ref().err().map(ToString::to_string));
    outcome
}
