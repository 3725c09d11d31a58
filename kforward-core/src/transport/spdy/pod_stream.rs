//! One connection to a pod's port through a [`SessionPool`](super::SessionPool): a SPDY stream on one of the
//! pool's sessions (opened again on another when its session went away before the server
//! took it, or where the forward routes now when its pod is gone), or a
//! `v4.channel.k8s.io` tunnel of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::SpdyError;
use super::stream::SpdyStream;
use crate::transport::Transport;
use crate::transport::websocket::Tunnel;

/// One connection to a pod's port, over whichever transport the pool uses.
///
/// A SPDY connection whose session goes away (GOAWAY) before the server processed it is
/// opened again on another session, with what was written on it: the caller never sees
/// that session's end.
///
/// # Example
///
/// ```no_run
/// # async fn f(pool: kforward_core::transport::spdy::SessionPool) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncWriteExt;
/// let mut conn = pool.connect("web-0", 8080).await?;
/// if !conn.transport().half_close() {
///     eprintln!("this cluster offers no half-close");
/// }
/// conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// # Ok(()) }
/// ```
pub struct PodStream {
    pub(super) conn: Conn,
    /// Where the SPDY stream came from, and the reopening in progress.
    pub(super) origin: Option<Origin>,
    pub(super) reopening: Option<Reopening>,
    pub(super) reopened: u32,
    /// How to open the connection again where the forward routes now, after the runtime
    /// said this one's pod is gone.
    pub(super) reroute: Option<Reroute>,
}

/// What a SPDY connection needs of its pool (the pool makes it: this module does not know
/// pools).
pub(super) struct Origin {
    /// Opens the SPDY stream again on another session of the pool, to the same pod.
    pub(super) reopen: Redial,
    /// Takes the session a stream is on out of the pool: its pod is gone.
    pub(super) retire: Box<dyn Fn(&SpdyStream) + Send + Sync>,
}

/// Opens a connection's SPDY stream again, on another session of its pool.
pub(super) type Redial = Box<dyn Fn() -> Reopen + Send + Sync>;

pub(super) type Reopen = Pin<Box<dyn Future<Output = io::Result<SpdyStream>> + Send>>;

/// A connection being opened again: the new one, whose conn takes the old one's place.
pub(super) type Reopening = Pin<Box<dyn Future<Output = io::Result<PodStream>> + Send>>;

/// Opens a connection anew, to whichever pod the caller's routing picks now: set with
/// [`PodStream::set_reroute`], used when the runtime says the pod is gone (see
/// [`SpdyError::pod_gone`]).
pub(crate) type Reroute = std::sync::Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = crate::error::Result<PodStream>> + Send>> + Send + Sync,
>;

impl From<Tunnel> for PodStream {
    /// A `v4.channel.k8s.io` connection (no half-close, never opened again).
    fn from(t: Tunnel) -> Self {
        PodStream {
            conn: Conn::Websocket(t),
            origin: None,
            reopening: None,
            reopened: 0,
            reroute: None,
        }
    }
}

pub(super) enum Conn {
    Spdy(SpdyStream, Transport),
    Websocket(Tunnel),
}

/// How many times one connection is opened again after a GOAWAY.
const MAX_REOPEN: u32 = 3;

impl std::fmt::Debug for PodStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.conn {
            Conn::Spdy(s, t) => f.debug_tuple("PodStream").field(t).field(s).finish(),
            Conn::Websocket(tun) => f.debug_tuple("PodStream").field(tun).finish(),
        }
    }
}

impl PodStream {
    /// The transport carrying this connection (never [`Transport::Auto`]).
    pub fn transport(&self) -> Transport {
        match &self.conn {
            Conn::Spdy(_, t) => *t,
            Conn::Websocket(_) => Transport::Websocket,
        }
    }

    /// The SPDY stream, for a SPDY connection.
    pub fn spdy(&self) -> Option<&SpdyStream> {
        match &self.conn {
            Conn::Spdy(s, _) => Some(s),
            Conn::Websocket(_) => None,
        }
    }

    /// Has `reroute` open this connection again, to whichever pod the forward routes to
    /// then, should the runtime say that this stream's pod is gone.
    pub(crate) fn set_reroute(&mut self, reroute: Reroute) {
        self.reroute = Some(reroute);
    }

