//! A relay stream in frames ([`Transport::TcpFramed`] of the relay protocol): a
//! `v4.channel.k8s.io` tunnel to the relay pod whose bytes each way are frames, each a u32
//! length and that many bytes, an empty frame ending the sender's writes.
//!
//! Why frames: neither way a port-forward reaches the relay pod passes a half-close into
//! it (the v4 WebSocket has none; over SPDY the container runtime closes the pod's
//! connection a second after one direction ended). An end frame tells the relay to shut
//! down its connection's write side to the destination, and the relay's end frame says
//! that the destination ended its writes, while the tunnel stays open both ways. So a
//! client that sends a request and shuts its write side (`nc -N`, an upload, a checksum
//! service) gets its whole answer, then EOF as soon as the destination closes.
//!
//! Sending costs no copy: the frame's header goes in the room the pump leaves in front of
//! each read ([`FramedWriter::headroom`]). Receiving hands out slices of the tunnel's
//! messages ([`FramedReader::poll_chunk`]).
//!
//! [`Transport::TcpFramed`]: crate::relay::protocol::Transport::TcpFramed

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::websocket::{DATA_CHANNEL, Tunnel, TunnelReader, TunnelWriter};
use crate::relay::protocol::{FRAME_HEADER_LEN, Piece, Unframer, frame_header};

/// The most data bytes one frame of [`AsyncWrite::poll_write`] carries.
const MAX_WRITE: usize = 256 * 1024;

/// A framed relay stream, whole (for code that speaks `AsyncRead` and `AsyncWrite`).
#[derive(Debug)]
pub(crate) struct Framed {
    read: FramedReader,
    write: FramedWriter,
    /// The relay pod's port.
    port: u16,
}

/// The receiving half of a [`Framed`] stream.
pub(crate) struct FramedReader {
    inner: TunnelReader,
    unframer: Unframer,
    /// Received bytes not yet looked at.
    pending: Bytes,
}

/// The sending half of a [`Framed`] stream.
pub(crate) struct FramedWriter {
    inner: TunnelWriter,
    /// The end frame has been sent (or is being): no data after it.
    ended: bool,
    /// The end frame, while the tunnel has not taken it.
    end_frame: Option<Bytes>,
}

impl std::fmt::Debug for FramedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedReader")
            .field("pod", &self.inner.pod())
            .field("ended", &self.unframer.ended())
            .finish()
    }
}

impl std::fmt::Debug for FramedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedWriter")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Framed {
    /// `tunnel`, whose relay handshake asked for framed TCP and was answered `ok`.
    pub(crate) fn new(tunnel: Tunnel) -> Self {
        let port = tunnel.port();
        let (r, w) = tunnel.into_split();
        Framed {
            port,
            read: FramedReader {
                inner: r,
                unframer: Unframer::default(),
                pending: Bytes::new(),
            },
            write: FramedWriter {
                inner: w,
                ended: false,
                end_frame: None,
            },
        }
    }

    /// The relay's pod.
    pub(crate) fn pod(&self) -> &str {
        self.read.inner.pod()
    }

    /// The relay pod's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The two halves, for a reading and a writing task.
    pub(crate) fn into_split(self) -> (FramedReader, FramedWriter) {
        (self.read, self.write)
    }
}

/// An error for frames that break the protocol.
fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the relay's frames: {e}"),
    )
}

impl FramedReader {
    /// The next data bytes from the destination, as slices of the tunnel's messages (no
    /// copy), at most `max` at once; `None` once the relay's end frame came.
    ///
    /// # Errors
    ///
    /// The tunnel's error, bad framing, or `UnexpectedEof` when the tunnel ended before the
    /// end frame (the relay or its pod went away, or the relay's connection to the
    /// destination failed).
    fn poll_data(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if self.unframer.ended() {
                return Poll::Ready(Ok(None));
            }
            if !self.pending.is_empty() {
                match self.unframer.next(&self.pending, max).map_err(invalid)? {
                    Piece::Data { skip, len } => {
                        self.pending.advance(skip);
                        return Poll::Ready(Ok(Some(self.pending.split_to(len))));
                    }
                    Piece::End { skip } => {
                        self.pending.advance(skip);
                        if !self.pending.is_empty() {
                            return Poll::Ready(Err(invalid(format!(
                                "{} bytes came after the end of the data",
                                self.pending.len()
                            ))));
                        }
                        return Poll::Ready(Ok(None));
                    }
                    Piece::More { skip } => self.pending.advance(skip),
                }
                continue;
            }
            match ready!(self.inner.poll_chunk(cx))? {
                Some(chunk) => self.pending = chunk,
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the relay's stream ended before the end of the destination's data",
                    )));
                }
            }
        }
    }

    /// The polling form of reading the next chunk of data: see [`Self::poll_data`].
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        self.poll_data(cx, usize::MAX)
    }
}

impl FramedWriter {
    /// The bytes in front of each message's data: the tunnel's channel byte, then the
    /// frame's header.
    pub(crate) fn headroom() -> usize {
        1 + FRAME_HEADER_LEN
    }

    /// Sends one frame: `frame` is [`headroom`](Self::headroom) bytes, then the data.
    ///
    /// # Errors
    ///
    /// The tunnel's error; `BrokenPipe` after [`finish`](Self::finish).
    pub(crate) async fn send(&mut self, mut frame: BytesMut) -> io::Result<()> {
        if self.ended {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let len = frame.len() - Self::headroom();
        frame[0] = DATA_CHANNEL;
        // The pump's reads are at most 128 KiB, far below u32::MAX.
        frame[1..Self::headroom()].copy_from_slice(&frame_header(len as u32));
        self.inner.send_frame(frame.freeze()).await
    }

    /// Sends the end frame: the relay shuts down its connection's write side to the
    /// destination. The tunnel stays open for the destination's answer.
    ///
    /// # Errors
    ///
    /// The tunnel's error.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_finish(cx)).await
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            let mut end = Vec::with_capacity(Self::headroom());
            end.push(DATA_CHANNEL);
            end.extend_from_slice(&frame_header(0));
            self.end_frame = Some(Bytes::from(end));
        }
        if self.end_frame.is_some() {
            ready!(self.inner.poll_send_frame(cx, &mut self.end_frame))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl AsyncRead for FramedReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(data) = ready!(self.get_mut().poll_data(cx, buf.remaining()))? {
            buf.put_slice(&data);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FramedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_WRITE);
        let mut frame = Vec::with_capacity(FramedWriter::headroom() + n);
        frame.push(DATA_CHANNEL);
        // At most MAX_WRITE.
        frame.extend_from_slice(&frame_header(n as u32));
        frame.extend_from_slice(&data[..n]);
        let mut frame = Some(Bytes::from(frame));
        // Not ready: the frame is dropped and nothing counts as written.
        ready!(this.inner.poll_send_frame(cx, &mut frame))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Sends the end frame (the tunnel stays open for the answer).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_finish(cx)
    }
}

impl AsyncRead for Framed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What a write left behind goes out before waiting for an answer, as on a tunnel.
        let _ = Pin::new(&mut this.write.inner).poll_flush(cx);
        Pin::new(&mut this.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Framed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}
