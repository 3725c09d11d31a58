//! The tunnel: the one module that speaks the port-forward protocol. It opens
//! `pods/portforward` through kube (auth, TLS and the WebSocket upgrade are kube's) and
//! exposes one port as `AsyncRead + AsyncWrite`.
//!
//! Framing (`v4.channel.k8s.io`, from `kubernetes/kubernetes`
//! `staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go` and the kubelet's
//! `.../cri/streaming/portforward/websocket.go`): each binary message is one channel byte
//! and data; port *i* uses channel `2i` for data and `2i+1` for errors; the server first
//! writes the port number (2 bytes, little endian) on both channels; error text closes the
//! port. We frame it ourselves on `kube::Client::connect` instead of using kube's
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
use futures::{Sink, Stream};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::KubeContext;
use crate::error::{Error, Result};

/// How long opening a tunnel (the HTTP upgrade) may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message written at once: large messages keep framing cheap at GiB rates.
const MAX_WRITE: usize = 256 * 1024;
/// Most bytes read from the connection at once: two TLS records' worth of plaintext.
const READ_BUFFER: usize = 32 * 1024;

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
#[pin_project::pin_project]
pub struct Tunnel {
    #[pin]
    ws: Ws,
    pod: String,
    port: u16,
    /// Data received and not yet read.
    pending: Bytes,
    /// Bytes of the port prefix still to skip on the data and error channels.
    data_prefix: usize,
    error_prefix: usize,
    /// The stream has ended (close frame or end of the connection).
    eof: bool,
    /// The local side shut its writes down.
    write_shut: bool,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("pod", &self.pod)
            .field("port", &self.port)
            .finish()
    }
}

/// Extracts the message from an error-channel payload: JSON
/// `{"closeConnection":..,"message":".."}` from current kubelets, plain text from older ones.
pub fn error_channel_message(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v["message"]
            .as_str()
            .map_or_else(|| text.to_string(), str::to_string),
        Err(_) => text.trim().to_string(),
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
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
        Ok(Tunnel {
            ws,
            pod: pod.to_string(),
            port,
            pending: Bytes::new(),
            data_prefix: 2,
            error_prefix: 2,
            eof: false,
            write_shut: false,
        })
    }

    /// The pod this tunnel reaches.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the port prefix on the data channel, which proves the stream is up, or
    /// for the error the pod's port answered with.
    ///
    /// # Errors
    ///
    /// [`Error::Tunnel`] with the error channel's message or the transport's error.
    pub async fn ready(&mut self) -> Result<()> {
        futures::future::poll_fn(|cx| Pin::new(&mut *self).poll_prefix(cx))
            .await
            .map_err(|e| Error::Tunnel {
                pod: self.pod.clone(),
                port: self.port,
                message: e.to_string(),
            })
    }

    fn poll_prefix(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self;
        while this.data_prefix > 0 && !this.eof && this.pending.is_empty() {
            ready!(this.as_mut().poll_frame(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the next frame into `pending`; `Ok` may leave `pending` empty.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let msg = match ready!(this.ws.as_mut().poll_next(cx)) {
            None => {
                *this.eof = true;
                return Poll::Ready(Ok(()));
            }
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                *this.eof = true;
                return Poll::Ready(Ok(()));
            }
            Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Binary(b) if !b.is_empty() => {
                let mut data = b.slice(1..);
                match b[0] {
                    0 => {
                        let skip = (*this.data_prefix).min(data.len());
                        *this.data_prefix -= skip;
                        data = data.slice(skip..);
                        *this.pending = data;
                    }
                    1 => {
                        let skip = (*this.error_prefix).min(data.len());
                        *this.error_prefix -= skip;
                        let text = &data[skip..];
                        if !text.is_empty() {
                            *this.eof = true;
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::ConnectionRefused,
                                error_channel_message(text),
                            )));
                        }
                    }
                    _ => {}
                }
            }
            Message::Close(_) => *this.eof = true,
            _ => {}
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Tunnel {
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
            ready!(self.as_mut().poll_frame(cx))?;
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        if *this.write_shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.ws.as_mut().poll_ready(cx)).map_err(io::Error::other)?;
        let n = data.len().min(MAX_WRITE);
        let mut frame = BytesMut::with_capacity(n + 1);
        frame.put_u8(0);
        frame.put_slice(&data[..n]);
        this.ws
            .as_mut()
            .start_send(Message::Binary(frame.freeze()))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().ws.poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No half-close in this protocol (see the module docs): flush, then keep reading.
        let mut this = self.project();
        ready!(this.ws.as_mut().poll_flush(cx)).map_err(io::Error::other)?;
        *this.write_shut = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_channel_payloads() {
        assert_eq!(
            error_channel_message(br#"{"closeConnection":true,"message":"connection refused"}"#),
            "connection refused"
        );
        assert_eq!(
            error_channel_message(b"error forwarding port 80 to pod x, uid : refused\n"),
            "error forwarding port 80 to pod x, uid : refused"
        );
    }
}
