//! One SPDY/3.1 port-forward session over any byte stream: a reader task that takes frames
//! off the connection and hands them to streams, and a writer task that sends what streams
//! and the session queue, batched into few writes.
//!
//! The client's duties, from `client-go/tools/portforward/portforward.go` and the server's
//! side in `kubelet/.../portforward/httpstream.go` and `moby/spdystream`: each connection is
//! an error stream and a data stream with the same `requestid` and `port`, the error stream
//! opened first and closed at once by the client (an empty DATA+FIN); odd stream ids;
//! PINGs from the server are echoed, our own PINGs (odd ids) prove the session alive;
//! SETTINGS and WINDOW_UPDATE are ignored as spdystream ignores them; GOAWAY lets the
//! streams in flight finish and takes no new ones; RST_STREAM ends one stream.
//!
//! **Pipelining.** [`Session::open_stream`] queues both SYN_STREAMs and returns at once, so
//! a caller's first write goes out in the same batch, one round trip to the first byte.
//! spdystream on the server accepts that: it adds a stream to its table as the SYN_STREAM
//! is read, and handles each stream's frames in order on one worker, after the handler
//! that sends SYN_REPLY (`connection.go`: `addStreamFrame`, `frameHandler`); it would drop
//! DATA handled before the reply, so the SYN_STREAMs carry priority 0, the priority of the
//! DATA frames behind them in spdystream's per-worker priority queue.
//!
//! **One stalled reader never stalls the others.** The kubelet's SPDY has no flow control
//! (spdystream ignores WINDOW_UPDATE), so a session that stopped reading its connection
//! for one stream would stop every stream on it, and a session that kept reading without a
//! bound would buffer whatever the pod sends. What bounds a stream's buffered bytes is
//! therefore the reader task, which buffers what each stream is sent and decides at
//! [`SessionConfig::stream_buffer`] (the soft bound) and four times it (the hard bound):
//!
//! - below the soft bound, data is queued for the stream's reader;
//! - past the soft bound, a stream that shares its session and whose reader has taken
//!   nothing for [`SessionConfig::hold_grace`] has stopped: it is reset (RST_STREAM CANCEL
//!   to the server, its buffer freed, [`SpdyError::Overflow`] for its reader) and the
//!   others never wait. The server does not stop at the reset: spdystream refuses only
//!   writes with FIN on a reset stream, so the container runtime's copy goes on for its
//!   one-second grace, and that data (dropped here) still takes the stream's share of the
//!   session for that second (`compare --only stalled`, README Performance). A stream
//!   alone on its session whose reader took nothing for [`SessionConfig::stall_timeout`]
//!   holds the session at the soft bound instead;
//! - a stream whose reader still takes data buffers on, up to the hard bound. At the hard
//!   bound the session stops reading its connection (it is *held*) until the reader has
//!   taken half of its buffer, as TCP would slow one connection for a slow reader (the
//!   pool gives held sessions no new streams). While the stream shares its session the
//!   hold is short: a reader that takes nothing for [`SessionConfig::hold_grace`] (a few
//!   hundred milliseconds, not the stall timeout) is reset like a stalled one, so a reader
//!   that stopped costs the others at most that pause, once. A slow reader that keeps
//!   taking data is never reset: on a loaded machine that would cut working connections;
//! - a stream alone on its session is never reset: the session waits for its reader.
//!
//! **A session whose readers are all behind is paced.** A stream alone on its session, or
//! every stream of a shared one, has [`SessionConfig::lone_stream_buffer`] waiting (1 MiB):
//! nothing is gained by reading ahead of readers that are all behind, so the session stops
//! reading its connection until one of them took half of it, as TCP connections' windows
//! would pace them, and the server waits in its socket. This is not a hold: a reader that
//! stopped beside others that read is never waited for (they are not all behind, the
//! bounds above deal with it), and a stream opened on a paced session, or one ending,
//! ends the pacing at once; the pool opens new connections on another session while the
//! pod may have one more (`SessionPool`'s `pick`), so that a reader that stopped costs
//! them nothing. Reading ahead up to the hard bound instead kept up to 32 MiB
//! of fresh buffers in flight per download: the memory they were read into was new to the
//! process (page faults) and out of the cache by the time it was written to the local
//! socket. Measured on a 1 GiB download through `kforward forward` over the WebSocket
//! tunnel: 62,000 page faults and about 1.6x the CPU of the `v4.channel.k8s.io` path before,
//! which reads one message, writes it, and reads the next (figures in the README's
//! Performance section).
//!
//! So a stream buffers at most the hard bound (32 MiB by default) plus one frame, and a
//! session at most that per open stream; an idle session keeps one small read buffer.
//!
//! **GOAWAY.** Streams the server's GOAWAY says it never processed (ids above its last good
//! id) end at once, and may be opened again elsewhere with what was written on them
//! (`PodStream` does it): spdystream drops SYN_STREAMs that arrive after its GOAWAY.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::error::{SessionEnd, SpdyError};
use super::frame::{self, Frame, RST_CANCEL};
use super::headers::{HeaderDecoder, HeaderEncoder};
use super::read_buffer::ReadBuffer;
use super::stream::{Bounds, Pair, Push, SpdyStream};
use super::writer::{Ctrl, write_loop};

