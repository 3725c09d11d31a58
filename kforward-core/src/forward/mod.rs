//! Forwards: front ends that take local traffic in (a TCP listener, a UDP socket), a
//! dialer that opens one stream per connection or UDP peer (a pod stream over a
//! port-forward transport, or a relay stream through the namespace's relay pod), and
//! layers between them (the PROXY header, the counters).
//!
//! ```text
//!  front end                layers                      dialer
//!  frontend::tcp ──┐                                ┌── Destination::Pod   -> transport::Stream
//!                  ├── layer (PROXY v1/v2), stats ──┤
//!  frontend::udp ──┘                                └── Destination::Relay -> the relay pod
//! ```
//!
//! [`Forward`] is the one implementation of [`Forwarder`], for every target and protocol:
//! its start, stop, state, counters and draining are written once. Each port mapping gets
//! a route (`route.rs`) that names the destination of each new connection; the cluster side
//! (`backend.rs`) is swapped whole on reconnect while the listeners stay bound.

mod backend;
mod dialer;
mod event;
mod frontend;
mod layer;
mod options;
mod pump;
mod route;
mod state;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use event::Event;
pub use options::ForwardOptions;
pub use state::{BoundPort, ForwardState};
pub use stats::{Stats, StatsSnapshot};

use crate::client::{KubeContext, KubeconfigSource};
use crate::error::{Error, Result};
use crate::relay::RelayPods;
use crate::spec::{ForwardSpec, PortMapping, Protocol, Target};
use backend::{Backend, SharedBackend};
use frontend::{Lane, Tasks};
use layer::Layers;

/// Events a forward buffers for a slow subscriber before it starts missing some (told
/// as `RecvError::Lagged`). tokio's broadcast channel allocates every slot up front, about
/// 170 bytes each: 1,024 of them were 33 of the 60 MiB that a `kforward run` of 200 idle
/// forwards held (`compare --only idle`). A subscriber that keeps up (the supervisor, the
/// CLI) never has more than a few waiting.
const EVENT_BUFFER: usize = 256;

/// A forward: local listeners carrying connections to one target.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
/// use kforward_core::{Forward, Forwarder};
/// let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)]);
/// let mut fwd: Box<dyn Forwarder> = Box::new(Forward::new(ctx, spec, Default::default()));
/// let bound = fwd.start().await?;
/// println!("listening on {}", bound[0].local_addr);
/// fwd.stop().await;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Forwarder: Send + Sync {
    /// Resolves the target, binds the local ports and starts accepting; returns the
    /// addresses bound.
    ///
    /// # Errors
    ///
    /// The target cannot be resolved, no pod is ready in time, a local port cannot be
    /// bound, or the API server refuses.
    async fn start(&mut self) -> Result<Vec<BoundPort>>;

    /// Stops accepting, gives open connections a moment to finish, then closes them.
    async fn stop(&mut self);

    /// The current state.
    fn state(&self) -> ForwardState;

    /// A receiver of this forward's events from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// The counters now.
    fn stats(&self) -> StatsSnapshot;

    /// The counters, readable while the forward is owned elsewhere.
    fn stats_handle(&self) -> Arc<Stats>;

    /// The forward's label (its alias, or target and ports).
    fn label(&self) -> String;

    /// The connection to the cluster in use.
    fn context(&self) -> &KubeContext;

    /// Checks the running forward end to end: the API server answers, and a stream to
    /// its target (or its relay pod) opens without an error.
    ///
    /// # Errors
    ///
    /// The first failure met; [`Error::NotStarted`] before the start.
    async fn probe(&self, timeout: Duration) -> Result<()>;

    /// Points the running forward at `ctx` (new credentials, another context or
    /// cluster): resolves again and swaps the cluster side, while the local ports stay
    /// bound and open connections carry on. Without `ctx`, the kubeconfig is read again.
    ///
    /// # Errors
    ///
    /// The kubeconfig cannot be loaded or the target resolved; the forward then keeps its
    /// previous cluster side.
    async fn reconnect(&mut self, ctx: Option<KubeContext>) -> Result<()>;

    /// Fires when a connection met rejected credentials and the kubeconfig should be read
    /// again (then call [`reconnect`](Self::reconnect)).
    fn reload_requested(&self) -> Arc<Notify>;
}

/// What a started forward holds.
struct Running {
    tasks: Tasks,
    backend: watch::Sender<Arc<Backend>>,
}

