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
pub(crate) mod frontend;
mod layer;
mod options;
mod pump;
mod route;
mod shell;
mod state;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use event::Event;
pub use options::ForwardOptions;
pub use shell::Shell;
pub use state::{BoundPort, ForwardState};
pub use stats::{Stats, StatsSnapshot};

pub(crate) use backend::probe_version;
pub(crate) use dialer::{Destination, Dialer};
pub(crate) use frontend::Tasks;
pub(crate) use pump::pump;
pub(crate) use stats::Connection;

use crate::client::{KubeContext, KubeconfigSource};
use crate::error::{Error, Result};
use crate::relay::RelayPods;
use crate::spec::{ForwardSpec, PortMapping, Protocol, Target};
use backend::{Backend, SharedBackend};
use frontend::Lane;
use layer::Layers;

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

    /// The state, events and counters this forward keeps (read by the methods below).
    fn shell(&self) -> &Shell;

    /// The current state.
    fn state(&self) -> ForwardState {
        self.shell().state()
    }

    /// A receiver of this forward's events from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shell().subscribe()
    }

    /// The counters now.
    fn stats(&self) -> StatsSnapshot {
        self.shell().stats()
    }

    /// The counters, readable while the forward is owned elsewhere.
    fn stats_handle(&self) -> Arc<Stats> {
        self.shell().stats_handle()
    }

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
    fn reload_requested(&self) -> Arc<Notify> {
        self.shell().reload_requested()
    }
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
    shell: Shell,
    running: Option<Running>,
}

impl Forward {
    /// A forward for `spec`, not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        Forward {
            ctx,
            spec,
            opts,
            shell: Shell::default(),
            running: None,
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
        self.shell.watch_state()
    }

    /// The relay pods in use, once started (UDP and remote-address forwards).
    pub fn relay_pods(&self) -> Option<Arc<RelayPods>> {
        self.shell.relay_pods()
    }

    /// Where this forward's kubeconfig comes from.
    pub fn source(&self) -> KubeconfigSource {
        KubeconfigSource {
            path: self.spec.kubeconfig.clone(),
            context: self.spec.context.clone(),
        }
    }

    fn emit(&self, event: Event) {
        self.shell.emit(event);
    }

    /// Whether the spec's connections go through the relay.
    fn relayed(&self) -> bool {
        self.spec.protocol == Protocol::Udp || self.spec.target.is_remote()
    }

    async fn start_inner(&mut self) -> Result<Vec<BoundPort>> {
        self.spec.check()?;
        if self.relayed() {
            let (shared, opts) = (self.opts.relay_pods.as_ref(), &self.opts.relay);
            self.shell.use_relay(shared, &self.ctx, opts);
        }
        let relay = self.relay_pods();
        // Resolve every port first, so that nothing listens when the target is wrong.
        let wait = self.opts.pod_running_timeout;
        let backend = Arc::new(
            Backend::resolve(
                &self.ctx,
                &self.spec,
                wait,
                relay.clone(),
                self.spec.transport.unwrap_or(self.opts.transport),
            )
            .await?,
        );
        let namespace = backend.namespace.clone();
        if let Some(pods) = &relay {
            // The relay pod before any port listens, so that a pull error shows at start.
            pods.pod_for(&namespace).await?;
        }
        let transport = backend.prepare().await?;
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
                transport,
            });
            let lane = Arc::new(Lane {
                backend: backend_rx.clone(),
                index,
                label: label.clone(),
                opts: self.opts.clone(),
                layers,
                events: self.shell.events(),
                stats: self.shell.stats_handle(),
                reload: self.shell.reload_requested(),
            });
            tasks.serve(listener, lane);
            self.emit(Event::Ready {
                forward: label.clone(),
                local_addr,
                target: self.spec.target.to_string(),
                namespace: namespace.clone(),
                remote_port: remote,
                pod_port,
                transport,
            });
        }
        // Tell subscribers when the pods behind each port change (across reconnects too).
        for (index, pm) in self.spec.ports.iter().enumerate() {
            tasks.tasks.spawn(watch_endpoints(
                backend_rx.clone(),
                index,
                self.shell.events(),
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
            if last.as_ref() != Some(&pods) {
                // Sessions follow the pods: opened to new ones, closed to gone ones.
                backend.borrow().keep_ready();
            }
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
        self.shell.set_state(ForwardState::Starting);
        let started = self.start_inner().await;
        self.shell.started(&self.spec.label(), started).await
    }

    async fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        // Sessions other forwards do not hold close once their connections end.
        r.backend.borrow().release();
        let label = self.spec.label();
        self.shell.stop(r.tasks, self.opts.stop_grace, &label).await;
    }

    fn shell(&self) -> &Shell {
        &self.shell
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
            let fresh = Backend::resolve(
                &ctx,
                &self.spec,
                wait,
                relay.clone(),
                self.spec.transport.unwrap_or(self.opts.transport),
            )
            .await?;
            if let Some(pods) = relay {
                pods.set_context(ctx.clone());
            }
            // The fresh backend holds its pods before the old one lets go, so that
            // sessions both want stay open.
            fresh.keep_ready();
            let old = r.backend.send_replace(Arc::new(fresh));
            old.release();
        }
        self.ctx = ctx;
        Ok(())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.tasks.abort();
        }
    }
}
