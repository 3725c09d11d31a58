//! The `v4.channel.k8s.io` WebSocket transport: [`Tunnel`] opens `pods/portforward`
//! through kube (auth, TLS and the WebSocket upgrade are kube's) and exposes one port as
//! `AsyncRead + AsyncWrite`.
//!
//! The `v4.channel.k8s.io` framing (one channel byte, then data; a port prefix first) is
//! read by `transport::channel`, sans I/O; this module moves the messages. We frame it
//! ourselves on `kube::Client::connect` instead of using kube's
//! `Portforwarder`, whose 4 KiB chunks through a channel of depth 1 cap throughput, and
//! whose port stream drops replies in flight when its write half is shut down.
//!
//! The protocol has no half-close: shutting down this stream's write side only stops
//! writes; the stream keeps reading until the pod closes its connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::channel::{Channels, Received};
use crate::client::KubeContext;
use crate::error::{Error, Result};

/// How long opening a tunnel (the HTTP upgrade) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message written at once: large messages keep framing cheap at GiB rates.
const MAX_WRITE: usize = 256 * 1024;
/// Most bytes read from the connection at once: two TLS records' worth of plaintext.
const READ_BUFFER: usize = 32 * 1024;

pub(crate) use super::channel::DATA_CHANNEL;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One port of one pod, through the API server's port-forward.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let mut t = kforward_core::Tunnel::open(&ctx, "demo", "web-abc12", 8080).await?;
/// t.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// let mut reply = Vec::new();
/// t.read_to_end(&mut reply).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tunnel {
    read: TunnelReader,
    write: TunnelWriter,
}

/// The receiving half of a [`Tunnel`], from [`Tunnel::into_split`]: `AsyncRead`, and
/// [`TunnelReader::read_chunk`], which hands over each received message's bytes without
/// copying them.
///
/// # Example
///
/// ```no_run
/// # async fn f(t: kforward_core::Tunnel) -> Result<(), Box<dyn std::error::Error>> {
/// let (mut rx, _tx) = t.into_split();
/// while let Some(chunk) = rx.read_chunk().await? {
///     println!("{} bytes from {}", chunk.len(), rx.pod());
/// }
/// # Ok(()) }
/// ```
pub struct TunnelReader {
    ws: SplitStream<Ws>,
    pod: String,
    port: u16,
    /// Data received and not yet read.
    pending: Bytes,
    /// The channels' framing state (the port prefixes still to skip).
    channels: Channels,
    /// The stream has ended (close frame or end of the connection).
    eof: bool,
}

/// The sending half of a [`Tunnel`], from [`Tunnel::into_split`]: `AsyncWrite`.
///
/// # Example
///
/// ```no_run
/// # async fn f(t: kforward_core::Tunnel) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncWriteExt;
/// let (_rx, mut tx) = t.into_split();
/// tx.write_all(b"PING\r\n").await?;
/// # Ok(()) }
/// ```
pub struct TunnelWriter {
    ws: SplitSink<Ws, Message>,
    /// The local side shut its writes down.
    write_shut: bool,
}

impl std::fmt::Debug for TunnelReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelReader")
            .field("pod", &self.pod)
            .field("port", &self.port)
            .field("eof", &self.eof)
            .finish()
    }
}

impl std::fmt::Debug for TunnelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelWriter")
            .field("write_shut", &self.write_shut)
            .finish()
    }
}

