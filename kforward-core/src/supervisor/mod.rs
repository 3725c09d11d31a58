//! The supervisor: many forwards that never need a manual restart.
//!
//! Each forward, whatever its kind (TCP to pods, UDP and remote addresses through a relay
//! pod), runs in its own task through the [`Forwarder`](crate::Forwarder) trait: it starts
//! with backoff, is probed periodically (the API server answers, and a stream to a ready
//! pod, or to the relay pod, opens without an error), turns unhealthy only after N failed
//! probes in a row and then reconnects (reading the kubeconfig again) with backoff while
//! its local ports stay bound. Pod restarts need none of this: the endpoints are watched,
//! and connections wait for a ready pod; a deleted relay pod is replaced. A changed
//! kubeconfig file reconnects the forwards whose context, server or credentials changed; a
//! wall-clock jump (the laptop slept) or a change of local addresses rechecks every
//! forward at once. One forward failing never touches the others.
//!
//! The relayed forwards of one cluster share one relay pod per namespace, deleted when the
//! last of them stops.

mod backoff;
mod health;
mod relays;
mod task;
mod wake;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use backoff::{Backoff, ExponentialBackoff};
pub use health::{Health, Transition};
pub use wake::{ClockReading, clock_jumped, network_fingerprint};

use crate::error::Error;
use crate::forward::{BoundPort, Event, ForwardOptions, ForwardState, Stats, StatsSnapshot};
use crate::spec::ForwardSpec;
use relays::RelayPool;
use task::{Command, ForwardTask};

/// Settings of a supervisor.
///
/// # Example
///
/// ```
/// let o = kforward_core::supervisor::SupervisorOptions::default();
/// assert_eq!(o.unhealthy_after, 3);
/// ```
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Settings of every forward.
    pub forward: ForwardOptions,
    /// How often each forward is probed.
    pub probe_interval: Duration,
    /// How long one probe may take.
    pub probe_timeout: Duration,
    /// Failed probes in a row before a forward reconnects.
    pub unhealthy_after: u32,
    /// Ready for this long, and the backoff starts over at its first delay.
    pub healthy_period: Duration,
    /// How often the kubeconfig files, the clocks and the local addresses are checked.
    pub watch_interval: Duration,
    /// Whether a forward whose first start fails is tried again with backoff (`kforward
    /// run`: a target may appear later), or fails at once, as `kubectl port-forward` does
    /// (`kforward forward`, the C ABI). Mistakes that need the user (a port in use, a bad
    /// spec, an unknown context) fail at once either way.
    pub retry_start: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            forward: ForwardOptions::default(),
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
            unhealthy_after: 3,
            healthy_period: Duration::from_secs(60),
            watch_interval: Duration::from_secs(1),
            retry_start: true,
        }
    }
}

/// An event of one supervised forward: `{"id":0,"event":"state","forward":"web","state":"ready"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorEvent {
    /// The forward's id in this supervisor.
    pub id: usize,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The state of one supervised forward.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardStatus {
    /// The forward's id.
    pub id: usize,
    /// Its label (alias, or target and ports).
    pub label: String,
    /// Its target, like `svc/web`.
    pub target: String,
    /// The local addresses it listens on (empty before it first started).
    pub local_addrs: Vec<SocketAddr>,
    /// The same addresses with what each leads to.
    pub ports: Vec<BoundPort>,
    /// Its state.
    #[serde(flatten)]
    pub state: ForwardState,
    /// The last error met, even after recovering.
    pub last_error: Option<String>,
    /// Its counters.
    pub stats: StatsSnapshot,
    #[serde(skip)]
    stats_handle: Option<Arc<Stats>>,
    /// Why it failed, when it did: the error itself, for classification.
    #[serde(skip)]
    failure: Option<Arc<Error>>,
}

impl ForwardStatus {
    /// Why the forward failed, when it is `failed`.
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_deref()
    }
}

