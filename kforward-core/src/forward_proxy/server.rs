//! The forward proxy's accept loop: one local port where the first byte of each
//! connection tells SOCKS5 (0x05), SOCKS4/4a (0x04) and HTTP (a method's capital letter)
//! apart, and what every protocol shares: routing, dialing, events.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::auth::ProxyAuth;
use super::catalog::Catalog;
use super::dial::{Dialer, Upstream, splice};
use super::error::ProxyError;
use super::event::ProxyEvent;
use super::route::{Route, RouteOptions, Router};
use super::socks::{Address, SOCKS4, SOCKS5};
use super::{http, socks_conn};
use crate::client::KubeContext;
use crate::no_proxy::NoProxy;
use crate::relay::{RelayOptions, RelayPods};

/// Pause after an accept error (out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Settings of a [`ForwardProxy`].
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::ForwardProxyOptions;
/// use kforward_core::no_proxy::NoProxy;
/// let o = ForwardProxyOptions {
///     namespace: Some("demo".into()),
///     direct: NoProxy::parse("localhost, 192.168.0.0/16"),
///     relay: None, // like --no-relay
///     ..Default::default()
/// };
/// assert_eq!(o.cluster_domain, "cluster.local");
/// ```
#[derive(Debug, Clone)]
pub struct ForwardProxyOptions {
    /// The namespace of bare service names and of the relay pod (default: the context's).
    pub namespace: Option<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Destinations to connect to from this machine (`NO_PROXY` syntax).
    pub direct: NoProxy,
    /// The relay's settings; `None` refuses what would need the relay.
    pub relay: Option<RelayOptions>,
    /// Credentials clients must give; `None`: none (only allowed on loopback).
    pub auth: Option<ProxyAuth>,
    /// How long a client may take to say where it goes.
    pub handshake_timeout: Duration,
    /// How long a direct connection may take.
    pub connect_timeout: Duration,
    /// How long to wait for a ready pod of a service.
    pub pod_wait: Duration,
}

impl Default for ForwardProxyOptions {
    fn default() -> Self {
        ForwardProxyOptions {
            namespace: None,
            cluster_domain: "cluster.local".into(),
            direct: NoProxy::default(),
            relay: Some(RelayOptions::default()),
            auth: None,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            pod_wait: Duration::from_secs(10),
        }
    }
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A non-loopback address without credentials.
    #[error(
        "refusing to listen on {addr} without credentials: anyone who can reach that address could use \
         the proxy to reach the cluster with your permissions; set --auth USER:PASS (or \
         KFORWARD_PROXY_AUTH), or listen on a loopback address such as 127.0.0.1"
    )]
    Exposed {
        /// The address.
        addr: SocketAddr,
    },
    /// The listener's address cannot be read.
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
}

/// Refuses a non-loopback `addr` without credentials.
///
/// # Errors
///
/// [`StartError::Exposed`].
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::check_exposure;
/// assert!(check_exposure("127.0.0.1:1080".parse().unwrap(), false).is_ok());
/// assert!(check_exposure("0.0.0.0:1080".parse().unwrap(), false).is_err());
/// assert!(check_exposure("0.0.0.0:1080".parse().unwrap(), true).is_ok());
/// ```
pub fn check_exposure(addr: SocketAddr, auth: bool) -> Result<(), StartError> {
    if addr.ip().is_loopback() || auth {
        Ok(())
    } else {
        Err(StartError::Exposed { addr })
    }
}

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

