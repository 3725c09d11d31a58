//! Transports: the ways to open a stream to one port of a pod through the API server's
//! `pods/portforward`: SPDY/3.1 ([`spdy`], in a WebSocket tunnel or over a plain upgrade,
//! with half-close and many connections per session) and the `v4.channel.k8s.io`
//! WebSocket ([`websocket`], one per connection, no half-close). Which one a forward
//! uses is its [`Transport`] option; `auto` finds it once per cluster ([`TransportMemo`]).
//!
//! The rest of the crate holds a `Stream`, never a transport's own type, so another
//! transport is one more variant here and in its halves. Each transport says whether it
//! passes a half-close on (`StreamWriter::passes_half_close`): the v4 WebSocket cannot,
//! so the pump keeps reading replies for a while after the local client stopped writing;
//! a transport that can (SPDY) lets the pod see the end of the client's writes instead.
//! A TCP stream through the relay is framed on its tunnel (`framed.rs`, and
//! `docs/relay-protocol.md`), which passes the end of each side's writes on whatever
//! carries it.

pub(crate) mod channel;
mod choice;
mod framed;
pub mod spdy;
pub mod websocket;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::Result;
pub use choice::{Transport, TransportMemo, UnknownTransport};
pub(crate) use framed::Framed;
use framed::{FramedReader, FramedWriter};
use spdy::PodStream;
use websocket::{DATA_CHANNEL, Tunnel, TunnelReader, TunnelWriter};

/// The largest message [`StreamWriter::write_all`] sends at once.
const MAX_COPY: usize = 128 * 1024;

/// One stream to a pod's port (or through a relay pod to a destination), whichever
/// transport opened it.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A `v4.channel.k8s.io` WebSocket.
    WebSocket(Tunnel),
    /// A SPDY stream on a session of the forward's pool.
    Spdy(PodStream),
    /// A framed TCP stream through a relay pod, on a `v4.channel.k8s.io` WebSocket (boxed:
    /// both halves of a tunnel, several times the other variants).
    Relay(Box<Framed>),
}

/// The receiving half of a [`Stream`].
pub(crate) enum StreamReader {
    /// A `v4.channel.k8s.io` WebSocket.
    WebSocket(TunnelReader),
    /// A SPDY stream (shared with its writer: the stream's halves wait on separate wakers).
    Spdy(Arc<Mutex<PodStream>>),
    /// A framed relay stream.
    Relay(FramedReader),
}

/// The sending half of a [`Stream`].
pub(crate) enum StreamWriter {
    /// A `v4.channel.k8s.io` WebSocket.
    WebSocket(TunnelWriter),
    /// A SPDY stream.
    Spdy(Arc<Mutex<PodStream>>),
    /// A framed relay stream.
    Relay(FramedWriter),
}

fn lock(s: &Mutex<PodStream>) -> std::sync::MutexGuard<'_, PodStream> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    /// The pod the stream reaches (for a relay stream, the relay's pod).
    pub(crate) fn pod(&self) -> &str {
        match self {
            Stream::WebSocket(t) => t.pod(),
            Stream::Spdy(s) => s.pod(),
            Stream::Relay(f) => f.pod(),
        }
    }

    /// The pod's port.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Stream::WebSocket(t) => t.port(),
            Stream::Spdy(s) => s.port(),
            Stream::Relay(f) => f.port(),
        }
    }

    /// Waits until the stream is known to be up, or for the error the pod's port answered
    /// with. A SPDY stream is up at once (its first bytes go out with its SYN_STREAM); a
    /// refusal from the pod's port comes as a read error.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Tunnel`] with the transport's or the pod's message.
    pub(crate) async fn ready(&mut self) -> Result<()> {
        match self {
            Stream::WebSocket(t) => t.ready().await,
            // A relay stream is up once its handshake was answered.
            Stream::Spdy(_) | Stream::Relay(_) => Ok(()),
        }
    }

    /// The transport carrying the stream (never [`Transport::Auto`]).
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Stream::WebSocket(_) | Stream::Relay(_) => Transport::Websocket,
            Stream::Spdy(s) => s.transport(),
        }
    }

    /// The two halves, for a reading and a writing task.
    pub(crate) fn into_split(self) -> (StreamReader, StreamWriter) {
        match self {
            Stream::Spdy(s) => {
                let s = Arc::new(Mutex::new(s));
                (StreamReader::Spdy(s.clone()), StreamWriter::Spdy(s))
            }
            Stream::WebSocket(t) => {
                let (r, w) = t.into_split();
                (StreamReader::WebSocket(r), StreamWriter::WebSocket(w))
            }
            Stream::Relay(f) => {
                let (r, w) = (*f).into_split();
                (StreamReader::Relay(r), StreamWriter::Relay(w))
            }
        }
    }
}

