//! One port-forward connection on a session: its error and data streams, as one
//! `AsyncRead + AsyncWrite`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::PollSender;

use super::error::SpdyError;
use super::frame;
use super::session::{Guard, Inner, MAX_ERROR_TEXT};

/// The most bytes one DATA frame carries: large enough that framing costs little at GiB
/// rates, small enough that streams sharing a session take turns often.
const MAX_WRITE: usize = 64 * 1024;
/// How long a reader that saw the data stream's FIN waits for the error stream's end,
/// which may still bring an error (CRI-O closes the data stream before the kubelet writes
/// the error: `internal/oci/runtime_oci_linux.go` closes the stream on return, then
/// `httpstream.go` writes the message).
const ERROR_WAIT: Duration = Duration::from_secs(2);
/// The most bytes kept for sending again on another session (see [`SpdyStream::replay`]):
/// a request's worth.
const REPLAY_MAX: usize = 64 * 1024;

/// What the server sent on a pair, waiting for its reader.
#[derive(Default)]
struct Inbound {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    data_fin: bool,
    error_fin: bool,
    error_text: Vec<u8>,
    failed: Option<SpdyError>,
    replied: bool,
    /// The session stopped reading until this reader takes half of its buffer.
    holds_session: bool,
    /// The session, alone with this stream, stopped reading until this reader takes half
    /// of its lone-stream buffer.
    paces_session: bool,
    reader: Option<Waker>,
    /// When the reader last took data (or the pair was opened).
    last_read: Option<Instant>,
    /// Something (a reply, data) came from the server for this pair.
    received: bool,
    /// Whether the pod sent any data on the data stream.
    data_seen: bool,
    /// The server said (GOAWAY) it never processed this pair: it may be opened again.
    unprocessed: bool,
}

impl Inbound {
    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// What [`Pair::push`] did with data for a reader.
pub(crate) enum Push {
    /// Queued for the reader.
    Queued,
    /// Past the soft bound, and the reader has taken nothing for [`Bounds::stall`]: given
    /// back.
    Stalled(Bytes),
    /// Past the hard bound with a reader that still reads: given back.
    Full(Bytes),
}

/// The bounds of a stream's buffer (see the session's module docs).
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) soft: usize,
    pub(crate) hard: usize,
    pub(crate) stall: Duration,
}

/// The error and data streams of one connection, shared by the session's reader and the
/// connection's [`SpdyStream`].
pub(crate) struct Pair {
    pub(crate) error_id: u32,
    pub(crate) data_id: u32,
    pub(crate) port: u16,
    opened: Instant,
    inbound: Mutex<Inbound>,
}

impl Pair {
    pub(crate) fn new(error_id: u32, data_id: u32, port: u16) -> Pair {
        Pair {
            error_id,
            data_id,
            port,
            opened: Instant::now(),
            inbound: Mutex::new(Inbound::default()),
        }
    }

    /// How long the reader has taken nothing.
    pub(crate) fn reader_idle(&self, now: Instant) -> Duration {
        let last = self.lock().last_read.unwrap_or(self.opened);
        now.saturating_duration_since(last)
    }

    fn lock(&self) -> MutexGuard<'_, Inbound> {
        self.inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues data for the reader within `bounds`, or gives it back (see [`Push`]).
    pub(crate) fn push(&self, data: Bytes, fin: bool, bounds: Bounds) -> Push {
        let mut ib = self.lock();
        ib.received = true;
        ib.data_seen |= !data.is_empty();
        if ib.failed.is_some() {
            return Push::Queued;
        }
        if ib.reader.is_some() {
            // The reader is parked waiting for data: it keeps up, whenever it last read.
            ib.last_read = Some(Instant::now());
        }
        if !data.is_empty() {
            let after = ib.buffered + data.len();
            if after > bounds.soft {
                let last = ib.last_read.unwrap_or(self.opened);
                if last.elapsed() >= bounds.stall {
                    return Push::Stalled(data);
                }
                if after > bounds.hard {
                    return Push::Full(data);
                }
            }
            ib.buffered = after;
            ib.chunks.push_back(data);
        }
        ib.data_fin |= fin;
        ib.wake();
        Push::Queued
    }

    /// Whether more than `bound` waits for the reader (and nothing failed): the session,
    /// whose every reader is that far behind, then paces, until this reader (or another)
    /// took half.
    pub(crate) fn pace(&self, bound: usize) -> bool {
        let mut ib = self.lock();
        ib.paces_session = ib.failed.is_none() && ib.buffered > bound;
        ib.paces_session
    }

    /// Queues data past the limit, and marks the session as held by this reader.
    pub(crate) fn push_over(&self, data: Bytes, fin: bool) {
        let mut ib = self.lock();
        ib.data_seen |= !data.is_empty();
        ib.buffered += data.len();
        ib.chunks.push_back(data);
        ib.data_fin |= fin;
        ib.holds_session = true;
        ib.wake();
    }