/// DATA frames queued toward the server before writers wait (backpressure), shared by the
/// session's streams in arrival order.
const DATA_QUEUE: usize = 64;
/// The most error-stream bytes kept per connection (the kubelet sends one line).
pub(crate) const MAX_ERROR_TEXT: usize = 16 * 1024;
/// RST_STREAM status `REFUSED_STREAM`, for a stream the server tries to open.
const RST_REFUSED: u32 = 3;

/// How a session behaves; [`Default`] is what kforward uses.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// let config = kforward_core::transport::spdy::SessionConfig {
///     ping_interval: Duration::from_secs(1),
///     ..Default::default()
/// };
/// assert!(config.ping_timeout >= config.ping_interval);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How often a PING goes out (kubectl pings every 5 s). PINGs keep the kubelet's
    /// streaming idle timeout and idle middleboxes from closing a quiet session.
    pub ping_interval: Duration,
    /// A session from which nothing arrived for this long after a PING is dead.
    pub ping_timeout: Duration,
    /// The soft bound of what a stream buffers for a reader that does not keep up (the
    /// hard bound is four times this); what happens at the bounds is in the
    /// docs of [`Session`]'s module (`transport::spdy::session`). 8 MiB: more than a local socket's buffers hold.
    pub stream_buffer: usize,
    /// A reader alone on its session that took nothing for this long, with more than the
    /// soft bound waiting for it, has stopped: the session waits for it from there. Two
    /// seconds: longer than a busy process on a loaded machine leaves a reader unscheduled.
    pub stall_timeout: Duration,
    /// How long a stream past the soft bound that shares its session may take nothing
    /// before it is reset as stalled; past the hard bound, the longest pause a stopped
    /// reader causes the other connections of its session (once). A reader that takes
    /// something at least this often is never reset, however slow.
    pub hold_grace: Duration,
    /// What a stream alone on its session, or every stream of a shared one, may have
    /// waiting for its reader before the session stops reading its connection until one
    /// reader took half (see the module docs of `transport::spdy::session`). 1 MiB: a few
    /// of the server's DATA frames, and about what the loopback sockets on both sides hold
    /// again.
    pub lone_stream_buffer: usize,
}

impl SessionConfig {
    /// The bounds of a stream that shares its session with others (`shared`) or is alone
    /// on it: a stopped reader beside others is told apart within the hold's grace.
    pub(crate) fn bounds(&self, shared: bool) -> Bounds {
        Bounds {
            soft: self.stream_buffer,
            hard: self.stream_buffer.saturating_mul(4),
            stall: if shared {
                self.hold_grace
            } else {
                self.stall_timeout
            },
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(10),
            stream_buffer: 8 * 1024 * 1024,
            stall_timeout: Duration::from_secs(2),
            hold_grace: Duration::from_millis(300),
            lone_stream_buffer: 1024 * 1024,
        }
    }
}

