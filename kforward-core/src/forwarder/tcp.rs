//! [`TcpForwarder`]: local TCP listeners whose connections each get their own tunnel to a
//! ready pod of the target.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::relay::relay;
use super::{
    BoundPort, ForwardOptions, ForwardState, Forwarder, Stats, StatsSnapshot, remote_label,
};
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::resolve::Endpoints;

use crate::spec::{ForwardSpec, PortMapping};
use crate::tunnel::Tunnel;

/// Tunnels tried for one connection before it is given up.
const ATTEMPTS: usize = 4;
/// After a tunnel to a pod failed, how long to wait for the watch to drop that pod.
const RETRY_WAIT: Duration = Duration::from_secs(3);
/// How long a probe listens for an error from the pod's port after the tunnel opens.
const PROBE_LISTEN: Duration = Duration::from_millis(300);
/// How long a connection that met a 401 waits for the reloaded credentials.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// Resolves once the shared backend is no longer `old`.
async fn wait_for_swap(shared: &SharedBackend, old: &Arc<Backend>) {
    while Arc::ptr_eq(&current(shared), old) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    /// Stops accepting.
    stop: CancellationToken,
    /// Closes connections still open after the grace period.
    kill: CancellationToken,
    conns: TaskTracker,
    tasks: TaskTracker,
}

/// Forwards TCP to a pod, a selector's pods, a deployment's pods or a service's pods.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
/// use kforward_core::{Forwarder, TcpForwarder};
/// let spec = ForwardSpec::new(Target::Deployment { name: "web".into() }, [PortMapping::new(0, 8080)]);
/// let mut fwd = TcpForwarder::new(ctx, spec, Default::default());
/// let bound = fwd.start().await?;
/// # Ok(()) }
/// ```
pub struct TcpForwarder {
    ctx: KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    running: Option<Running>,
    backend: Option<SharedBackend>,
    reload: Arc<tokio::sync::Notify>,
}

/// The cluster side of a forward: the connection and the watched endpoints of each port.
/// It is swapped whole when the forward reconnects (new credentials, another context), while
/// the local listeners stay bound.
pub(crate) struct Backend {
    ctx: KubeContext,
    /// One per port mapping, in the spec's order.
    endpoints: Vec<Arc<Endpoints>>,
}

type SharedBackend = Arc<std::sync::RwLock<Arc<Backend>>>;