    pub(crate) fn error_data(&self, data: &[u8], fin: bool) {
        let mut ib = self.lock();
        ib.received = true;
        let room = MAX_ERROR_TEXT.saturating_sub(ib.error_text.len());
        ib.error_text
            .extend_from_slice(&data[..data.len().min(room)]);
        ib.error_fin |= fin;
        ib.wake();
    }

    pub(crate) fn replied(&self) {
        let mut ib = self.lock();
        ib.replied = true;
        ib.received = true;
    }

    /// Ends a pair the server never processed (its GOAWAY named an earlier stream).
    pub(crate) fn fail_unprocessed(&self, e: SpdyError) {
        let mut ib = self.lock();
        ib.unprocessed = !ib.received;
        drop(ib);
        self.fail(e);
    }

    /// Ends the pair with `e`: buffered data is dropped (a reset stream's data is void,
    /// and a reader that stopped must not pin it).
    pub(crate) fn fail(&self, e: SpdyError) {
        let mut ib = self.lock();
        if ib.failed.is_none() && !(ib.data_fin && ib.error_fin && ib.chunks.is_empty()) {
            ib.failed = Some(e);
            ib.chunks.clear();
            ib.buffered = 0;
        }
        ib.holds_session = false;
        ib.paces_session = false;
        ib.wake();
    }
}

/// One connection to a pod's port over a SPDY session, from
/// [`Session::open_stream`](super::Session::open_stream) or
/// [`SessionPool::connect`](super::SessionPool::connect).
///
/// Half-close works both ways: [`shutdown`](tokio::io::AsyncWriteExt::shutdown) sends
/// DATA+FIN and reads go on until the pod's side ends; the pod's end is EOF on read while
/// writes still go out. What the pod's connection then sees is up to the container
/// runtime: containerd and CRI-O give the other direction one more second and then close
/// the pod's connection (`copyPortForward` in containerd, `PortForwardContainer` in
/// CRI-O).
///
/// Errors carry a [`SpdyError`]: the kubelet's error message
/// ([`SpdyError::Refused`]), a reset, or the session's end.
///
/// # Example
///
/// ```no_run
/// # async fn f(session: kforward_core::transport::spdy::Session) -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let mut conn = session.open_stream(8080)?;
/// conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// let mut reply = Vec::new();
/// conn.read_to_end(&mut reply).await?;
/// # Ok(()) }
/// ```
pub struct SpdyStream {
    pair: Arc<Pair>,
    session: Arc<Inner>,
    _guard: Arc<Guard>,
    tx: PollSender<Bytes>,
    /// Data taken from the pair and not yet read.
    pending: Bytes,
    write_shut: bool,
    /// Whether the pod sent any data.
    carried: bool,
    error_wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What was written before the pod answered, to send again on another session
    /// should this one go away without having processed the stream, or the runtime say
    /// the pod is gone; `None` once the pod sent data or more than
    /// [`REPLAY_MAX`] was written.
    replay: Option<BytesMut>,
}

impl std::fmt::Debug for SpdyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyStream")
            .field("pod", &self.session.pod)
            .field("port", &self.pair.port)
            .field("data_stream", &self.pair.data_id)
            .field("write_shut", &self.write_shut)
            .finish()
    }
}

impl SpdyStream {
    pub(crate) fn new(pair: Arc<Pair>, session: Arc<Inner>, guard: Arc<Guard>) -> SpdyStream {
        let tx = PollSender::new(session.data.clone());
        SpdyStream {
            pair,
            session,
            _guard: guard,
            tx,
            pending: Bytes::new(),
            write_shut: false,
            carried: false,
            error_wait: None,
            replay: Some(BytesMut::new()),
        }
    }

    /// What to send again on a new stream when the server went away without processing
    /// this one: the bytes written so far and whether the write side was shut down.
    pub(crate) fn replay(&self) -> Option<(Bytes, bool)> {
        let ib = self.pair.lock();
        let processed = !ib.unprocessed || ib.received;
        drop(ib);
        self.replayed(!processed)
    }

    /// What to send again on a new stream after the runtime said the pod is gone, so
    /// nothing reached it ([`SpdyError::pod_gone`]): the bytes written so far and
    /// whether the write side was shut down; `None` once the pod sent data or more than
    /// [`REPLAY_MAX`] was written.
    pub(crate) fn replay_unreached(&self) -> Option<(Bytes, bool)> {
        let seen = self.pair.lock().data_seen;
        self.replayed(!seen)
    }

    /// What was written so far and whether the write side was shut down, when `ok`.
    fn replayed(&self, ok: bool) -> Option<(Bytes, bool)> {
        let r = self.replay.as_ref().filter(|_| ok)?;
        Some((Bytes::copy_from_slice(r), self.write_shut))
    }

    /// The session this stream is on.
    pub(crate) fn session_inner(&self) -> &Arc<Inner> {
        &self.session
    }

    fn record(&mut self, data: &[u8]) {
        if let Some(r) = &mut self.replay {
            // Kept until the pod answers with data: before that, what was written is all
            // a new stream needs (a GOAWAY or a refusal before the pod was reached).
            if r.len() + data.len() > REPLAY_MAX || self.pair.lock().data_seen {
                self.replay = None;
            } else {
                r.extend_from_slice(data);
            }
        }
    }