/// A snapshot of a session's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLoad {
    /// Connections (stream pairs) open on it.
    pub streams: usize,
    /// Whether it stopped reading until a slow reader catches up.
    pub held: bool,
    /// Whether it stopped reading until one of its readers, all behind, took half of what
    /// waits for it ([`SessionConfig::lone_stream_buffer`]); unlike a hold, this takes new
    /// streams (the pool gives it one only when the pod may have no other session), and a
    /// new stream ends it.
    pub paced: bool,
    /// Whether it takes new streams (not ended, no GOAWAY).
    pub open: bool,
}

pub(crate) struct State {
    next_id: u32,
    next_request: u64,
    encoder: HeaderEncoder,
    /// Every open pair, under both of its stream ids.
    pairs: HashMap<u32, Arc<Pair>>,
    live: usize,
    going_away: Option<u32>,
    pub(crate) end: Option<SessionEnd>,
    /// The data stream whose reader the session waits for.
    held: Option<u32>,
    /// The data stream whose push paced the session (module docs): its reader, or while
    /// the session is shared every reader, had more than the pacing bound waiting.
    paced: Option<u32>,
    /// The streams open when the pacing began: one opened or ended since ends it.
    paced_live: usize,
    last_seen: Instant,
    ping_sent: Option<(u32, Instant)>,
    next_ping: u32,
    /// SYN_REPLYs received, for tests that count round trips.
    replies: u64,
}

pub(crate) struct Inner {
    pub(crate) pod: String,
    pub(crate) config: SessionConfig,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    pub(crate) data: mpsc::Sender<Bytes>,
    state: Mutex<State>,
    pub(super) ended: CancellationToken,
    /// Wakes a held reader: its stream drained, or a stream was opened.
    drained: Notify,
    /// Notified when the session ends or goes away (for pools).
    pub(crate) changed: Notify,
}

/// Keeps a session open while a [`Session`] handle or a stream uses it.
pub(crate) struct Guard(Weak<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.close(SessionEnd::Local);
        }
    }
}

