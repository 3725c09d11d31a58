//! The UDP front end: each local peer (address and port) gets a session, that is one
//! stream to the relay pod carrying length-prefixed datagrams to the target and back, so
//! replies, however many, go to that peer only. A session with no datagram either way for
//! the idle timeout ends.
//!
//! Datagrams move many per system call ([`crate::relay::mmsg`]): the receive loop takes
//! every datagram waiting in the local socket with one `recvmmsg` (up to [`SLOTS`]) and hands
//! each session its share under one lock; a session sends every reply a message from the
//! relay completed with one `sendmmsg`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::Lane;
use crate::error::{Error, Result};
use crate::forward::backend::open_stream;
use crate::forward::stats::Connection;
use crate::relay::datagrams::{Batch, Deframer, IdleClock, PREFIX};
use crate::relay::mmsg::{self, Inbox};
use crate::relay::protocol::MAX_DATAGRAM;
use crate::transport::{StreamReader, StreamWriter};

/// Datagrams queued per session (while its stream opens, or a slow stream) before new ones
/// are dropped, as a full socket buffer would.
const SESSION_QUEUE: usize = 1024;
/// Datagrams taken into one message toward the relay, at most this many bytes (and one
/// datagram more): the relay batches its replies the same way (`kforward-relay`'s `udp`).
const BATCH: usize = 128 * 1024;

/// Datagrams one receive from the local socket takes at most.
const SLOTS: usize = 32;

/// The local socket's receive buffer asked for (Linux caps it at `net.core.rmem_max`),
/// as the relay asks for its own sockets.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

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
    // A burst from local clients (a resolver with many queries out) waits here while the
    // sessions forward the previous one: room for more than the kernel's default.
    if let Err(e) = socket2::SockRef::from(&*socket).set_recv_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "cannot enlarge the udp socket's receive buffer");
    }
    let mut inbox = Inbox::new(SLOTS);
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = socket.readable() => if let Err(e) = r {
                warn!(error = %e, "the local udp socket failed");
                return;
            },
        }
        match inbox.try_recv(&socket) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier replies surface here on Linux; keep serving.
                debug!(error = %e, "udp receive failed");
                continue;
            }
        }
        let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for (datagram, peer) in inbox.iter() {
            if let Some((_, queue)) = map.get(&peer)
                && !queue.is_closed()
            {
                // A full queue drops the datagram, as UDP may.
                let _ = queue.try_send(datagram.to_vec());
                continue;
            }
            let (queue, rx) = mpsc::channel(SESSION_QUEUE);
            let _ = queue.try_send(datagram.to_vec());
            next_id += 1;
            map.insert(peer, (next_id, queue));
            let front = Front {
                lane: &lane,
                socket: &socket,
                sessions: &sessions,
                stop: &stop,
            };
            front.spawn_session(next_id, peer, rx, &tasks);
        }
    }
}

/// What every session of the front end shares.
struct Front<'a> {
    lane: &'a Arc<Lane>,
    socket: &'a Arc<UdpSocket>,
    sessions: &'a Sessions,
    stop: &'a CancellationToken,
}

impl Front<'_> {
    /// Starts the session of a new local peer in `tasks`; it removes itself from the
    /// sessions when it ends.
    fn spawn_session(
        &self,
        id: u64,
        peer: SocketAddr,
        rx: mpsc::Receiver<Vec<u8>>,
        tasks: &TaskTracker,
    ) {
        let (lane, socket, sessions, stop) = (
            self.lane.clone(),
            self.socket.clone(),
            self.sessions.clone(),
            self.stop.clone(),
        );
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

/// One peer's session: a stream through the relay, datagrams framed both ways, each
/// direction on its own so that neither waits for the other.
async fn session(
    lane: &Lane,
    socket: &UdpSocket,
    peer: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    conn: &Connection,
) -> Result<()> {
    let stream = open_stream(&lane.backend, lane.index, peer, &lane.open()).await?;
    let pod = stream.pod().to_string();
    lane.opened(peer, &stream);
    let (rd, wr) = stream.into_split();
    let clock = IdleClock::new();
    let outcome = tokio::select! {
        r = to_relay(rx, wr, conn, &clock) => r,
        r = to_peer(rd, socket, peer, conn, &clock) => r,
        () = clock.idle(lane.opts.udp_idle_timeout) => Ok(()),
    }
    .map_err(|e| Error::RelayHandshake {
        pod,
        message: format!("the relay stream broke: {e}"),
    });
    lane.closed(peer, conn, outcome.as_ref().err().map(ToString::to_string));
    outcome
}

/// Local peer to relay: waits for a datagram, then takes every one already queued into the
/// same message. Ends when the queue does.
async fn to_relay(
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut wr: StreamWriter,
    conn: &Connection,
    clock: &IdleClock,
) -> std::io::Result<()> {
    let mut batch = Batch::new(BATCH + PREFIX + MAX_DATAGRAM);
    while let Some(first) = rx.recv().await {
        batch.clear();
        // A datagram comes from one recv of at most MAX_DATAGRAM bytes: it fits.
        let _ = batch.push(&first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    let _ = batch.push(&more);
                }
                Err(_) => break,
            }
        }
        clock.touch();
        wr.write_all(batch.as_bytes()).await?;
        conn.sent(batch.payload());
    }
    Ok(())
}

/// Relay to local peer: every whole datagram a message completes goes to the peer, with
/// one `sendmmsg` (a reply the kernel refuses is dropped, as UDP may, and logged).
async fn to_peer(
    mut rd: StreamReader,
    socket: &UdpSocket,
    peer: SocketAddr,
    conn: &Connection,
    clock: &IdleClock,
) -> std::io::Result<()> {
    let mut frames = Deframer::new();
    while let Some(chunk) = rd.read_chunk().await? {
        frames.extend(&chunk);
        clock.touch();
        let datagrams = frames.next_datagrams();
        if datagrams.is_empty() {
            continue;
        }
        mmsg::send_all(socket, &datagrams, Some(peer)).await;
        conn.received(datagrams.iter().map(|d| d.len()).sum());
    }
    Ok(())
}
