//! The forward proxy's accept loop: one local port where the first byte of each
//! connection tells SOCKS5 (0x05), SOCKS4/4a (0x04) and HTTP (a method's capital letter)
//! apart, and what every protocol shares: routing, dialing, events.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use super::catalog::Catalog;
use super::conn::Shared;
use super::dial::Dialer;
use super::event::ProxyEvent;
use super::options::ForwardProxyOptions;
use super::route::{RouteOptions, Router};
use super::socks::{SOCKS4, SOCKS5};
use super::{http, socks_conn};
use crate::client::KubeContext;
use crate::relay::RelayPods;

/// Pause after an accept error (out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