impl StreamReader {
    /// The next bytes from the pod, as the transport received them (no copy); `None` once
    /// the stream has ended.
    ///
    /// # Errors
    ///
    /// The transport's error, or the pod's port answering with an error.
    pub(crate) async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self {
            StreamReader::WebSocket(r) => r.read_chunk().await,
            StreamReader::Spdy(s) => std::future::poll_fn(|cx| lock(s).poll_chunk(cx)).await,
            StreamReader::Relay(r) => std::future::poll_fn(|cx| r.poll_chunk(cx)).await,
        }
    }
}

impl StreamWriter {
    /// How many bytes the transport puts in front of the data of each message it sends: a
    /// frame given to [`send`](Self::send) starts with that many bytes for it to fill, so
    /// that data read straight into a frame is never copied again.
    pub(crate) fn headroom(&self) -> usize {
        match self {
            StreamWriter::WebSocket(_) => 1,
            StreamWriter::Spdy(_) => spdy::frame::HEADER_LEN,
            StreamWriter::Relay(_) => FramedWriter::headroom(),
        }
    }

    /// A frame with room for the transport's bytes and `capacity` bytes of data.
    pub(crate) fn frame(&self, capacity: usize) -> BytesMut {
        let mut f = BytesMut::with_capacity(self.headroom() + capacity);
        f.put_bytes(0, self.headroom());
        f
    }

    /// Sends one message: `frame` is [`headroom`](Self::headroom) bytes, then the data.
    ///
    /// # Errors
    ///
    /// The transport's error; `BrokenPipe` after [`finish`](Self::finish).
    pub(crate) async fn send(&mut self, mut frame: BytesMut) -> io::Result<()> {
        match self {
            StreamWriter::WebSocket(w) => {
                frame[0] = DATA_CHANNEL;
                w.send_frame(frame.freeze()).await
            }
            StreamWriter::Spdy(s) => {
                let mut frame = Some(frame);
                std::future::poll_fn(|cx| lock(s).poll_send_frame(cx, &mut frame)).await
            }
            StreamWriter::Relay(w) => w.send(frame).await,
        }
    }

    /// Sends `data`, copied into messages.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        for part in data.chunks(MAX_COPY) {
            let mut f = self.frame(part.len());
            f.put_slice(part);
            self.send(f).await?;
        }
        Ok(())
    }

    /// Ends the writes. On a transport that cannot pass a half-close on this only stops
    /// writes; the far side learns nothing.
    ///
    /// # Errors
    ///
    /// The transport's error.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        match self {
            StreamWriter::WebSocket(w) => w.shutdown().await,
            StreamWriter::Spdy(s) => {
                std::future::poll_fn(|cx| AsyncWrite::poll_shutdown(Pin::new(&mut *lock(s)), cx))
                    .await
            }
            StreamWriter::Relay(w) => w.finish().await,
        }
    }

    /// Whether [`finish`](Self::finish) reaches the pod as the end of the client's data.
    pub(crate) fn passes_half_close(&self) -> bool {
        match self {
            StreamWriter::WebSocket(_) => false,
            StreamWriter::Spdy(_) | StreamWriter::Relay(_) => true,
        }
    }
}

/// A whole stream as a byte stream, for code that speaks through `AsyncRead` and
/// `AsyncWrite` (the forward proxy's HTTP client) rather than in messages.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::WebSocket(t) => Pin::new(t).poll_read(cx, buf),
            Stream::Spdy(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Relay(f) => Pin::new(&mut **f).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::WebSocket(t) => Pin::new(t).poll_write(cx, data),
            Stream::Spdy(s) => Pin::new(s).poll_write(cx, data),
            Stream::Relay(f) => Pin::new(&mut **f).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::WebSocket(t) => Pin::new(t).poll_flush(cx),
            Stream::Spdy(s) => Pin::new(s).poll_flush(cx),
            Stream::Relay(f) => Pin::new(&mut **f).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::WebSocket(t) => Pin::new(t).poll_shutdown(cx),
            Stream::Spdy(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Relay(f) => Pin::new(&mut **f).poll_shutdown(cx),
        }
    }
}
