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

/// Events buffered for slow subscribers before they start missing some.
const EVENT_BUFFER: usize = 1024;
/// Tunnels tried for one connection before it is given up.
const ATTEMPTS: usize = 3;

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
}

/// What one connection handler needs.
struct ConnCtx {
    ctx: KubeContext,
    namespace: String,
    label: String,
    endpoints: Arc<Endpoints>,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
}

impl TcpForwarder {
    /// A forwarder for `spec`, not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (state, _) = watch::channel(ForwardState::Idle);
        TcpForwarder {
            ctx,
            spec,
            opts,
            events,
            state,
            stats: Arc::new(Stats::default()),
            running: None,
        }
    }

    /// The spec this forwarder serves.
    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<ForwardState> {
        self.state.subscribe()
    }

    fn namespace(&self) -> String {
        self.spec
            .namespace
            .clone()
            .unwrap_or_else(|| self.ctx.default_namespace().to_string())
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
        let ns = self.namespace();
        let label = self.spec.label();
        // Resolve every port first, so that nothing listens when the target is wrong.
        let mut resolved = Vec::new();
        for pm in &self.spec.ports {
            let eps = Endpoints::resolve(&self.ctx, &ns, &self.spec.target, &pm.remote).await?;
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
            resolved.push((pm.clone(), Arc::new(eps)));
        }
        let mut listeners = Vec::new();
        for (pm, eps) in &resolved {
            for l in self.bind(pm).await? {
                listeners.push((pm.clone(), eps.clone(), l));
            }
        }
        let running = Running {
            stop: CancellationToken::new(),
            kill: CancellationToken::new(),
            conns: TaskTracker::new(),
            tasks: TaskTracker::new(),
        };
        let mut bound = Vec::new();
        for (pm, eps, listener) in listeners {
            let local_addr = listener.local_addr().map_err(|source| Error::BindLocal {
                addr: SocketAddr::from(([0, 0, 0, 0], pm.local)),
                source,
                suggestion: format!("0:{}", pm.remote),
            })?;
            let pod_port = eps.current().first().map(|e| e.port);
            bound.push(BoundPort {
                local_addr,
                remote: remote_label(&pm.remote),
                pod_port,
            });
            let cc = Arc::new(ConnCtx {
                ctx: self.ctx.clone(),
                namespace: ns.clone(),
                label: label.clone(),
                endpoints: eps.clone(),
                opts: self.opts.clone(),
                events: self.events.clone(),
                stats: self.stats.clone(),
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
        // Tell subscribers when the pods behind each port change.
        for (pm, eps) in resolved {
            let mut rx = eps.subscribe();
            let events = self.events.clone();
            let stop = running.stop.clone();
            let label = label.clone();
            running.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = rx.changed() => if r.is_err() { return },
                    }
                    let pods = rx
                        .borrow()
                        .iter()
                        .map(|e| format!("{}:{}", e.pod, e.port))
                        .collect();
                    let _ = events.send(Event::Endpoints {
                        forward: label.clone(),
                        remote_port: remote_label(&pm.remote),
                        pods,
                    });
                }
            });
        }
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
        let Some(ep) = cc.endpoints.pick(cc.opts.pod_running_timeout).await else {
            return Err(Error::NoReadyPod {
                target: cc.label.clone(),
                namespace: cc.namespace.clone(),
                waited: cc.opts.pod_running_timeout,
            });
        };
        match Tunnel::open(&cc.ctx, &cc.namespace, &ep.pod, ep.port).await {
            Ok(t) => return Ok(t),
            // The pod may have just gone away; the watch will have moved on.
            Err(e) if e.is_retryable() => {
                debug!(pod = %ep.pod, error = %e, "tunnel failed; trying another pod");
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