    /// The pod.
    pub fn pod(&self) -> &str {
        &self.session.pod
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        self.pair.port
    }

    /// Whether the server has answered the data stream's SYN_STREAM yet.
    pub fn replied(&self) -> bool {
        self.pair.lock().replied
    }

    /// The next bytes the pod sent, as they arrived (no copy); `None` at the end.
    ///
    /// # Errors
    ///
    /// As [`AsyncRead`]: an [`io::Error`] carrying a [`SpdyError`].
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The polling form of [`read_chunk`](Self::read_chunk).
    ///
    /// # Errors
    ///
    /// As [`read_chunk`](Self::read_chunk).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        let mut ib = self.pair.lock();
        if let Some(chunk) = ib.chunks.pop_front() {
            self.carried = true;
            ib.buffered -= chunk.len();
            ib.last_read = Some(Instant::now());
            if ib.holds_session && ib.buffered <= self.session.config.stream_buffer / 2 {
                ib.holds_session = false;
                drop(ib);
                self.session.release_hold(&self.pair);
            } else if ib.paces_session && ib.buffered <= self.session.config.lone_stream_buffer / 2
            {
                ib.paces_session = false;
                drop(ib);
                self.session.release_pace();
            }
            return Poll::Ready(Ok(Some(chunk)));
        }
        if let Some(e) = &ib.failed {
            return Poll::Ready(Err(e.clone().into()));
        }
        let refused = |ib: &Inbound| SpdyError::Refused {
            pod: self.session.pod.clone(),
            port: self.pair.port,
            message: String::from_utf8_lossy(&ib.error_text).trim().to_string(),
        };
        if ib.error_fin && !ib.error_text.is_empty() {
            return Poll::Ready(Err(refused(&ib).into()));
        }
        // A reader waiting for more is not a stalled one.
        ib.last_read = Some(Instant::now());
        if ib.data_fin {
            // The error stream may still bring a refusal, which comes with no data; a
            // stream that carried data ends at once (an HTTP server's close must not cost
            // its client the runtime's grace).
            let waited = ib.error_fin || self.carried || {
                let sleep = self
                    .error_wait
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(ERROR_WAIT)));
                sleep.as_mut().poll(cx).is_ready()
            };
            if waited {
                if !ib.error_text.is_empty() {
                    return Poll::Ready(Err(refused(&ib).into()));
                }
                return Poll::Ready(Ok(None));
            }
        }
        ib.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn write_error(&self) -> Option<io::Error> {
        if self.write_shut {
            return Some(
                SpdyError::WriteAfterShutdown {
                    pod: self.session.pod.clone(),
                    port: self.pair.port,
                }
                .into(),
            );
        }
        self.pair.lock().failed.clone().map(Into::into)
    }

    fn closed_error(&self) -> io::Error {
        self.session.ended_error().into()
    }
}

use std::future::Future;

impl AsyncRead for SpdyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.pending.is_empty() {
            match ready!(self.poll_chunk(cx))? {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl SpdyStream {
    /// Sends one DATA frame without copying its data: `frame` is
    /// [`frame::HEADER_LEN`] bytes of room for the frame's header, then the data (at most
    /// [`frame::MAX_PAYLOAD`] bytes). `frame` is taken only when it was sent (`Ready(Ok)`).
    pub(crate) fn poll_send_frame(
        &mut self,
        cx: &mut Context<'_>,
        frame: &mut Option<BytesMut>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.write_error() {
            return Poll::Ready(Err(e));
        }
        let Some(len) = frame
            .as_ref()
            .map(|f| f.len().saturating_sub(frame::HEADER_LEN))
        else {
            return Poll::Ready(Ok(()));
        };
        if len == 0 {
            *frame = None;
            return Poll::Ready(Ok(()));
        }
        if len > frame::MAX_PAYLOAD {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a SPDY DATA frame holds at most 16 MiB",
            )));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        let Some(mut f) = frame.take() else {
            return Poll::Ready(Ok(()));
        };
        f[..frame::HEADER_LEN].copy_from_slice(&frame::data_header(self.pair.data_id, false, len));
        let f = f.freeze();
        self.record(&f[frame::HEADER_LEN..]);
        if self.tx.send_item(f).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.write_error() {
            return Poll::Ready(Err(e));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        let n = data.len().min(MAX_WRITE);
        let mut frame = BytesMut::with_capacity(frame::HEADER_LEN + n);
        frame.extend_from_slice(&frame::data_header(self.pair.data_id, false, n));
        frame.extend_from_slice(&data[..n]);
        if self.tx.send_item(frame.freeze()).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        self.record(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The session's writer sends whatever is queued without being asked.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_shut {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = self.write_error() {
            return Poll::Ready(Err(e));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        let fin = Bytes::copy_from_slice(&frame::data_header(self.pair.data_id, true, 0));
        if self.tx.send_item(fin).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        self.write_shut = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for SpdyStream {
    fn drop(&mut self) {
        let finished = {
            let ib = self.pair.lock();
            self.write_shut && ib.data_fin
        };
        self.session.retire(&self.pair, finished);
    }
}