    /// After an error from the SPDY stream: starts opening it again when the server never
    /// processed it (GOAWAY: on another session to the same pod), or when the runtime
    /// says the pod is gone (a session stays bound to the pod it was opened for, e.g. a
    /// StatefulSet's pod deleted and created again under its name: the session leaves the
    /// pool, and the connection goes where the forward routes now). Only while nothing
    /// came back from the pod, with what was written replayed. True when the caller
    /// should poll again.
    fn start_reopen(&mut self, e: &io::Error) -> bool {
        let (Conn::Spdy(s, t), Some(origin)) = (&self.conn, &self.origin) else {
            return false;
        };
        if self.reopened >= MAX_REOPEN {
            return false;
        }
        let gone = SpdyError::of(e).is_some_and(SpdyError::pod_gone);
        if gone {
            // Whatever becomes of this connection, the session is no use for new ones.
            (origin.retire)(s);
        }
        let (replay, how) = match s.replay() {
            Some(r) => (
                r,
                "the session went away before the server took the connection",
            ),
            None => match s.replay_unreached().filter(|_| gone) {
                Some(r) => (r, "the pod is gone, its sandbox with it"),
                None => return false,
            },
        };
        let (sent, shut) = replay;
        self.reopened += 1;
        tracing::debug!(pod = s.pod(), port = s.port(), error = %e, "{how}; opening the connection again");
        let t = *t;
        let open: Pin<Box<dyn Future<Output = io::Result<PodStream>> + Send>> =
            match self.reroute.clone().filter(|_| gone) {
                Some(reroute) => Box::pin(async move { reroute().await.map_err(io::Error::other) }),
                None => {
                    let reopen = (origin.reopen)();
                    Box::pin(async move {
                        Ok(PodStream {
                            conn: Conn::Spdy(reopen.await?, t),
                            origin: None,
                            reopening: None,
                            reopened: 0,
                            reroute: None,
                        })
                    })
                }
            };
        self.reopening = Some(Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = open.await?;
            s.write_all(&sent).await?;
            if shut {
                s.shutdown().await?;
            }
            Ok(s)
        }));
        true
    }

    /// Drives a reopening to its end; `Ready(Ok)` when the connection can be used.
    fn poll_reopen(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(fut) = self.reopening.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(fut.as_mut().poll(cx));
        self.reopening = None;
        let new = r?;
        self.conn = new.conn;
        // A rerouted connection comes from its own pool (and pod); one opened again on
        // the same pod keeps this one's.
        if new.origin.is_some() {
            self.origin = new.origin;
        }
        Poll::Ready(Ok(()))
    }

    /// Runs `op` on the connection, opening it again (once per failure) when its session
    /// went away before the server processed it.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut Conn, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        loop {
            std::task::ready!(self.poll_reopen(cx))?;
            match op(&mut self.conn, cx) {
                Poll::Ready(Err(e)) => {
                    if !self.start_reopen(&e) {
                        return Poll::Ready(Err(e));
                    }
                }
                other => return other,
            }
        }
    }
}

/// What the pipeline does with a connection: a SPDY stream it reads in chunks and sends
/// whole frames on, or a `v4.channel.k8s.io` tunnel it carries as any other.
pub(crate) enum Carried {
    Spdy(PodStream),
    Websocket(Tunnel),
}

impl PodStream {
    /// The connection as the pipeline carries it.
    pub(crate) fn into_carried(self) -> Carried {
        match self.conn {
            Conn::Websocket(t) => Carried::Websocket(t),
            Conn::Spdy(..) => Carried::Spdy(self),
        }
    }

    /// The pod.
    pub fn pod(&self) -> &str {
        match &self.conn {
            Conn::Spdy(s, _) => s.pod(),
            Conn::Websocket(t) => t.pod(),
        }
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        match &self.conn {
            Conn::Spdy(s, _) => s.port(),
            Conn::Websocket(t) => t.port(),
        }
    }

    /// The next bytes from the pod as they arrived (no copy on SPDY); `None` at the end.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<bytes::Bytes>>> {
        self.poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => s.poll_chunk(cx),
            Conn::Websocket(t) => {
                let mut buf = vec![0u8; 16 * 1024];
                let mut rb = ReadBuf::new(&mut buf);
                std::task::ready!(Pin::new(t).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                buf.truncate(n);
                Poll::Ready(Ok((n > 0).then(|| bytes::Bytes::from(buf))))
            }
        })
    }

    /// Sends `frame` (room for a DATA frame's header, then the data) as one frame; see
    /// [`SpdyStream::poll_send_frame`].
    pub(crate) fn poll_send_frame(
        &mut self,
        cx: &mut Context<'_>,
        frame: &mut Option<bytes::BytesMut>,
    ) -> Poll<io::Result<()>> {
        self.poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => s.poll_send_frame(cx, frame),
            Conn::Websocket(t) => {
                let Some(f) = frame.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                while f.len() > super::frame::HEADER_LEN {
                    let n = std::task::ready!(
                        Pin::new(&mut *t).poll_write(cx, &f[super::frame::HEADER_LEN..])
                    )?;
                    // Drop what was written, keeping the header's room in front.
                    let rest = f.split_off(super::frame::HEADER_LEN + n);
                    f.truncate(super::frame::HEADER_LEN);
                    f.unsplit(rest);
                }
                *frame = None;
                Poll::Ready(Ok(()))
            }
        })
    }
}

impl AsyncRead for PodStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Websocket(t) => Pin::new(t).poll_read(cx, buf),
        })
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_write(cx, data),
            Conn::Websocket(t) => Pin::new(t).poll_write(cx, data),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Websocket(t) => Pin::new(t).poll_flush(cx),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Websocket(t) => Pin::new(t).poll_shutdown(cx),
        })
    }
}
