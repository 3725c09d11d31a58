//! The forward proxy as a front end of the forwarding pipeline: one local port where the
//! first byte of each connection tells SOCKS5 (0x05), SOCKS4/4a (0x04) and HTTP (a
//! method's capital letter) apart. It is a [`Forwarder`] like every forward: the
//! supervisor runs it (state, events, probes, reconnects), its connections count in the
//! same [`Stats`], and its pod and relay streams come from the pipeline's dialer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::catalog::Catalog;
use super::conn::Shared;
use super::dial::Ways;
use super::options::ForwardProxyOptions;
use super::route::{RouteOptions, Router};
use super::socks::{SOCKS4, SOCKS5};
use super::{http, socks_conn};
use crate::client::{KubeContext, KubeconfigSource};
use crate::error::{Error, Result};
use crate::forward::ForwardOptions;
use crate::forward::{
    BoundPort, Dialer, Event, ForwardState, Forwarder, Stats, StatsSnapshot, Tasks, probe_version,
};
use crate::no_proxy::NoProxy;
use crate::relay::RelayPods;
use crate::spec::{ForwardSpec, SocksSettings, Target, check_exposure};

/// Pause after an accept error (out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Events buffered for a slow subscriber (one per connection and its end).
const EVENT_BUFFER: usize = 1024;

/// What a started proxy holds.
struct Running {
    tasks: Tasks,
    shared: watch::Sender<Arc<Shared>>,
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
/// use kforward_core::{Forwarder, KubeContext, KubeconfigSource};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let cluster = kforward_testkit::Cluster::demo().await.unwrap();
/// let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path())).await?;
/// let opts = ForwardProxyOptions {
///     namespace: Some("demo".into()),
///     listen: "127.0.0.1:0".parse()?,
///     ..Default::default()
/// };
/// let mut proxy = ForwardProxy::new(ctx, opts);
/// let addr = proxy.start().await?[0].local_addr;
///
/// let mut c = tokio::net::TcpStream::connect(addr).await?;
/// c.write_all(b"GET http://web/ HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").await?;
/// let mut reply = String::new();
/// c.read_to_string(&mut reply).await?;
/// assert!(reply.contains("web-"), "a web pod answered: {reply}");
/// assert_eq!(proxy.stats().connections_total, 1);
///
/// proxy.stop().await;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// # }).unwrap();
/// ```
pub struct ForwardProxy {
    ctx: KubeContext,
    opts: ForwardProxyOptions,
    label: String,
    source: KubeconfigSource,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    reload: Arc<Notify>,
    running: Option<Running>,
    /// The relay pods in use, and whether this proxy owns (and so deletes) them.
    relay: Option<(Arc<RelayPods>, bool)>,
}

impl std::fmt::Debug for ForwardProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("label", &self.label)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl ForwardProxy {
    /// A proxy into the cluster of `ctx`, not started.
    pub fn new(ctx: KubeContext, opts: ForwardProxyOptions) -> ForwardProxy {
        ForwardProxy {
            ctx,
            label: "socks".into(),
            opts,
            source: KubeconfigSource::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            state: watch::channel(ForwardState::Idle).0,
            stats: Arc::new(Stats::default()),
            reload: Arc::new(Notify::new()),
            running: None,
            relay: None,
        }
    }

    /// The proxy of a [`Target::Socks`] spec, with a forward's settings (its ready-pod
    /// wait, stop grace and relay pods; shared relay pods when a supervisor runs it). A
    /// spec of another target gives a proxy with default settings on the spec's address.
    pub fn from_spec(ctx: KubeContext, spec: &ForwardSpec, forward: &ForwardOptions) -> Self {
        let settings = match &spec.target {
            Target::Socks(s) => s.clone(),
            _ => SocksSettings::default(),
        };
        let opts = ForwardProxyOptions {
            listen: spec
                .listen_addr()
                .unwrap_or_else(|| ForwardProxyOptions::default().listen),
            namespace: spec.namespace.clone(),
            cluster_domain: settings.cluster_domain,
            direct: NoProxy::parse(&settings.direct),
            relay: settings.relay.then(|| forward.relay.clone()),
            relay_pods: forward.relay_pods.clone(),
            auth: settings.auth,
            pod_wait: forward.pod_running_timeout,
            stop_grace: forward.stop_grace,
            ..ForwardProxyOptions::default()
        };
        ForwardProxy::new(ctx, opts)
            .with_label(spec.label())
            .with_source(KubeconfigSource {
                path: spec.kubeconfig.clone(),
                context: spec.context.clone(),
            })
    }

