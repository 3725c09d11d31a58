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
use tokio::sync::watch;
use tracing::{debug, warn};

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
    BoundPort, Dialer, Event, ForwardState, Forwarder, Shell, Stats, Tasks, probe_version,
};
use crate::no_proxy::NoProxy;
use crate::spec::{ForwardSpec, SocksSettings, Target, check_exposure};

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
    shell: Shell,
    running: Option<Running>,
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
            shell: Shell::default(),
            running: None,
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
            transport: spec.transport.unwrap_or(forward.transport),
            half_close_linger: forward.half_close_linger,
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
    /// [`SpecError::ExposedProxy`](crate::spec::SpecError::ExposedProxy) for a non-loopback
    /// listener without credentials.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.shell.set_state(ForwardState::Starting);
        let served = self.serve(listener).await;
        self.shell.started(&self.label, served).await?;
        shutdown.await;
        self.stop().await;
        Ok(())
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
                relay: self.shell.relay_pods().is_some(),
                pod_wait: self.opts.pod_wait,
            },
        );
        let relay = self.shell.relay_pods();
        Arc::new(Shared {
            opts: self.opts.clone(),
            label: self.label.clone(),
            namespace: namespace.clone(),
            auth: self.opts.auth.clone(),
            router,
            ways: Ways {
                dialer: Dialer::new(ctx.clone(), relay, self.opts.transport),
                namespace,
                connect_timeout: self.opts.connect_timeout,
            },
            events: self.shell.events(),
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
            self.shell
                .use_relay(self.opts.relay_pods.as_ref(), &self.ctx, r);
        }
        let shared = self.shared(&self.ctx, local_addr);
        // `auto` until the first pod stream found the cluster's transport.
        let transport = shared.ways.dialer.transport();
        let namespace = shared.namespace.clone();
        let (tx, rx) = watch::channel(shared.clone());
        let tasks = Tasks::new();
        // List services and pods now, so that the first client does not wait for it.
        tasks.tasks.spawn(async move {
            if let Err(e) = shared.router.catalog().ensure(&shared.namespace).await {
                warn!(error = %e, "cannot list the cluster's services and pods yet");
            }
        });
        let stats = self.shell.stats_handle();
        tasks.accept(listener, move |sock, peer| {
            serve(sock, peer, rx.borrow().clone(), stats.clone())
        });
        self.shell.emit(Event::Ready {
            forward: self.label.clone(),
            local_addr,
            target: "socks".into(),
            namespace,
            remote_port: "socks".into(),
            pod_port: None,
            transport,
        });
        self.running = Some(Running { tasks, shared: tx });
        Ok(local_addr)
    }
}

#[async_trait]
impl Forwarder for ForwardProxy {
    async fn start(&mut self) -> Result<Vec<BoundPort>> {
        self.shell.set_state(ForwardState::Starting);
        let bound = async {
            check_exposure(self.opts.listen, self.opts.auth.is_some())?;
            let addr = self.opts.listen;
            let listener =
                crate::forward::frontend::listen::listen_tcp(addr).map_err(|source| {
                    Error::BindLocal {
                        addr,
                        source,
                        suggestion: format!("{}:0", addr.ip()),
                    }
                })?;
            self.serve(listener).await
        };
        let bound = bound.await.map(|local_addr| {
            vec![BoundPort {
                local_addr,
                remote: "socks".into(),
                pod_port: None,
                transport: self.opts.transport,
            }]
        });
        self.shell.started(&self.label, bound).await
    }

    async fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        self.shell
            .stop(r.tasks, self.opts.stop_grace, &self.label)
            .await;
    }

    fn shell(&self) -> &Shell {
        &self.shell
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
        if let Some(pods) = self.shell.relay_pods()
            && pods.current().iter().any(|(n, _)| n == ns)
        {
            let relay = shared.ways.dialer.relay(ns)?;
            tokio::time::timeout(timeout, relay.probe(Duration::from_millis(300)))
                .await
                .map_err(|_| slow())??;
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
            if let Some(pods) = self.shell.relay_pods() {
                pods.set_context(ctx.clone());
            }
            r.shared.send_replace(fresh);
        }
        self.ctx = ctx;
        Ok(())
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.tasks.abort();
        }
    }
}

/// Tells the protocol by the first byte and serves it; anything else is closed. The
/// connection counts as open while it is served, with every byte it carries.
async fn serve(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>, stats: Arc<Stats>) {
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