/// One SPDY/3.1 port-forward session to one pod: many connections, each a stream pair.
/// Cheap to clone; the session closes (GOAWAY, then the connection) when the last handle
/// and the last stream are gone, or at [`close`](Self::close).
///
/// Sessions are opened through the API server by [`Session::open`] or by a
/// [`SessionPool`](super::SessionPool); [`Session::start`] runs one over any byte stream.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> Result<(), Box<dyn std::error::Error>> {
/// use kforward_core::transport::spdy::{Session, SpdyTransport};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let session = Session::open(&ctx, "demo", "echo-0", SpdyTransport::WebSocket, Default::default()).await?;
/// let mut conn = session.open_stream(7000)?;
/// conn.write_all(b"hello").await?;
/// conn.shutdown().await?; // DATA+FIN: the pod's side of the connection is told we are done
/// let mut back = Vec::new();
/// conn.read_to_end(&mut back).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pod", &self.inner.pod)
            .field("load", &self.load())
            .finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    /// Runs a session over `io`, a connection on which the server speaks SPDY/3.1 (the
    /// upgraded HTTP connection or the WebSocket tunnel's byte stream). `pod` names the
    /// pod in errors. Must be called inside a tokio runtime: it spawns the reader and the
    /// writer.
    pub fn start<S>(io: S, pod: &str, config: SessionConfig) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let inner = Arc::new(Inner {
            pod: pod.to_string(),
            config,
            ctrl,
            data,
            state: Mutex::new(State {
                next_id: 1,
                next_request: 0,
                encoder: HeaderEncoder::new(),
                pairs: HashMap::new(),
                live: 0,
                going_away: None,
                end: None,
                held: None,
                paced: None,
                paced_live: 0,
                last_seen: Instant::now(),
                ping_sent: None,
                next_ping: 1,
                replies: 0,
            }),
            ended: CancellationToken::new(),
            drained: Notify::new(),
            changed: Notify::new(),
        });
        let (rd, wr) = tokio::io::split(io);
        tokio::spawn(read_loop(inner.clone(), rd));
        tokio::spawn(write_loop(inner.clone(), wr, ctrl_rx, data_rx));
        let guard = Arc::new(Guard(Arc::downgrade(&inner)));
        Session { inner, guard }
    }

    /// The pod this session reaches.
    pub fn pod(&self) -> &str {
        &self.inner.pod
    }

    /// Opens a connection to `port` of the pod: queues its two SYN_STREAMs and returns
    /// without waiting for the server's replies, so that the first write follows them at
    /// once.
    ///
    /// # Errors
    ///
    /// [`SpdyError::SessionLost`] when the session has ended or the server sent GOAWAY
    /// (nothing was sent: the caller may use another session).
    pub fn open_stream(&self, port: u16) -> Result<SpdyStream, SpdyError> {
        let pair = {
            let mut st = lock(&self.inner.state);
            if let Some(end) = &st.end {
                return Err(self.inner.lost(end.clone()));
            }
            if let Some(status) = st.going_away {
                return Err(self.inner.lost(SessionEnd::GoAway(status)));
            }
            if st.next_id > 0x7fff_fffb {
                return Err(self.inner.lost(SessionEnd::Protocol(
                    "the session ran out of stream ids".into(),
                )));
            }
            let (error_id, data_id) = (st.next_id, st.next_id + 2);
            st.next_id += 4;
            let request = st.next_request.to_string();
            st.next_request += 1;
            let port_text = port.to_string();
            let mut out = BytesMut::new();
            for (id, kind) in [(error_id, "error"), (data_id, "data")] {
                let block = st.encoder.encode(&[
                    ("streamtype", kind),
                    ("port", &port_text),
                    ("requestid", &request),
                ]);
                frame::encode(
                    &Frame::SynStream {
                        stream_id: id,
                        associated_to: 0,
                        priority: 0,
                        flags: 0,
                        header_block: Bytes::from(block),
                    },
                    &mut out,
                );
                if kind == "error" {
                    // The client never writes on the error stream (kubectl closes it at once).
                    out.extend_from_slice(&frame::data_header(error_id, true, 0));
                }
            }
            // Queued under the lock: header blocks reach the wire in the order their zlib
            // stream was written.
            if self.inner.ctrl.send(Ctrl::Frame(out.freeze())).is_err() {
                return Err(self.inner.lost(SessionEnd::Closed));
            }
            let pair = Arc::new(Pair::new(error_id, data_id, port));
            st.pairs.insert(error_id, pair.clone());
            st.pairs.insert(data_id, pair.clone());
            st.live += 1;
            pair
        };
        // A reader held for a lone slow stream must now decide again (module docs).
        self.inner.drained.notify_one();
        Ok(SpdyStream::new(
            pair,
            self.inner.clone(),
            self.guard.clone(),
        ))
    }

    /// How loaded the session is.
    pub fn load(&self) -> SessionLoad {
        let st = lock(&self.inner.state);
        SessionLoad {
            streams: st.live,
            held: st.held.is_some(),
            paced: st.paced.is_some(),
            open: st.end.is_none() && st.going_away.is_none(),
        }
    }

    /// Why the session ended, once it has.
    pub fn end(&self) -> Option<SessionEnd> {
        lock(&self.inner.state).end.clone()
    }

    /// SYN_REPLYs received so far.
    pub fn replies(&self) -> u64 {
        lock(&self.inner.state).replies
    }

    /// Waits until the session ends or takes no new streams.
    pub async fn closed(&self) {
        loop {
            let changed = self.inner.changed.notified();
            if !self.load().open {
                return;
            }
            changed.await;
        }
    }

    /// Closes the session: GOAWAY, then the connection; its streams fail with
    /// [`SpdyError::SessionLost`].
    pub fn close(&self) {
        self.inner.close(SessionEnd::Local);
    }
}

impl Inner {
    pub(crate) fn lost(&self, end: SessionEnd) -> SpdyError {
        SpdyError::SessionLost {
            pod: self.pod.clone(),
            end,
        }
    }