/// A forward proxy into the cluster on one local port: SOCKS5, SOCKS4/4a, HTTP CONNECT,
/// plain HTTP and a PAC file, routing each connection by its destination.
///
/// # Example
///
/// This runs for real, against the testkit's simulated cluster:
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use kforward_core::forward_proxy::{ForwardProxy, ForwardProxyOptions};
/// use kforward_core::{KubeContext, KubeconfigSource};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let cluster = kforward_testkit::Cluster::demo().await.unwrap();
/// let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path())).await?;
/// let opts = ForwardProxyOptions { namespace: Some("demo".into()), ..Default::default() };
/// let proxy = ForwardProxy::new(ctx, opts);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(async move { proxy.run(listener, async { let _ = stopped.await; }).await });
///
/// let mut c = tokio::net::TcpStream::connect(addr).await?;
/// c.write_all(b"GET http://web/ HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").await?;
/// let mut reply = String::new();
/// c.read_to_string(&mut reply).await?;
/// assert!(reply.contains("web-"), "a web pod answered: {reply}");
///
/// let _ = stop.send(());
/// running.await??;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// # }).unwrap();
/// ```
pub struct ForwardProxy {
    ctx: KubeContext,
    opts: ForwardProxyOptions,
    events: broadcast::Sender<ProxyEvent>,
}

impl std::fmt::Debug for ForwardProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl ForwardProxy {
    /// A proxy into the cluster of `ctx`.
    pub fn new(ctx: KubeContext, opts: ForwardProxyOptions) -> ForwardProxy {
        let (events, _) = broadcast::channel(1024);
        ForwardProxy { ctx, opts, events }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProxyEvent> {
        self.events.subscribe()
    }

    /// Serves clients on `listener` until `shutdown` resolves, then closes every
    /// connection and deletes the relay pod it made.
    ///
    /// # Errors
    ///
    /// [`StartError::Exposed`] for a non-loopback listener without credentials.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let local_addr = listener.local_addr().map_err(StartError::Listener)?;
        check_exposure(local_addr, self.opts.auth.is_some())?;
        let namespace = self
            .opts
            .namespace
            .clone()
            .unwrap_or_else(|| self.ctx.default_namespace().to_string());
        let catalog = Catalog::new(self.ctx.clone());
        let router = Router::new(
            self.ctx.clone(),
            catalog.clone(),
            RouteOptions {
                namespace: namespace.clone(),
                cluster_domain: self.opts.cluster_domain.clone(),
                direct: self.opts.direct.clone(),
                relay: self.opts.relay.is_some(),
                pod_wait: self.opts.pod_wait,
            },
        );
        let pods = self
            .opts
            .relay
            .clone()
            .map(|r| RelayPods::new(self.ctx.clone(), r));
        let dialer = Dialer::new(
            self.ctx.clone(),
            pods.clone().map(|p| (p, namespace.clone())),
            self.opts.connect_timeout,
        );
        let shared = Arc::new(Shared {
            opts: self.opts.clone(),
            namespace: namespace.clone(),
            auth: self.opts.auth.clone(),
            router,
            dialer,
            events: self.events.clone(),
            local_addr,
        });
        // List services and pods now, so the first client does not wait for it.
        let mut conns = JoinSet::new();
        {
            let (catalog, ns) = (catalog.clone(), namespace.clone());
            conns.spawn(async move {
                if let Err(e) = catalog.ensure(&ns).await {
                    warn!(error = %e, "cannot list the cluster's services and pods yet");
                }
            });
        }
        let _ = self.events.send(ProxyEvent::Ready {
            forward: format!("socks {local_addr}"),
            local_addr,
            namespace,
            pac_url: format!("http://{local_addr}/proxy.pac"),
        });
        tokio::pin!(shutdown);
        loop {
            let (sock, peer) = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting a connection failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let shared = shared.clone();
            conns.spawn(serve(sock, peer, shared).instrument(info_span!("client", %peer)));
        }
        conns.shutdown().await;
        if let Some(p) = pods {
            p.delete_all().await;
        }
        Ok(())
    }
}

/// Tells the protocol by the first byte and serves it; anything else is closed.
async fn serve(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = sock.set_nodelay(true);
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(shared.opts.handshake_timeout, sock.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) => {}
        _ => return,
    }
    match first[0] {
        SOCKS5 => socks_conn::serve5(sock, peer, &shared).await,
        SOCKS4 => socks_conn::serve4(sock, peer, &shared).await,
        b'A'..=b'Z' => http::serve(sock, peer, shared).await,
        other => debug!(%peer, first_byte = other, "not SOCKS or HTTP; closing"),
    }
}