struct Entry {
    status: watch::Receiver<ForwardStatus>,
    commands: mpsc::UnboundedSender<Command>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Entry {
    /// Tells the task to stop, wherever it is.
    fn stop(&self) {
        self.cancel.cancel();
        let _ = self.commands.send(Command::Stop);
    }
}

struct Inner {
    opts: SupervisorOptions,
    events: broadcast::Sender<SupervisorEvent>,
    forwards: Mutex<BTreeMap<usize, Entry>>,
    next_id: Mutex<usize>,
    /// Kubeconfig files the forwards read, watched for changes.
    kubeconfigs: Mutex<Vec<PathBuf>>,
    /// Relay pods shared by the relayed forwards of each cluster.
    relays: Arc<RelayPool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs many forwards, keeps them up, and publishes their events on one stream.
///
/// # Example
///
/// ```no_run
/// # async fn f() {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
/// use kforward_core::supervisor::Supervisor;
/// let sup = Supervisor::new(Default::default());
/// let mut events = sup.subscribe();
/// let id = sup.add(ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)]));
/// while let Ok(e) = events.recv().await {
///     println!("{}", serde_json::to_string(&e).unwrap());
/// }
/// sup.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
    _watcher: Arc<WatcherGuard>,
}

struct WatcherGuard(tokio::task::JoinHandle<()>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The kubeconfig files a source reads: its path, or `KUBECONFIG`'s, or `~/.kube/config`.
fn kubeconfig_paths(spec: &ForwardSpec) -> Vec<PathBuf> {
    if let Some(p) = &spec.kubeconfig {
        return vec![p.clone()];
    }
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    std::env::var_os("HOME")
        .map(|h| vec![PathBuf::from(h).join(".kube").join("config")])
        .unwrap_or_default()
}

fn stamp(p: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Supervisor {
    /// A supervisor with no forwards yet. Must be called inside a tokio runtime.
    pub fn new(opts: SupervisorOptions) -> Self {
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            opts,
            events,
            forwards: Mutex::new(BTreeMap::new()),
            next_id: Mutex::new(0),
            kubeconfigs: Mutex::new(Vec::new()),
            relays: Arc::default(),
        });
        let watcher = tokio::spawn(watch_environment(Arc::downgrade(&inner)));
        Supervisor {
            inner,
            _watcher: Arc::new(WatcherGuard(watcher)),
        }
    }

    /// Adds a forward and starts it; returns its id. It never fails here: a forward that
    /// cannot start shows as `reconnecting` or `failed` in its events and status.
    pub fn add(&self, spec: ForwardSpec) -> usize {
        let forward = self.inner.opts.forward.clone();
        self.add_with(spec, forward)
    }

    /// Adds a forward with its own settings; see [`Supervisor::add`]. Relay pods given in
    /// [`ForwardOptions::relay_pods`] are used instead of the supervisor's shared ones.
    pub fn add_with(&self, spec: ForwardSpec, forward: ForwardOptions) -> usize {
        let id = {
            let mut n = lock(&self.inner.next_id);
            *n += 1;
            *n - 1
        };
        {
            let mut k = lock(&self.inner.kubeconfigs);
            for p in kubeconfig_paths(&spec) {
                if !k.contains(&p) {
                    k.push(p);
                }
            }
        }
        let (status, status_rx) = watch::channel(ForwardStatus {
            id,
            label: spec.label(),
            target: spec.target.to_string(),
            local_addrs: Vec::new(),
            ports: Vec::new(),
            state: ForwardState::Idle,
            last_error: None,
            stats: StatsSnapshot::default(),
            stats_handle: None,
            failure: None,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let t = ForwardTask {
            id,
            spec,
            opts: self.inner.opts.clone(),
            forward,
            events: self.inner.events.clone(),
            status,
            commands: rx,
            cancel: cancel.clone(),
            relays: self.inner.relays.clone(),
            lease: None,
            relay_events: None,
        };
        let task = tokio::spawn(t.run());
        lock(&self.inner.forwards).insert(
            id,
            Entry {
                status: status_rx,
                commands: tx,
                cancel,
                task,
            },
        );
        id
    }

    /// A receiver of every forward's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.inner.events.subscribe()
    }

    /// The status of every forward, by id.
    pub fn status(&self) -> Vec<ForwardStatus> {
        lock(&self.inner.forwards)
            .values()
            .map(|e| live(&e.status))
            .collect()
    }

    /// A receiver of forward `id`'s status, woken at each change of its state (its
    /// counters there are read with [`Supervisor::status_of`]); `None` for an unknown id.
    pub fn watch_status(&self, id: usize) -> Option<watch::Receiver<ForwardStatus>> {
        lock(&self.inner.forwards)
            .get(&id)
            .map(|e| e.status.clone())
    }

    /// The status of one forward.
    pub fn status_of(&self, id: usize) -> Option<ForwardStatus> {
        self.status().into_iter().find(|s| s.id == id)
    }

    /// Probes every forward now instead of at its next probe.
    pub fn recheck_all(&self) {
        for e in lock(&self.inner.forwards).values() {
            let _ = e.commands.send(Command::Recheck);
        }
    }

    /// Tells every forward the kubeconfig changed (normally noticed by itself).
    pub fn kubeconfig_changed(&self) {
        notify_all(&self.inner, || Command::KubeconfigChanged);
    }

    /// Stops one forward and waits until its ports are closed (and its relay pods deleted
    /// when it was their last user); returns its last status.
    pub async fn stop(&self, id: usize) -> Option<ForwardStatus> {
        let entry = lock(&self.inner.forwards).remove(&id)?;
        entry.stop();
        let _ = entry.task.await;
        Some(live(&entry.status))
    }

    /// Stops every forward and waits until all their ports are closed and their relay pods
    /// deleted.
    pub async fn shutdown(&self) {
        let entries: Vec<Entry> = std::mem::take(&mut *lock(&self.inner.forwards))
            .into_values()
            .collect();
        for e in &entries {
            e.stop();
        }
        for e in entries {
            let _ = e.task.await;
        }
    }

    /// Waits until no forward is starting (each is ready, reconnecting or failed), up to
    /// `timeout`; returns whether that happened.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let work = async {
            loop {
                let busy = self
                    .status()
                    .iter()
                    .any(|s| matches!(s.state, ForwardState::Idle | ForwardState::Starting));
                if !busy {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
            }
        };
        tokio::time::timeout(timeout, work).await.is_ok()
    }
}

/// A status with its counters read now.
fn live(status: &watch::Receiver<ForwardStatus>) -> ForwardStatus {
    let mut s = status.borrow().clone();
    if let Some(h) = &s.stats_handle {
        s.stats = h.snapshot();
    }
    s
}

fn notify_all(inner: &Inner, cmd: impl Fn() -> Command) {
    for e in lock(&inner.forwards).values() {
        let _ = e.commands.send(cmd());
    }
}

/// Watches the kubeconfig files, the clocks and the local addresses.
async fn watch_environment(inner: std::sync::Weak<Inner>) {
    let interval = match inner.upgrade() {
        Some(i) => i.opts.watch_interval,
        None => return,
    };
    let mut stamps: BTreeMap<PathBuf, Option<(SystemTime, u64)>> = BTreeMap::new();
    let mut clock = ClockReading::now();
    let mut net = network_fingerprint();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let paths = lock(&inner.kubeconfigs).clone();
        let mut changed = false;
        for p in paths {
            let now = stamp(&p);
            match stamps.insert(p, now) {
                Some(before) if before != now => changed = true,
                _ => {}
            }
        }
        if changed {
            notify_all(&inner, || Command::KubeconfigChanged);
        }
        let now = ClockReading::now();
        let jumped = clock_jumped(clock, now, interval * 5);
        clock = now;
        let net_now = network_fingerprint();
        let moved = net_now != net;
        net = net_now;
        if jumped || moved {
            tracing::info!(
                slept = jumped,
                network_changed = moved,
                "rechecking every forward"
            );
            notify_all(&inner, || Command::Recheck);
        }
    }
}
