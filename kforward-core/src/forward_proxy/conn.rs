//! What the protocols share for one client's request: the running proxy's state, the
//! route and stream with their events, and carrying the bytes, counted in the forward's
//! counters as they pass (the same [`Stats`](crate::Stats) as every forward's).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::broadcast;
use tracing::info;

use super::auth::ProxyAuth;
use super::dial::{Upstream, Ways};
use super::error::ProxyError;
use super::options::ForwardProxyOptions;
use super::route::{Route, Router};
use super::socks::Address;
use crate::forward::{Connection, Event};

/// What every connection of one running proxy shares; replaced whole when the proxy
/// reconnects (new credentials, another context), while connections keep theirs.
pub(crate) struct Shared {
    pub(crate) opts: ForwardProxyOptions,
    /// The forward's label, in its events.
    pub(crate) label: String,
    pub(crate) namespace: String,
    pub(crate) auth: Option<ProxyAuth>,
    pub(crate) router: Router,
    pub(crate) ways: Ways,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) local_addr: SocketAddr,
}

impl Shared {
    /// Publishes `event` (nobody listening is fine).
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// One client's request for one destination.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) protocol: &'static str,
    pub(crate) dest: Address,
    /// The client connection's counters.
    pub(crate) counted: Arc<Connection>,
}

impl Conn {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        counted: &Arc<Connection>,
        peer: SocketAddr,
        protocol: &'static str,
        dest: Address,
    ) -> Conn {
        Conn {
            shared: shared.clone(),
            peer,
            protocol,
            dest,
            counted: counted.clone(),
        }
    }

    fn failed(&self, e: &ProxyError) {
        info!(peer = %self.peer, protocol = self.protocol, destination = %self.dest, error = %e, "cannot reach the destination");
        self.counted.failed_request();
        self.shared.emit(Event::Error {
            forward: self.shared.label.clone(),
            message: format!("{} ({}, from {}): {e}", self.dest, self.protocol, self.peer),
        });
    }

    /// Routes and opens a stream, its bytes counted; reports the route, or the failure.
    pub(crate) async fn open(&self) -> Result<Counted<Box<dyn Upstream>>, ProxyError> {
        let route = self.shared.router.route(&self.dest).await;
        let route = route.inspect_err(|e| self.failed(e))?;
        info!(peer = %self.peer, protocol = self.protocol, destination = %self.dest, %route, "connection");
        self.routed(route.clone());
        let up = self.shared.ways.open(&route, self.peer).await;
        let up = up.inspect_err(|e| self.failed(e))?;
        Ok(Counted {
            inner: up,
            counted: self.counted.clone(),
        })
    }

    /// Publishes where this request goes.
    pub(crate) fn routed(&self, route: Route) {
        self.shared.emit(Event::Routed {
            forward: self.shared.label.clone(),
            peer: self.peer,
            protocol: self.protocol.to_string(),
            destination: self.dest.to_string(),
            route,
        });
    }
}

/// Bytes read at once each way while splicing: large enough that a bulk transfer through a
/// port-forward goes in few WebSocket messages, small enough for a thousand connections.
const SPLICE_BUF: usize = 64 * 1024;

/// Carries bytes both ways between the client and the upstream until both ends are done
/// (a half-close passes on); returns the error that ended it, if any.
pub(crate) async fn splice<C, U>(client: &mut C, upstream: &mut U) -> Option<std::io::Error>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(client, upstream, SPLICE_BUF, SPLICE_BUF)
        .await
        .err()
}

/// An upstream whose bytes are counted as they pass: what is written to it came from the
/// client, what is read from it goes to the client.
pub(crate) struct Counted<U> {
    inner: U,
    counted: Arc<Connection>,
}

impl<U: AsyncRead + Unpin> AsyncRead for Counted<U> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.counted.received(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<U: AsyncWrite + Unpin> AsyncWrite for Counted<U> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.counted.sent(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