fn current(b: &SharedBackend) -> Arc<Backend> {
    b.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// What one connection handler needs.
struct ConnCtx {
    backend: SharedBackend,
    /// Which port mapping this listener serves.
    index: usize,
    namespace: String,
    label: String,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
    /// Asks the forward to reload the kubeconfig (after a 401).
    reload: Arc<tokio::sync::Notify>,
}

impl TcpForwarder {
    /// A forwarder for `spec`, not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let (state, _) = watch::channel(ForwardState::Idle);
        TcpForwarder {
            ctx,
            spec,
            opts,
            events,
            state,
            stats: Arc::new(Stats::default()),
            running: None,
            backend: None,
            reload: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The shared counters, readable while the forwarder is owned elsewhere.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The connection in use.
    pub fn context(&self) -> &KubeContext {
        &self.ctx
    }

    /// Resolves every port of the spec against `ctx`, waiting up to the pod-running
    /// timeout for a ready pod behind each.
    async fn resolve_all(&self, ctx: &KubeContext) -> Result<Backend> {
        let ns = self.namespace_for(ctx);
        let mut endpoints = Vec::new();
        for pm in &self.spec.ports {
            let eps = Endpoints::resolve(ctx, &ns, &self.spec.target, &pm.remote).await?;
            let mut rx = eps.subscribe();
            let waited = self.opts.pod_running_timeout;
            if tokio::time::timeout(waited, rx.wait_for(|v| !v.is_empty()))
                .await
                .is_err()
            {
                return Err(Error::NoReadyPod {
                    target: self.spec.target.to_string(),
                    namespace: ns,
                    waited,
                });
            }
            endpoints.push(Arc::new(eps));
        }
        Ok(Backend {
            ctx: ctx.clone(),
            endpoints,
        })
    }

    /// Points a running forward at `ctx` (new credentials, another context or cluster):
    /// resolves again and swaps the cluster side, while the local ports stay bound and open
    /// connections carry on. Without `ctx`, the kubeconfig is read again.
    ///
    /// # Errors
    ///
    /// When the kubeconfig cannot be loaded or the target cannot be resolved; the forward
    /// then keeps its previous cluster side.
    pub async fn reconnect(&mut self, ctx: Option<KubeContext>) -> Result<()> {
        let ctx = match ctx {
            Some(c) => c,
            None => KubeContext::load_fresh(&self.source()).await?,
        };
        let fresh = Arc::new(self.resolve_all(&ctx).await?);
        if let Some(b) = &self.backend {
            *b.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        self.ctx = ctx;
        Ok(())
    }

    /// Where this forward's kubeconfig comes from.
    pub fn source(&self) -> crate::KubeconfigSource {
        crate::KubeconfigSource {
            path: self.spec.kubeconfig.clone(),
            context: self.spec.context.clone(),
        }
    }

    /// A notification that fires when a connection met a 401 and the kubeconfig should be
    /// read again.
    pub fn reload_requested(&self) -> Arc<tokio::sync::Notify> {
        self.reload.clone()
    }

    /// Checks the forward end to end: the API server answers, and a port-forward to a ready
    /// pod of each port opens without an error from the pod's port.
    ///
    /// # Errors
    ///
    /// The first failure met.
    pub async fn probe(&self, timeout: Duration) -> Result<()> {
        let Some(b) = &self.backend else {
            return Err(Error::AlreadyStarted);
        };
        let b = current(b);
        let ns = self.namespace_for(&b.ctx);
        let server = b.ctx.server().to_string();
        let unreachable = |message: String| Error::Unreachable {
            server: server.clone(),
            message,
        };
        // Checks are shared with the context's other forwards (`single_flight`): 200
        // forwards of one service make one `/version` call and one tunnel per round.
        let probes = b.ctx.probes();
        probes
            .run(format!("version {server}"), || async {
                match tokio::time::timeout(timeout, b.ctx.client().apiserver_version()).await {
                    Err(_) => Err(unreachable(format!(
                        "no answer within {}s",
                        timeout.as_secs_f32()
                    ))),
                    Ok(Err(e)) => Err(Error::from_kube(e, &server, "get", "version", &ns, None)),
                    Ok(Ok(_)) => Ok(()),
                }
            })
            .await?;
        for eps in &b.endpoints {
            // No ready pod right now (a restart in progress) is the endpoint watch's
            // business, not a failure of the forward: connections wait for the next pod.
            let Some(ep) = eps.current().into_iter().next() else {
                continue;
            };
            let work = async {
                let mut t = Tunnel::open(&b.ctx, &ns, &ep.pod, ep.port).await?;
                t.ready().await?;
                // An error from the pod's port arrives right after the port prefix.
                let mut buf = [0u8; 1];
                match tokio::time::timeout(
                    PROBE_LISTEN,
                    tokio::io::AsyncReadExt::read(&mut t, &mut buf),
                )
                .await
                {
                    Ok(Err(e)) => Err(Error::Tunnel {
                        pod: ep.pod.clone(),
                        port: ep.port,
                        message: e.to_string(),
                    }),
                    _ => Ok(()),
                }
            };
            let key = format!("tunnel {ns}/{}:{}", ep.pod, ep.port);
            probes
                .run(key, || async {
                    tokio::time::timeout(timeout, work).await.map_err(|_| {
                        unreachable(format!(
                            "port-forward probe took longer than {}s",
                            timeout.as_secs_f32()
                        ))
                    })?
                })
                .await?;
        }
        Ok(())
    }

    /// The spec this forwarder serves.
    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<ForwardState> {
        self.state.subscribe()
    }

    fn namespace_for(&self, ctx: &KubeContext) -> String {
        self.spec
            .namespace
            .clone()
            .unwrap_or_else(|| ctx.default_namespace().to_string())
    }

    async fn bind(&self, pm: &PortMapping) -> Result<Vec<TcpListener>> {
        let mut port = pm.local;
        let mut out = Vec::new();
        let several = self.spec.addresses.len() > 1;
        for ip in &self.spec.addresses {
            let addr = SocketAddr::new(*ip, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    if port == 0 {
                        port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                    }
                    out.push(l);
                }
                // `localhost` means both loopbacks; like kubectl, one of them is enough.
                Err(e)
                    if several
                        && matches!(ip, IpAddr::V6(_))
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                        ) =>
                {
                    warn!(%addr, error = %e, "skipping an address that cannot be bound");
                }
                Err(source) => {
                    return Err(Error::BindLocal {
                        addr,
                        source,
                        suggestion: format!("0:{}", pm.remote),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn start_inner(&mut self) -> Result<Vec<BoundPort>> {
        let ns = self.namespace_for(&self.ctx);
        let label = self.spec.label();
        // Resolve every port first, so that nothing listens when the target is wrong.
        let backend: SharedBackend = Arc::new(std::sync::RwLock::new(Arc::new(
            self.resolve_all(&self.ctx).await?,
        )));
        let mut listeners = Vec::new();
        for (index, pm) in self.spec.ports.iter().enumerate() {
            for l in self.bind(pm).await? {
                listeners.push((index, pm.clone(), l));
            }
        }
        let running = Running {
            stop: CancellationToken::new(),
            kill: CancellationToken::new(),
            conns: TaskTracker::new(),
            tasks: TaskTracker::new(),
        };
        let mut bound = Vec::new();
        for (index, pm, listener) in listeners {
            let local_addr = listener.local_addr().map_err(|source| Error::BindLocal {
                addr: SocketAddr::from(([0, 0, 0, 0], pm.local)),
                source,
                suggestion: format!("0:{}", pm.remote),
            })?;
            let pod_port = current(&backend).endpoints[index]
                .current()
                .first()
                .map(|e| e.port);
            bound.push(BoundPort {
                local_addr,
                remote: remote_label(&pm.remote),
                pod_port,
            });
            let cc = Arc::new(ConnCtx {
                backend: backend.clone(),
                index,
                namespace: ns.clone(),
                label: label.clone(),
                opts: self.opts.clone(),
                events: self.events.clone(),
                stats: self.stats.clone(),
                reload: self.reload.clone(),
            });
            running.tasks.spawn(accept_loop(
                listener,
                cc,
                running.stop.clone(),
                running.kill.clone(),
                running.conns.clone(),
            ));
            let _ = self.events.send(Event::Ready {
                forward: label.clone(),
                local_addr,
                target: self.spec.target.to_string(),
                namespace: ns.clone(),
                remote_port: remote_label(&pm.remote),
                pod_port,
            });
        }
        // Tell subscribers when the pods behind each port change (across reconnects too).
        for (index, pm) in self.spec.ports.iter().enumerate() {
            let backend = backend.clone();
            let events = self.events.clone();
            let stop = running.stop.clone();
            let label = label.clone();
            let remote = remote_label(&pm.remote);
            running.tasks.spawn(async move {
                let mut last: Option<Vec<String>> = None;
                loop {
                    let mut rx = current(&backend).endpoints[index].subscribe();
                    let pods: Vec<String> = rx
                        .borrow_and_update()
                        .iter()
                        .map(|e| format!("{}:{}", e.pod, e.port))
                        .collect();
                    if last.as_ref() != Some(&pods) {
                        if last.is_some() {
                            let _ = events.send(Event::Endpoints {
                                forward: label.clone(),
                                remote_port: remote.clone(),
                                pods: pods.clone(),
                            });
                        }
                        last = Some(pods);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = rx.changed() => {}
                        // A reconnect swaps the endpoints: look again now and then.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            });
        }
        self.backend = Some(backend);
        self.running = Some(running);
        Ok(bound)
    }
}

async fn accept_loop(
    listener: TcpListener,
    cc: Arc<ConnCtx>,
    stop: CancellationToken,
    kill: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let cc = cc.clone();
        let kill = kill.clone();
        conns.spawn(
            async move {
                tokio::select! {
                    _ = kill.cancelled() => {}
                    _ = handle(sock, peer, &cc) => {}
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

async fn open_tunnel(cc: &ConnCtx) -> Result<Tunnel> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let backend = current(&cc.backend);
        let Some(ep) = backend.endpoints[cc.index]
            .pick(cc.opts.pod_running_timeout)
            .await
        else {
            return Err(Error::NoReadyPod {
                target: cc.label.clone(),
                namespace: cc.namespace.clone(),
                waited: cc.opts.pod_running_timeout,
            });
        };
        match Tunnel::open(&backend.ctx, &cc.namespace, &ep.pod, ep.port).await {
            Ok(t) => return Ok(t),
            // Expired credentials: have the kubeconfig read again (exec plugins re-run),
            // and wait briefly for the new cluster side.
            Err(e) if e.is_unauthorized() => {
                cc.reload.notify_one();
                let _ =
                    tokio::time::timeout(RELOAD_WAIT, wait_for_swap(&cc.backend, &backend)).await;
                last = Some(e);
            }
            // The pod may have just gone away: give the watch a moment to drop it, then
            // try the next one.
            Err(e) if e.is_retryable() => {
                debug!(pod = %ep.pod, error = %e, "tunnel failed; trying another pod");
                let mut rx = backend.endpoints[cc.index].subscribe();
                let _ = tokio::time::timeout(RETRY_WAIT, rx.wait_for(|v| !v.contains(&ep))).await;
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(Error::NoReadyPod {
        target: cc.label.clone(),
        namespace: cc.namespace.clone(),
        waited: cc.opts.pod_running_timeout,
    }))
}

async fn handle(sock: TcpStream, peer: SocketAddr, cc: &ConnCtx) {
    let _ = sock.set_nodelay(true);
    cc.stats.connections_total.fetch_add(1, Ordering::Relaxed);
    cc.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let tunnel = match open_tunnel(cc).await {
        Ok(t) => t,
        Err(e) => {
            cc.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            cc.stats.connections_failed.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "cannot reach a pod for this connection");
            let _ = cc.events.send(Event::Error {
                forward: cc.label.clone(),
                message: e.to_string(),
            });
            return;
        }
    };
    let pod = tunnel.pod().to_string();
    let _ = cc.events.send(Event::ConnectionOpened {
        forward: cc.label.clone(),
        peer,
        pod: pod.clone(),
        pod_port: tunnel.port(),
    });
    let carried = relay(sock, tunnel, &cc.stats, cc.opts.half_close_linger).await;
    cc.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    if let Some(e) = &carried.error {
        debug!(%pod, error = %e, "connection ended with an error");
    }
    let _ = cc.events.send(Event::ConnectionClosed {
        forward: cc.label.clone(),
        peer,
        bytes_out: carried.bytes_out,
        bytes_in: carried.bytes_in,
        error: carried.error.map(|e| e.to_string()),
    });
}

#[async_trait]
impl Forwarder for TcpForwarder {
    async fn start(&mut self) -> Result<Vec<BoundPort>> {
        if self.running.is_some() {
            return Err(Error::AlreadyStarted);
        }
        self.state.send_replace(ForwardState::Starting);
        match self.start_inner().await {
            Ok(b) => {
                self.state.send_replace(ForwardState::Ready);
                Ok(b)
            }
            Err(e) => {
                self.state.send_replace(ForwardState::Failed {
                    error: e.to_string(),
                });
                let _ = self.events.send(Event::Error {
                    forward: self.spec.label(),
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }

    async fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.stop.cancel();
        r.tasks.close();
        r.tasks.wait().await;
        r.conns.close();
        if tokio::time::timeout(self.opts.stop_grace, r.conns.wait())
            .await
            .is_err()
        {
            r.kill.cancel();
            r.conns.wait().await;
        }
        self.state.send_replace(ForwardState::Stopped);
        let _ = self.events.send(Event::Stopped {
            forward: self.spec.label(),
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

    fn label(&self) -> String {
        self.spec.label()
    }
}

impl Drop for TcpForwarder {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.stop.cancel();
            r.kill.cancel();
        }
    }
}