    /// Queues a control frame; false when the writer is gone.
    pub(crate) fn send_ctrl(&self, f: &Frame) -> bool {
        let mut b = BytesMut::new();
        frame::encode(f, &mut b);
        self.ctrl.send(Ctrl::Frame(b.freeze())).is_ok()
    }

    /// Removes a pair whose stream handle is gone; resets the stream on the server unless
    /// both sides finished it (or it is already gone from the session).
    pub(crate) fn retire(&self, pair: &Pair, finished: bool) {
        let mut st = lock(&self.state);
        if st.pairs.remove(&pair.data_id).is_none() {
            return;
        }
        st.pairs.remove(&pair.error_id);
        st.live -= 1;
        if st.held == Some(pair.data_id) || st.paced.is_some() {
            // A stream fewer: the readers left decide again whether the session waits.
            if st.held == Some(pair.data_id) {
                st.held = None;
            }
            st.paced = None;
            self.drained.notify_one();
        }
        if !finished && st.end.is_none() {
            self.send_ctrl(&Frame::RstStream {
                stream_id: pair.data_id,
                status: RST_CANCEL,
            });
        }
        if st.live == 0
            && let Some(status) = st.going_away
        {
            drop(st);
            self.finish(SessionEnd::GoAway(status));
        }
    }

    /// A held session may read again: its slow reader took half of its buffer.
    pub(crate) fn release_hold(&self, pair: &Pair) {
        let mut st = lock(&self.state);
        if st.held == Some(pair.data_id) {
            st.held = None;
            drop(st);
            self.drained.notify_one();
        }
    }

    /// A paced session may read again: one of the readers it waited for (any of them, on
    /// a shared session) took half of what waited for it.
    pub(crate) fn release_pace(&self) {
        let mut st = lock(&self.state);
        if st.paced.take().is_some() {
            drop(st);
            self.drained.notify_one();
        }
    }

    /// Whether the session waits for its readers; a pacing that no longer applies (a
    /// stream was opened or ended since, the session ended) ends here.
    fn paced(&self) -> bool {
        let mut st = lock(&self.state);
        let Some(id) = st.paced else { return false };
        if st.live == st.paced_live && st.end.is_none() && st.pairs.contains_key(&id) {
            return true;
        }
        st.paced = None;
        false
    }

    /// The error for a stream whose session is gone.
    pub(crate) fn ended_error(&self) -> SpdyError {
        let end = lock(&self.state).end.clone().unwrap_or(SessionEnd::Closed);
        self.lost(end)
    }

