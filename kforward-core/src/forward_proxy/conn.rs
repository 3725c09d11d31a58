//! What the protocols share for one client's request: the running proxy's state, the
//! route and dial with their events, and carrying the bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tracing::{debug, info};

use super::auth::ProxyAuth;
use super::dial::{Dialer, Upstream, splice};
use super::error::ProxyError;
use super::event::ProxyEvent;
use super::options::ForwardProxyOptions;
use super::route::{Route, Router};
use super::socks::Address;

/// What every connection of one running proxy shares.
pub(crate) struct Shared {
    pub(crate) opts: ForwardProxyOptions,
    pub(crate) namespace: String,
    pub(crate) auth: Option<ProxyAuth>,
    pub(crate) router: Router,
    pub(crate) dialer: Dialer,
    pub(crate) events: broadcast::Sender<ProxyEvent>,
    pub(crate) local_addr: SocketAddr,
}

/// One client's request for one destination.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) protocol: &'static str,
    pub(crate) dest: Address,
}

impl Conn {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        peer: SocketAddr,
        protocol: &'static str,
        dest: Address,
    ) -> Conn {
        Conn {
            shared: shared.clone(),
            peer,
            protocol,
            dest,
        }
    }

    fn failed(&self, e: &ProxyError) {
        info!(peer = %self.peer, protocol = self.protocol, destination = %self.dest, error = %e, "cannot reach the destination");
        let _ = self.shared.events.send(ProxyEvent::ConnectionFailed {
            peer: self.peer,
            protocol: self.protocol,
            destination: self.dest.to_string(),
            message: e.to_string(),
        });
    }

    /// Routes and dials; reports the route, or the failure.
    pub(crate) async fn open(&self) -> Result<(Route, Box<dyn Upstream>), ProxyError> {
        let route = self.shared.router.route(&self.dest).await;
        let route = route.inspect_err(|e| self.failed(e))?;
        info!(peer = %self.peer, protocol = self.protocol, destination = %self.dest, %route, "connection");
        let _ = self.shared.events.send(ProxyEvent::ConnectionOpened {
            peer: self.peer,
            protocol: self.protocol,
            destination: self.dest.to_string(),
            route: route.clone(),
        });
        let up = self.shared.dialer.dial(&route, self.peer).await;
        let up = up.inspect_err(|e| self.failed(e))?;
        Ok((route, up))
    }

    /// Carries the bytes both ways and reports the end.
    pub(crate) async fn carry<C, U>(
        &self,
        route: &Route,
        client: &mut C,
        upstream: &mut U,
        early: u64,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        U: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let (out, inn, error) = splice(client, upstream).await;
        debug!(peer = %self.peer, destination = %self.dest, %route, bytes_out = out + early, bytes_in = inn, "connection closed");
        let _ = self.shared.events.send(ProxyEvent::ConnectionClosed {
            peer: self.peer,
            destination: self.dest.to_string(),
            bytes_out: out + early,
            bytes_in: inn,
            error: error.map(|e| e.to_string()),
        });
    }
}
