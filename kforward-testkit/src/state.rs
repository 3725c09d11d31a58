//! The state one cluster shares between its API server, controllers and fault switches.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::network::{AddressPool, DnsRecords};
use crate::store::Store;

/// The user every token of a testkit cluster authenticates as.
pub const USER: &str = "kforward-dev";

/// Locks a mutex, keeping the data of a holder that panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters that tests assert on.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) live_port_forwards: AtomicU64,
    pub(crate) port_forwards_total: AtomicU64,
    pub(crate) watches_total: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Requests the API server has answered or is answering (port-forwards included).
    pub requests: u64,
    /// Port-forward streams open now.
    pub live_port_forwards: u64,
    /// Port-forward streams opened since the cluster started.
    pub port_forwards_total: u64,
    /// Watch requests served since the cluster started.
    pub watches_total: u64,
}

/// Counts one live port-forward stream for as long as it is held.
pub(crate) struct LiveStream(Arc<Shared>);

impl LiveStream {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared
            .stats
            .live_port_forwards
            .fetch_add(1, Ordering::SeqCst);
        shared
            .stats
            .port_forwards_total
            .fetch_add(1, Ordering::SeqCst);
        LiveStream(shared)
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0
            .stats
            .live_port_forwards
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// Credentials and refusals.
#[derive(Debug)]
pub(crate) struct Auth {
    pub(crate) token: String,
    /// `(verb, resource)` pairs answered with 403, resource like `pods/portforward`.
    pub(crate) denied: BTreeSet<(String, String)>,
}

/// The fault switches.
pub(crate) struct Faults {
    /// `true` while the API server is paused: requests and streams wait.
    pub(crate) paused: watch::Sender<bool>,
    pub(crate) latency: Mutex<Duration>,
    /// Cancelled to drop every live port-forward stream; replaced after each use.
    pub(crate) drop_streams: Mutex<CancellationToken>,
    /// When set, the API server resets every TCP connection from another address, as a
    /// firewall that lets only a proxy through would.
    pub(crate) api_only_from: Mutex<Option<Vec<std::net::IpAddr>>>,
    /// When set, external hosts answer these addresses (an egress proxy's) instead of pods:
    /// a cluster whose pods reach the outside only through a proxy.
    pub(crate) egress_only_from: Mutex<Option<Vec<std::net::IpAddr>>>,
}

impl Faults {
    /// Waits while the API server is paused.
    pub(crate) async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        // An error means the sender is gone (cluster dropped): nothing to wait for.
        let _ = rx.wait_for(|p| !*p).await;
    }

    pub(crate) fn stream_token(&self) -> CancellationToken {
        lock(&self.drop_streams).clone()
    }
}

/// Everything one cluster shares.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) store: Store,
    pub(crate) auth: Mutex<Auth>,
    pub(crate) faults: Faults,
    pub(crate) stats: Stats,
    pub(crate) pool: AddressPool,
    pub(crate) dns_records: DnsRecords,
    /// How long a new pod takes from Running to Ready.
    pub(crate) ready_delay: Mutex<Duration>,
    /// How long a deleted pod keeps running (NotReady) before its servers stop.
    pub(crate) termination_grace: Mutex<Duration>,
    /// Pods forced NotReady by a fault, as `namespace/name`.
    pub(crate) not_ready: Mutex<BTreeSet<String>>,
    /// Cancelled when the cluster stops.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled to stop the running API server and cut its connections (replaced on
    /// restart; held while a restart runs, so restarts do not overlap).
    pub(crate) api_conns: tokio::sync::Mutex<Option<CancellationToken>>,
    /// Where the API server listens; kept across restarts.
    pub(crate) api_addr: Mutex<std::net::SocketAddr>,
    /// The TLS configuration, `None` for plain HTTP.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The CA certificate clients trust.
    pub(crate) ca_pem: Option<String>,
    /// The kubeconfig file this cluster keeps up to date.
    pub(crate) kubeconfig_path: std::path::PathBuf,
    /// The default namespace written into the kubeconfig's context.
    pub(crate) default_namespace: Mutex<Option<String>>,
    /// The cluster DNS server, once started (pods get it as their resolver).
    pub(crate) dns_addr: Mutex<Option<std::net::SocketAddr>>,
    /// The store's resourceVersion as the last finished reconcile pass saw it when it
    /// began: everything written up to it is reflected in pods, slices and kube-proxy.
    pub(crate) reconciled: watch::Sender<u64>,
    /// Air-gapped: the images on the node, the only ones that run (`None`: every image
    /// pulls).
    pub(crate) node_images: Mutex<Option<BTreeSet<String>>>,
    /// Validating webhooks refusing pods, by namespace.
    pub(crate) admission: crate::admission::Admission,
}

impl Shared {
    pub(crate) fn new(
        name: String,
        token: String,
        ready_delay: Duration,
        tls: Option<(Arc<rustls::ServerConfig>, String)>,
        kubeconfig_path: std::path::PathBuf,
    ) -> Self {
        let (tls, ca_pem) = match tls {
            Some((c, pem)) => (Some(c), Some(pem)),
            None => (None, None),
        };
        let (paused, _) = watch::channel(false);
        Shared {
            name,
            store: Store::new(),
            auth: Mutex::new(Auth {
                token,
                denied: BTreeSet::new(),
            }),
            faults: Faults {
                paused,
                latency: Mutex::new(Duration::ZERO),
                drop_streams: Mutex::new(CancellationToken::new()),
                api_only_from: Mutex::new(None),
                egress_only_from: Mutex::new(None),
            },
            stats: Stats::default(),
            pool: AddressPool::new(),
            dns_records: DnsRecords::default(),
            ready_delay: Mutex::new(ready_delay),
            not_ready: Mutex::new(BTreeSet::new()),
            termination_grace: Mutex::new(Duration::from_millis(100)),
            shutdown: CancellationToken::new(),
            dns_addr: Mutex::new(None),
            api_conns: tokio::sync::Mutex::new(None),
            api_addr: Mutex::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            tls,
            ca_pem,
            kubeconfig_path,
            default_namespace: Mutex::new(None),
            reconciled: watch::Sender::new(0),
            node_images: Mutex::new(None),
            admission: crate::admission::Admission::default(),
        }
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.stats.requests.load(Ordering::SeqCst),
            live_port_forwards: self.stats.live_port_forwards.load(Ordering::SeqCst),
            port_forwards_total: self.stats.port_forwards_total.load(Ordering::SeqCst),
            watches_total: self.stats.watches_total.load(Ordering::SeqCst),
        }
    }

    /// Drops every live port-forward stream.
    pub(crate) fn drop_port_forwards(&self) {
        let mut t = lock(&self.faults.drop_streams);
        t.cancel();
        *t = CancellationToken::new();
    }
}