    /// The same proxy with another label (in events and statuses).
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The same proxy, reading `source` again when it reconnects without a context.
    #[must_use]
    pub fn with_source(mut self, source: KubeconfigSource) -> Self {
        self.source = source;
        self
    }

    /// Serves clients on `listener` until `shutdown` resolves, then closes every
    /// connection and deletes the relay pod it made: for an embedder that binds its own
    /// listener.
    ///
    /// # Errors
    ///
    /// [`SpecError::ExposedProxy`] for a non-loopback listener without credentials.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.state.send_replace(ForwardState::Starting);
        if let Err(e) = self.serve(listener).await {
            self.fail(&e).await;
            return Err(e);
        }
        self.state.send_replace(ForwardState::Ready);
        shutdown.await;
        self.stop().await;
        Ok(())
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn fail(&mut self, e: &Error) {
        self.release_relay().await;
        self.state.send_replace(ForwardState::Failed {
            error: e.to_string(),
        });
        self.emit(Event::Error {
            forward: self.label.clone(),
            message: e.to_string(),
        });
    }

    fn namespace(&self, ctx: &KubeContext) -> String {
        self.opts
            .namespace
            .clone()
            .unwrap_or_else(|| ctx.default_namespace().to_string())
    }

    /// The cluster side for `ctx`: catalog, router and dialer.
    fn shared(&self, ctx: &KubeContext, local_addr: SocketAddr) -> Arc<Shared> {
        let namespace = self.namespace(ctx);
        let catalog = Catalog::new(ctx.clone());
        let router = Router::new(
            ctx.clone(),
            catalog,
            RouteOptions {
                namespace: namespace.clone(),
                cluster_domain: self.opts.cluster_domain.clone(),
                direct: self.opts.direct.clone(),
                relay: self.relay.is_some(),
                pod_wait: self.opts.pod_wait,
            },
        );
        let relay = self.relay.as_ref().map(|(p, _)| p.clone());
        Arc::new(Shared {
            opts: self.opts.clone(),
            label: self.label.clone(),
            namespace: namespace.clone(),
            auth: self.opts.auth.clone(),
            router,
            ways: Ways {
                dialer: Dialer::new(ctx.clone(), relay),
                namespace,
                connect_timeout: self.opts.connect_timeout,
            },
            events: self.events.clone(),
            local_addr,
        })
    }

    /// Starts serving `listener`.
    async fn serve(&mut self, listener: TcpListener) -> Result<SocketAddr> {
        if self.running.is_some() {
            return Err(Error::AlreadyStarted);
        }
        let local_addr = listener.local_addr().map_err(|source| Error::BindLocal {
            addr: self.opts.listen,
            source,
            suggestion: "127.0.0.1:0".into(),
        })?;
        check_exposure(local_addr, self.opts.auth.is_some())?;
        if let Some(r) = &self.opts.relay {
            self.relay = Some(match &self.opts.relay_pods {
                Some(shared) => (shared.0.clone(), false),
                None => (RelayPods::new(self.ctx.clone(), r.clone()), true),
            });
        }
        let shared = self.shared(&self.ctx, local_addr);
        let namespace = shared.namespace.clone();
        let (tx, rx) = watch::channel(shared.clone());
        let tasks = Tasks::new();
        // List services and pods now, so that the first client does not wait for it.
        tasks.tasks.spawn(async move {
            if let Err(e) = shared.router.catalog().ensure(&shared.namespace).await {
                warn!(error = %e, "cannot list the cluster's services and pods yet");
            }
        });
        tasks.tasks.spawn(accept_loop(
            listener,
            rx,
            self.stats.clone(),
            tasks.stop.clone(),
            tasks.kill.clone(),
            tasks.conns.clone(),
        ));
        self.emit(Event::Ready {
            forward: self.label.clone(),
            local_addr,
            target: "socks".into(),
            namespace,
            remote_port: "socks".into(),
            pod_port: None,
        });
        self.running = Some(Running { tasks, shared: tx });
        Ok(local_addr)
    }