/// A forward of any target and protocol: pod, selector, deployment and service targets
/// over TCP through pod streams; UDP and remote-address targets through the relay pod of
/// the namespace.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::PortMapping;
/// use kforward_core::{Forward, Forwarder};
/// let mut web = Forward::service(ctx.clone(), "demo", "web", [PortMapping::new(0, 80)]);
/// let mut db = Forward::remote(ctx, "demo", "db.internal", [PortMapping::new(0, 5432)]);
/// println!("web on {}", web.start().await?[0].local_addr);
/// println!("db on {}", db.start().await?[0].local_addr);
/// # Ok(()) }
/// ```
pub struct Forward {
    ctx: KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    reload: Arc<Notify>,
    running: Option<Running>,
    /// The relay pods in use, and whether this forward owns (and so deletes) them.
    relay: Option<(Arc<RelayPods>, bool)>,
}

impl Forward {
    /// A forward for `spec`, not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        Forward {
            ctx,
            spec,
            opts,
            events: broadcast::channel(EVENT_BUFFER).0,
            state: watch::channel(ForwardState::Idle).0,
            stats: Arc::new(Stats::default()),
            reload: Arc::new(Notify::new()),
            running: None,
            relay: None,
        }
    }

    fn of(ctx: KubeContext, namespace: &str, target: Target, ports: Vec<PortMapping>) -> Self {
        let spec = ForwardSpec::new(target, ports).with_namespace(namespace);
        Forward::new(ctx, spec, ForwardOptions::default())
    }

    /// A TCP forward to service `name` in `namespace`: each connection goes to one of its
    /// ready pods, round robin (as the Service itself spreads them).
    pub fn service(
        ctx: KubeContext,
        namespace: &str,
        name: &str,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let target = Target::Service { name: name.into() };
        Forward::of(ctx, namespace, target, ports.into_iter().collect())
    }

    /// A TCP forward to pod `name` in `namespace`.
    pub fn pod(
        ctx: KubeContext,
        namespace: &str,
        name: &str,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let target = Target::Pod { name: name.into() };
        Forward::of(ctx, namespace, target, ports.into_iter().collect())
    }

    /// A TCP forward to `host` (a name the cluster's DNS resolves, an IP, a host outside
    /// the cluster) as the relay pod of `namespace` reaches it; the remote ports are
    /// `host`'s.
    pub fn remote(
        ctx: KubeContext,
        namespace: &str,
        host: &str,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let target = Target::Remote { host: host.into() };
        Forward::of(ctx, namespace, target, ports.into_iter().collect())
    }

    /// The same forward with other settings.
    #[must_use]
    pub fn with_options(mut self, opts: ForwardOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The spec this forward serves.
    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<ForwardState> {
        self.state.subscribe()
    }

    /// The relay pods in use, once started (UDP and remote-address forwards).
    pub fn relay_pods(&self) -> Option<Arc<RelayPods>> {
        self.relay.as_ref().map(|(p, _)| p.clone())
    }

    /// Where this forward's kubeconfig comes from.
    pub fn source(&self) -> KubeconfigSource {
        KubeconfigSource {
            path: self.spec.kubeconfig.clone(),
            context: self.spec.context.clone(),
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Whether the spec's connections go through the relay.
    fn relayed(&self) -> bool {
        self.spec.protocol == Protocol::Udp || self.spec.target.is_remote()
    }

    async fn start_inner(&mut self) -> Result<Vec<BoundPort>> {
        self.spec.check()?;
        if self.relayed() {
            let pods = match &self.opts.relay_pods {
                Some(shared) => (shared.0.clone(), false),
                None => (
                    RelayPods::new(self.ctx.clone(), self.opts.relay.clone()),
                    true,
                ),
            };
            self.relay = Some(pods);
        }
        let relay = self.relay_pods();
        // Resolve every port first, so that nothing listens when the target is wrong.
        let wait = self.opts.pod_running_timeout;
        let backend = Arc::new(Backend::resolve(&self.ctx, &self.spec, wait, relay.clone()).await?);
        let namespace = backend.namespace.clone();
        if let Some(pods) = &relay {
            // The relay pod before any port listens, so that a pull error shows at start.
            pods.pod_for(&namespace).await?;
        }
        let mut listeners = Vec::new();
        for (index, pm) in self.spec.ports.iter().enumerate() {
            for (l, addr) in frontend::bind(&self.spec, pm).await? {
                listeners.push((index, l, addr));
            }
        }
        let (backend_tx, backend_rx) = watch::channel(backend.clone());
        let tasks = Tasks::new();
        let label = self.spec.label();
        let layers = Layers {
            send: self.spec.proxy_protocol,
            accept: self.spec.accept_proxy_protocol,
            timeout: self.opts.header_timeout,
        };
        let mut bound = Vec::new();
        for (index, listener, local_addr) in listeners {
            let remote = self.spec.ports[index].remote.to_string();
            let pod_port = backend.routes[index].target_port();
            bound.push(BoundPort {
                local_addr,
                remote: remote.clone(),
                pod_port,
            });
            let lane = Arc::new(Lane {
                backend: backend_rx.clone(),
                index,
                label: label.clone(),
                opts: self.opts.clone(),
                layers,
                events: self.events.clone(),
                stats: self.stats.clone(),
                reload: self.reload.clone(),
            });
            tasks.serve(listener, lane);
            self.emit(Event::Ready {
                forward: label.clone(),
                local_addr,
                target: self.spec.target.to_string(),
                namespace: namespace.clone(),
                remote_port: remote,
                pod_port,
            });
        }
        // Tell subscribers when the pods behind each port change (across reconnects too).
        for (index, pm) in self.spec.ports.iter().enumerate() {
            tasks.tasks.spawn(watch_endpoints(
                backend_rx.clone(),
                index,
                self.events.clone(),
                label.clone(),
                pm.remote.to_string(),
                tasks.stop.clone(),
            ));
        }
        self.running = Some(Running {
            tasks,
            backend: backend_tx,
        });
        Ok(bound)
    }

    /// Deletes the relay pods this forward owns.
    async fn release_relay(&mut self) {
        if let Some((pods, true)) = self.relay.take() {
            pods.delete_all().await;
        }
    }
}

/// Publishes an `endpoints` event whenever the ready pods behind port mapping `index`
/// change, following the backend across reconnects.
async fn watch_endpoints(
    mut backend: SharedBackend,
    index: usize,
    events: broadcast::Sender<Event>,
    label: String,
    remote: String,
    stop: CancellationToken,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        let eps = backend.borrow_and_update().routes[index]
            .endpoints()
            .cloned();
        let mut rx = eps.as_ref().map(|e| e.subscribe());
        if let Some(rx) = &mut rx {
            let pods: Vec<String> = rx
                .borrow_and_update()
                .iter()
                .map(|e| format!("{}:{}", e.pod, e.port))
                .collect();
            if last.as_ref().is_some_and(|l| *l != pods) {
                let _ = events.send(Event::Endpoints {
                    forward: label.clone(),
                    remote_port: remote.clone(),
                    pods: pods.clone(),
                });
            }
            last = Some(pods);
        }
        let changed = async {
            match &mut rx {
                Some(rx) => rx.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = backend.changed() => if r.is_err() { return },
            Ok(()) = changed => {}
        }
    }
}

#[async_trait]
impl Forwarder for Forward {
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
                self.release_relay().await;
                self.state.send_replace(ForwardState::Failed {
                    error: e.to_string(),
                });
                self.emit(Event::Error {
                    forward: self.spec.label(),
                    message: e.to_string(),
                });
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

    fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn label(&self) -> String {
        self.spec.label()
    }

    fn context(&self) -> &KubeContext {
        &self.ctx
    }

    async fn probe(&self, timeout: Duration) -> Result<()> {
        let Some(r) = &self.running else {
            return Err(Error::NotStarted);
        };
        let backend = r.backend.borrow().clone();
        backend.probe(timeout, self.spec.proxy_protocol).await
    }

    async fn reconnect(&mut self, ctx: Option<KubeContext>) -> Result<()> {
        let ctx = match ctx {
            Some(c) => c,
            None => KubeContext::load_fresh(&self.source()).await?,
        };
        if let Some(r) = &self.running {
            let relay = self.relay_pods();
            let wait = self.opts.pod_running_timeout;
            let fresh = Backend::resolve(&ctx, &self.spec, wait, relay.clone()).await?;
            if let Some(pods) = relay {
                pods.set_context(ctx.clone());
            }
            r.backend.send_replace(Arc::new(fresh));
        }
        self.ctx = ctx;
        Ok(())
    }

    fn reload_requested(&self) -> Arc<Notify> {
        self.reload.clone()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.tasks.abort();
        }
    }
}