    fn close(&self, end: SessionEnd) {
        let st = lock(&self.state);
        if st.end.is_some() {
            return;
        }
        let went_away = st.going_away.is_some();
        drop(st);
        if !went_away {
            // The client accepted no stream from the server: last good id 0, status OK.
            self.send_ctrl(&Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            });
        }
        let _ = self.ctrl.send(Ctrl::Close);
        self.finish(end);
    }

    /// Ends the session: every open stream fails, both tasks stop.
    pub(super) fn finish(&self, end: SessionEnd) {
        let pairs: Vec<Arc<Pair>> = {
            let mut st = lock(&self.state);
            if st.end.is_some() {
                return;
            }
            tracing::debug!(pod = %self.pod, %end, "SPDY session ended");
            st.end = Some(end.clone());
            st.held = None;
            st.paced = None;
            st.pairs.drain().map(|(_, p)| p).collect()
        };
        for p in pairs {
            p.fail(self.lost(end.clone()));
        }
        self.ended.cancel();
        self.changed.notify_waiters();
        self.drained.notify_one();
    }

    fn dispatch(&self, f: Frame, headers: &mut HeaderDecoder) -> Result<(), SessionEnd> {
        let decode = |h: &mut HeaderDecoder, block: &[u8]| {
            h.decode(block)
                .map(|_| ())
                .map_err(|e| SessionEnd::Protocol(e.to_string()))
        };
        match f {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.on_data(stream_id, fin, data),
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                decode(headers, &header_block)?;
                let mut st = lock(&self.state);
                st.replies += 1;
                if let Some(p) = st.pairs.get(&stream_id)
                    && p.data_id == stream_id
                {
                    p.replied();
                }
            }
            Frame::Headers { header_block, .. } => decode(headers, &header_block)?,
            Frame::SynStream {
                stream_id,
                header_block,
                ..
            } => {
                // Port-forward servers never open streams; refuse one politely.
                decode(headers, &header_block)?;
                self.send_ctrl(&Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED,
                });
            }
            Frame::RstStream { stream_id, status } => {
                let pair = lock(&self.state).pairs.get(&stream_id).cloned();
                if let Some(p) = pair {
                    p.fail(SpdyError::Reset {
                        pod: self.pod.clone(),
                        port: p.port,
                        status,
                    });
                }
            }
            Frame::Ping { id } => {
                if id % 2 == 1 {
                    let mut st = lock(&self.state);
                    if st.ping_sent.is_some_and(|(sent, _)| sent == id) {
                        st.ping_sent = None;
                    }
                } else {
                    self.send_ctrl(&Frame::Ping { id });
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut st = lock(&self.state);
                st.going_away = Some(status);
                // Pairs past the last stream the server took will never be served.
                let unserved: Vec<Arc<Pair>> = st
                    .pairs
                    .values()
                    .filter(|p| p.error_id > last_good_stream_id)
                    .cloned()
                    .collect();
                let mut gone = 0;
                for p in &unserved {
                    if st.pairs.remove(&p.data_id).is_some() {
                        st.pairs.remove(&p.error_id);
                        gone += 1;
                    }
                }
                st.live -= gone;
                if st.held.is_some_and(|id| !st.pairs.contains_key(&id)) {
                    st.held = None;
                }
                let idle = st.live == 0;
                drop(st);
                for p in unserved {
                    p.fail_unprocessed(self.lost(SessionEnd::GoAway(status)));
                }
                self.changed.notify_waiters();
                if idle {
                    self.finish(SessionEnd::GoAway(status));
                }
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    fn on_data(&self, stream_id: u32, fin: bool, data: Bytes) {
        let mut st = lock(&self.state);
        let Some(pair) = st.pairs.get(&stream_id).cloned() else {
            return; // a stream already retired or reset: late frames are dropped
        };
        if stream_id == pair.error_id {
            drop(st);
            pair.error_data(&data, fin);
            return;
        }
        let bounds = self.config.bounds(st.live > 1);
        match pair.push(data, fin, bounds) {
            Push::Queued => {
                let bound = self.config.lone_stream_buffer;
                // Every reader behind: reading on only piles up more for readers that
                // will take it later. Each is checked and marked in one step under its
                // lock (`pace`), so a reader that takes data meanwhile is either seen
                // catching up or marked to let go of the pacing; the pushed stream is
                // checked first, the common case on a shared session being that it is
                // not behind. A reader marked in a round that did not pace keeps a mark
                // that at most ends a later pacing early.
                if st.paced.is_none()
                    && pair.pace(bound)
                    && st
                        .pairs
                        .iter()
                        .filter(|(id, p)| **id == p.data_id && p.data_id != pair.data_id)
                        .all(|(_, p)| p.pace(bound))
                {
                    st.paced = Some(stream_id);
                    st.paced_live = st.live;
                }
            }
            // Past the hard bound, sharing the session, and its reader already took
            // nothing for the hold's grace: stalled, not slow.
            Push::Full(_)
                if st.live > 1 && pair.reader_idle(Instant::now()) >= self.config.hold_grace =>
            {
                drop(st);
                self.reset_stalled(&pair);
            }
            // A reader that still reads, past the hard bound; or a stalled one alone on
            // the session: wait for it.
            Push::Full(data) => {
                pair.push_over(data, fin);
                st.held = Some(stream_id);
            }
            Push::Stalled(data) if st.live == 1 => {
                pair.push_over(data, fin);
                st.held = Some(stream_id);
            }
            Push::Stalled(_) => {
                drop(st);
                self.reset_stalled(&pair);
            }
        }
    }

    /// Resets a stalled stream that shares the session (see the module docs).
    fn reset_stalled(&self, pair: &Arc<Pair>) {
        let mut st = lock(&self.state);
        if st.pairs.remove(&pair.data_id).is_none() {
            return;
        }
        st.pairs.remove(&pair.error_id);
        st.live -= 1;
        if st.held == Some(pair.data_id) {
            st.held = None;
        }
        let others = st.live;
        drop(st);
        let limit = self.config.stream_buffer;
        tracing::debug!(pod = %self.pod, port = pair.port, limit, others, "stream reset: its reader stopped");
        self.send_ctrl(&Frame::RstStream {
            stream_id: pair.data_id,
            status: RST_CANCEL,
        });
        pair.fail(SpdyError::Overflow {
            pod: self.pod.clone(),
            port: pair.port,
            limit,
            others,
        });
    }

    /// A held reader woke up (its stream drained, a stream was opened, or time passed):
    /// a held stream that shares the session and whose reader has stopped is reset.
    fn recheck_hold(&self) {
        let st = lock(&self.state);
        let Some(id) = st.held else { return };
        let Some(pair) = st.pairs.get(&id).cloned() else {
            drop(st);
            lock(&self.state).held = None;
            return;
        };
        let shared = st.live > 1;
        drop(st);
        if shared && pair.reader_idle(Instant::now()) >= self.config.hold_grace {
            self.reset_stalled(&pair);
        }
    }

    fn held(&self) -> bool {
        lock(&self.state).held.is_some()
    }

    /// Once per ping interval: sends a PING, or ends a session that did not answer the
    /// last one in time.
    fn ping_tick(&self) -> Option<SessionEnd> {
        let mut st = lock(&self.state);
        if st.held.is_some() || st.paced.is_some() {
            // Not reading on purpose: silence proves nothing.
            st.ping_sent = None;
            return None;
        }
        let now = Instant::now();
        if let Some((_, sent)) = st.ping_sent {
            if st.last_seen >= sent {
                st.ping_sent = None; // frames came after it: alive
            } else if now.duration_since(sent) >= self.config.ping_timeout {
                return Some(SessionEnd::PingTimeout(now.duration_since(sent)));
            } else {
                return None;
            }
        }
        let id = st.next_ping;
        st.next_ping = st.next_ping.wrapping_add(2) | 1;
        st.ping_sent = Some((id, now));
        drop(st);
        self.send_ctrl(&Frame::Ping { id });
        None
    }
}

/// Takes frames off the connection (into a [`ReadBuffer`]) and dispatches them.
async fn read_loop<R: AsyncRead + Unpin>(inner: Arc<Inner>, mut rd: R) {
    let mut buf = ReadBuffer::default();
    let mut headers = HeaderDecoder::new();
    let mut ping = tokio::time::interval(inner.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut quiet = true;
    let end = 'session: loop {
        loop {
            match buf.decode() {
                Ok(Some(f)) => {
                    if let Err(end) = inner.dispatch(f, &mut headers) {
                        break 'session end;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'session SessionEnd::Protocol(e.to_string()),
            }
        }
        while inner.held() {
            tokio::select! {
                _ = inner.drained.notified() => inner.recheck_hold(),
                _ = tokio::time::sleep(inner.config.hold_grace / 4) => inner.recheck_hold(),
                _ = inner.ended.cancelled() => break 'session SessionEnd::Local,
            }
        }
        while inner.paced() {
            tokio::select! {
                _ = inner.drained.notified() => {}
                _ = inner.ended.cancelled() => break 'session SessionEnd::Local,
            }
        }
        let mut room = buf.room();
        tokio::select! {
            r = rd.read_buf(&mut room) => match r {
                Ok(0) => break SessionEnd::Closed,
                Ok(_) => {
                    lock(&inner.state).last_seen = Instant::now();
                    quiet = false;
                }
                Err(e) => break SessionEnd::Io(e.to_string()),
            },
            _ = ping.tick() => {
                if let Some(end) = inner.ping_tick() {
                    break end;
                }
                // A quiet interval: an idle session keeps no large buffer.
                if quiet {
                    buf.shrink();
                }
                quiet = true;
            }
            _ = inner.ended.cancelled() => break SessionEnd::Local,
        }
    };
    inner.finish(end);
}