    /// Deletes the relay pods this proxy owns.
    async fn release_relay(&mut self) {
        if let Some((pods, true)) = self.relay.take() {
            pods.delete_all().await;
        }
    }
}

#[async_trait]
impl Forwarder for ForwardProxy {
    async fn start(&mut self) -> Result<Vec<BoundPort>> {
        self.state.send_replace(ForwardState::Starting);
        let bound = async {
            check_exposure(self.opts.listen, self.opts.auth.is_some())?;
            let addr = self.opts.listen;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::BindLocal {
                    addr,
                    source,
                    suggestion: format!("{}:0", addr.ip()),
                })?;
            self.serve(listener).await
        };
        match bound.await {
            Ok(local_addr) => {
                self.state.send_replace(ForwardState::Ready);
                Ok(vec![BoundPort {
                    local_addr,
                    remote: "socks".into(),
                    pod_port: None,
                }])
            }
            Err(e) => {
                self.fail(&e).await;
                Err(e)
            }
        }
    }

    async fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.tasks.drain(self.opts.stop_grace).await;
        self.release_relay().await;
        self.state.send_replace(ForwardState::Stopped);
        self.emit(Event::Stopped {
            forward: self.label.clone(),
        });
    }

    fn state(&self) -> ForwardState {
        self.state.borrow().clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn context(&self) -> &KubeContext {
        &self.ctx
    }

    /// The API server answers, the services and pods of the namespace can be listed, and
    /// the relay pod (once one was made) takes a stream.
    async fn probe(&self, timeout: Duration) -> Result<()> {
        let Some(r) = &self.running else {
            return Err(Error::NotStarted);
        };
        let shared = r.shared.borrow().clone();
        let ns = &shared.namespace;
        probe_version(&self.ctx, ns, timeout).await?;
        let slow = || Error::Unreachable {
            server: self.ctx.server().to_string(),
            message: format!("listing services took longer than {}s", timeout.as_secs()),
        };
        tokio::time::timeout(timeout, shared.router.catalog().ensure(ns))
            .await
            .map_err(|_| slow())??;
        if let Some((pods, _)) = &self.relay {
            if pods.current().iter().any(|(n, _)| n == ns) {
                let relay = shared.ways.dialer.relay(ns)?;
                tokio::time::timeout(timeout, relay.probe(Duration::from_millis(300)))
                    .await
                    .map_err(|_| slow())??;
            }
        }
        Ok(())
    }

    async fn reconnect(&mut self, ctx: Option<KubeContext>) -> Result<()> {
        let ctx = match ctx {
            Some(c) => c,
            None => KubeContext::load_fresh(&self.source).await?,
        };
        if let Some(r) = &self.running {
            let local_addr = r.shared.borrow().local_addr;
            let fresh = self.shared(&ctx, local_addr);
            fresh.router.catalog().ensure(&fresh.namespace).await?;
            if let Some((pods, _)) = &self.relay {
                pods.set_context(ctx.clone());
            }
            r.shared.send_replace(fresh);
        }
        self.ctx = ctx;
        Ok(())
    }

    fn reload_requested(&self) -> Arc<Notify> {
        self.reload.clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.tasks.abort();
        }
    }
}

/// Accepts clients until `stop`; each runs in `conns` until it ends or `kill`.
async fn accept_loop(
    listener: TcpListener,
    shared: watch::Receiver<Arc<Shared>>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    kill: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let shared = shared.borrow().clone();
        let (stats, kill) = (stats.clone(), kill.clone());
        conns.spawn(
            async move {
                tokio::select! {
                    () = kill.cancelled() => {}
                    () = serve(sock, peer, shared, &stats) => {}
                }
            }
            .instrument(info_span!("client", %peer)),
        );
    }
}

/// Tells the protocol by the first byte and serves it; anything else is closed. The
/// connection counts as open while it is served, with every byte it carries.
async fn serve(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>, stats: &Arc<Stats>) {
    let _ = sock.set_nodelay(true);
    let counted = Arc::new(stats.open());
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(shared.opts.handshake_timeout, sock.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) => {}
        _ => return,
    }
    let error = match first[0] {
        SOCKS5 => socks_conn::serve5(sock, peer, &shared, &counted).await,
        SOCKS4 => socks_conn::serve4(sock, peer, &shared, &counted).await,
        b'A'..=b'Z' => http::serve(sock, peer, shared.clone(), &counted).await,
        other => {
            debug!(%peer, first_byte = other, "not SOCKS or HTTP; closing");
            counted.failed();
            return;
        }
    };
    counted.close();
    shared.emit(Event::ConnectionClosed {
        forward: shared.label.clone(),
        peer,
        bytes_out: counted.bytes_out(),
        bytes_in: counted.bytes_in(),
        error: error.map(|e| e.to_string()),
    });
}
