//! What the protocols share for one client's request: the running proxy's state, the
//! route and stream with their events, and carrying the bytes, counted in the forward's
//! counters as they pass (the same [`Stats`](crate::Stats) as every forward's).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::broadcast;
use tracing::{debug, info};

use super::auth::ProxyAuth;
use super::dial::{Opened, Upstream, Ways};
use super::error::ProxyError;
use super::options::ForwardProxyOptions;
use super::route::{Route, Router};
use super::socks::Address;
use crate::forward::{Connection, Event, pump};

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

    /// Routes and opens a stream; reports the route, or the failure. A stream to a pod of
    /// a service that fails (refused, the pod gone) is tried once more on another ready
    /// pod, as a forward does.
    pub(crate) async fn open(&self) -> Result<Opened, ProxyError> {
        let router = &self.shared.router;
        let route = router.route(&self.dest).await;
        let route = route.inspect_err(|e| self.failed(e))?;
        let e = match self.open_along(route.clone()).await {
            Ok(up) => return Ok(up),
            Err(e) => e,
        };
        let next = match e.another_pod_may_do() {
            Some(gone) => router.another_pod(&self.dest, &route, gone).await,
            None => None,
        };
        let Some(next) = next else {
            self.failed(&e);
            return Err(e);
        };
        debug!(peer = %self.peer, destination = %self.dest, failed = %route, error = %e, "trying another pod");
        let up = self.open_along(next).await;
        up.inspect_err(|e| self.failed(e))
    }

    async fn open_along(&self, route: Route) -> Result<Opened, ProxyError> {
        info!(peer = %self.peer, protocol = self.protocol, destination = %self.dest, %route, "connection");
        self.routed(route.clone());
        self.shared.ways.open(&route, self.peer).await
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

/// Bytes read at once each way between a client and a TCP connection from this machine.
const SPLICE_BUF: usize = 64 * 1024;

/// Carries bytes both ways between the client (its read and write halves) and `upstream`
/// until both ends are done, sending `early` (what the client sent behind its request)
/// first; returns the error that ended it, if any. A stream through the cluster goes
/// through the forwarding pipeline's [`pump`], so half-close, the linger after it and the
/// counters behave exactly as for a forward's connection; a TCP connection from this
/// machine passes half-closes on by itself.
pub(crate) async fn carry<R, W>(
    client: (R, W),
    upstream: Opened,
    early: &[u8],
    counted: &Arc<Connection>,
    linger: Duration,
) -> Option<std::io::Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match upstream {
        Opened::Stream(s) => {
            let (reader, mut writer) = s.into_split();
            if !early.is_empty() {
                if let Err(e) = writer.write_all(early).await {
                    return Some(e);
                }
                counted.sent(early.len());
            }
            pump(client, (reader, writer), counted, linger).await
        }
        Opened::Tcp(tcp) => {
            let mut up = Counted {
                inner: tcp,
                counted: counted.clone(),
            };
            if !early.is_empty()
                && let Err(e) = up.write_all(early).await
            {
                return Some(e);
            }
            let (r, w) = client;
            let mut client = tokio::io::join(r, w);
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, SPLICE_BUF, SPLICE_BUF)
                .await
                .err()
        }
    }
}

/// An upstream whose bytes are counted as they pass: what is written to it came from the
/// client, what is read from it goes to the client.
pub(crate) struct Counted<U> {
    inner: U,
    counted: Arc<Connection>,
}

impl Counted<Box<dyn Upstream>> {
    /// `opened` as one byte stream whose bytes count for `counted`.
    pub(crate) fn new(opened: Opened, counted: &Arc<Connection>) -> Self {
        Counted {
            inner: opened.into_upstream(),
            counted: counted.clone(),
        }
    }
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