impl Tunnel {
    /// Opens a port-forward to `port` of pod `pod` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] without `create pods/portforward`, [`Error::NotFound`] when the
    /// pod is gone, [`Error::Unauthorized`], [`Error::Unreachable`], or [`Error::Api`].
    pub async fn open(ctx: &KubeContext, namespace: &str, pod: &str, port: u16) -> Result<Tunnel> {
        let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={port}");
        let req = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| Error::Unreachable {
                server: ctx.server().to_string(),
                message: e.to_string(),
            })?;
        let conn = tokio::time::timeout(OPEN_TIMEOUT, ctx.client().connect(req))
            .await
            .map_err(|_| Error::Unreachable {
                server: ctx.server().to_string(),
                message: format!(
                    "opening a port-forward took longer than {}s",
                    OPEN_TIMEOUT.as_secs()
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
        // kube wraps the upgraded connection with tungstenite's default configuration, whose
        // 128 KiB read buffer is zero-filled before every read from TLS although one read
        // brings about one TLS record (16 KiB): that memset was 5% of the client's CPU in a
        // bulk profile. The stream has not been read yet, so nothing is buffered in it and
        // it can be wrapped again with a read buffer sized for TLS records.
        let io = conn.into_stream().into_inner();
        // No write buffer: each message goes to TLS as it is sent, so a write reaches the
        // pod without a flush, as on a TCP socket (messages are already large at bulk
        // rates: see `MAX_WRITE`).
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0);
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
        let (sink, stream) = ws.split();
        Ok(Tunnel {
            read: TunnelReader {
                ws: stream,
                pod: pod.to_string(),
                port,
                pending: Bytes::new(),
                channels: Channels::new(),
                eof: false,
            },
            write: TunnelWriter {
                ws: sink,
                write_shut: false,
            },
        })
    }

    /// The pod this tunnel reaches.
    pub fn pod(&self) -> &str {
        &self.read.pod
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        self.read.port
    }

    /// Waits for the port prefix on the data channel, which proves the stream is up, or
    /// for the error the pod's port answered with.
    ///
    /// # Errors
    ///
    /// [`Error::Tunnel`] with the error channel's message or the transport's error.
    pub async fn ready(&mut self) -> Result<()> {
        let r = &mut self.read;
        futures::future::poll_fn(|cx| r.poll_prefix(cx))
            .await
            .map_err(|e| Error::Tunnel {
                pod: r.pod.clone(),
                port: r.port,
                message: e.to_string(),
            })
    }

    /// Splits the tunnel into halves that can be used at the same time, from two tasks.
    pub fn into_split(self) -> (TunnelReader, TunnelWriter) {
        (self.read, self.write)
    }
}

impl TunnelReader {
    /// The pod this tunnel reaches.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// The next bytes the pod sent, as received (one WebSocket message's data, without
    /// copying it); `None` once the stream has ended.
    ///
    /// # Errors
    ///
    /// The transport's error, or [`io::ErrorKind::ConnectionRefused`] with the error
    /// channel's message when the pod's port answered with an error.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        futures::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The polling form of [`TunnelReader::read_chunk`].
    ///
    /// # Errors
    ///
    /// As [`TunnelReader::read_chunk`].
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if !self.pending.is_empty() {
                return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
            }
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            ready!(self.poll_frame(cx))?;
        }
    }

    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.channels.awaiting_prefix() && !self.eof && self.pending.is_empty() {
            ready!(self.poll_frame(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the next frame into `pending`; `Ok` may leave `pending` empty.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let msg = match ready!(self.ws.poll_next_unpin(cx)) {
            None => {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Binary(b) => match self.channels.receive(b) {
                Received::Data(data) => self.pending = data,
                Received::Error(message) => {
                    self.eof = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        message,
                    )));
                }
                Received::Nothing => {}
            },
            Message::Close(_) => self.eof = true,
            _ => {}
        }
        Poll::Ready(Ok(()))
    }
}

impl TunnelWriter {
    /// Sends `frame`, a data message whose first byte is the data channel's number
    /// ([`DATA_CHANNEL`]) and the rest the bytes for the pod, as it is: callers that read
    /// into a buffer behind that byte save the copy `AsyncWrite` makes.
    pub(crate) async fn send_frame(&mut self, frame: Bytes) -> io::Result<()> {
        debug_assert_eq!(frame.first(), Some(&DATA_CHANNEL));
        if self.write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.ws
            .send(Message::Binary(frame))
            .await
            .map_err(io::Error::other)
    }
}

impl TunnelWriter {
    /// The polling form of [`send_frame`](Self::send_frame): once the socket takes a
    /// message, sends the one in `frame` (taking it out); `frame` stays when not ready.
    pub(crate) fn poll_send_frame(
        &mut self,
        cx: &mut Context<'_>,
        frame: &mut Option<Bytes>,
    ) -> Poll<io::Result<()>> {
        if self.write_shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        if let Some(f) = frame.take() {
            debug_assert_eq!(f.first(), Some(&DATA_CHANNEL));
            self.ws
                .start_send_unpin(Message::Binary(f))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TunnelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_frame(cx))?;
        }
    }
}

impl AsyncWrite for TunnelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        let n = data.len().min(MAX_WRITE);
        let mut frame = BytesMut::with_capacity(n + 1);
        frame.put_u8(DATA_CHANNEL);
        frame.put_slice(&data[..n]);
        self.ws
            .start_send_unpin(Message::Binary(frame.freeze()))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No half-close in this protocol (see the module docs): flush, then keep reading.
        ready!(self.ws.poll_flush_unpin(cx)).map_err(io::Error::other)?;
        self.write_shut = true;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Whatever a write left behind (a full socket) goes out before waiting for a reply,
        // so write-then-read works without a flush; a write error shows on the next write.
        let _ = self.write.ws.poll_flush_unpin(cx);
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
