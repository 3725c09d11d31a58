//! Loading a kubeconfig and connecting to the cluster it names.
//!
//! kube does the real work (several files in `KUBECONFIG`, exec credential plugins, TLS);
//! this module picks the context, reports a missing one with the list of those there are,
//! and keeps what a forward needs: the client, the default namespace and the server URL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::connector::Reachability;
pub use crate::connector::{ApiRoute, DirectReason, PROXY_CA_ENV, ProxyOrigin, ProxySetupError};
use crate::error::{Error, Result, error_chain};
use crate::single_flight::SingleFlight;
use crate::watches::WatchRegistry;

/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the kubeconfig is and which context to use: `kubectl`'s `--kubeconfig` and
/// `--context`. With no path, `KUBECONFIG` (several files allowed) or `~/.kube/config`.
///
/// # Example
///
/// ```
/// let src = kforward_core::KubeconfigSource::default().with_context("staging");
/// assert_eq!(src.context.as_deref(), Some("staging"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeconfigSource {
    /// An explicit kubeconfig file (overrides `KUBECONFIG`).
    pub path: Option<PathBuf>,
    /// The context to use instead of the current one.
    pub context: Option<String>,
}

impl KubeconfigSource {
    /// Uses this kubeconfig file.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Uses this context.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Reads the kubeconfig this source points at.
    ///
    /// # Errors
    ///
    /// [`Error::Kubeconfig`] when no file is found or it cannot be parsed.
    pub fn read(&self) -> Result<Kubeconfig> {
        let kc = match &self.path {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        };
        kc.map_err(|e| Error::Kubeconfig {
            message: match &self.path {
                Some(p) => format!("{}: {}", p.display(), error_chain(&e)),
                None => error_chain(&e),
            },
        })
    }
}

/// A connection to one cluster: a kube client plus what the kubeconfig says about it.
///
/// # Example
///
/// ```no_run
/// # async fn f() -> kforward_core::Result<()> {
/// let ctx = kforward_core::KubeContext::load(&Default::default()).await?;
/// println!("{} (namespace {})", ctx.server(), ctx.default_namespace());
/// # Ok(()) }
/// ```
///
/// Loading the same kubeconfig entries again (equal [`fingerprint`](Self::fingerprint))
/// returns the same connection while it is in use, so a hundred forwards to one cluster
/// share one client, one connection pool, one watch per watched resource and one
/// port-forward session pool per namespace.
#[derive(Clone)]
pub struct KubeContext {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    namespace: String,
    server: String,
    context: String,
    fingerprint: u64,
    watches: WatchRegistry,
    probes: SingleFlight,
    transports: crate::transport::TransportMemo,
    /// The port-forward session pools, shared by every forward of this connection.
    session_pools: crate::transport::spdy::PoolRegistry,
    /// How connections reach the API server (unknown for a client from elsewhere).
    route: Option<ApiRoute>,
}

/// The environment variable that, set to `stock`, makes [`KubeContext::load`] build kube's
/// own client stack (`kube::Client::try_from`) instead of kforward's, whose connections read
/// the API server through a larger buffer (fewer system calls per byte; see the README's
/// Performance section). For comparing the two, and as a way out should a server or
/// middlebox disagree with kforward's stack.
///
/// # Example
///
/// ```
/// // Run a kforward process on kube's own client stack.
/// let mut cmd = std::process::Command::new("kforward");
/// cmd.env(kforward_core::client::CLIENT_STACK_ENV, "stock");
/// ```
pub const CLIENT_STACK_ENV: &str = "KFORWARD_KUBE_CLIENT";

fn stock_client_wanted() -> bool {
    std::env::var(CLIENT_STACK_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("stock"))
}

/// Contexts in use, by fingerprint; an entry lives as long as a forward holds its context.
fn cache() -> &'static Mutex<HashMap<u64, Weak<Inner>>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Weak<Inner>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A hash of what the kubeconfig says about one context: its cluster, its user and the
/// context itself, secrets included, so that any change of server or credentials shows.
fn fingerprint(kc: &Kubeconfig, context: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let ctx = kc.contexts.iter().find(|c| c.name == context);
    let inner = ctx.and_then(|c| c.context.as_ref());
    let cluster = inner.and_then(|i| kc.clusters.iter().find(|c| c.name == i.cluster));
    let user = inner
        .and_then(|i| i.user.as_ref())
        .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u));
    let text = serde_json::to_string(&(ctx, cluster, user)).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The name and `proxy-url` of the cluster `context` names.
fn cluster_of(kc: &Kubeconfig, context: &str) -> (String, Option<String>) {
    let name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let proxy_url = kc
        .clusters
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.proxy_url.clone());
    (name, proxy_url)
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("server", &self.inner.server)
            .field("context", &self.inner.context)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl KubeContext {
    /// Loads the kubeconfig and builds a client for the chosen context.
    ///
    /// # Errors
    ///
    /// [`Error::Kubeconfig`] when it cannot be read or used, [`Error::UnknownContext`]
    /// when the context does not exist (with the list of those that do).
    pub async fn load(src: &KubeconfigSource) -> Result<KubeContext> {
        Self::load_inner(src, true).await
    }

    /// Loads the kubeconfig and builds a new client even when one for the same entries is
    /// in use: after a 401, so that credentials (token files, exec plugins) are read again.
    /// Later [`load`](Self::load)s share the new client.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub async fn load_fresh(src: &KubeconfigSource) -> Result<KubeContext> {
        Self::load_inner(src, false).await
    }

    async fn load_inner(src: &KubeconfigSource, reuse: bool) -> Result<KubeContext> {
        let kc = src.read()?;
        let context = match src.context.clone().or_else(|| kc.current_context.clone()) {
            Some(c) => c,
            None => {
                return Err(Error::Kubeconfig {
                    message: "no current-context is set; pass --context".to_string(),
                });
            }
        };
        if !kc.contexts.iter().any(|c| c.name == context) {
            return Err(Error::UnknownContext {
                context,
                available: kc.contexts.iter().map(|c| c.name.clone()).collect(),
            });
        }
        let fingerprint = fingerprint(&kc, &context);
        if reuse
            && let Some(inner) = cache()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&fingerprint)
                .and_then(Weak::upgrade)
        {
            return Ok(KubeContext { inner });
        }
        let (cluster, proxy_url) = cluster_of(&kc, &context);
        let opts = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let mut config = match kube::Config::from_custom_kubeconfig(kc.clone(), &opts).await {
            Ok(c) => c,
            // kube parses NO_PROXY more strictly than Go; the route below decides anyway.
            Err(kube::config::KubeconfigError::ParseNoProxy(e)) => {
                tracing::debug!(error = %e, "kube refuses NO_PROXY; loading the kubeconfig without its proxy step");
                crate::kube_config::without_proxy(&kc, &context)
                    .map_err(|message| Error::Kubeconfig { message })?
            }
            Err(e) => {
                return Err(Error::Kubeconfig {
                    message: error_chain(&e),
                });
            }
        };
        let route = ApiRoute::choose(&config.cluster_url, &cluster, proxy_url.as_deref(), |k| {
            std::env::var(k).ok()
        })
        .map_err(|e| Error::Proxy {
            server: config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string(),
            proxy: format!("the proxy set in {}", e.origin),
            message: e.source.to_string(),
            retryable: false,
        })?;
        // kube read a proxy too (from `proxy-url` or `HTTPS_PROXY`, with its own `NO_PROXY`
        // matching, against the proxy's URL instead of the server's); the route replaces it,
        // for kube's own stack as for kforward's.
        config.proxy_url = route.kube_proxy_url();
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        // Port-forward streams may be idle for hours; every API call made here has its
        // own deadline instead.
        config.read_timeout = None;
        config.write_timeout = None;
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let namespace = config.default_namespace.clone();
        let stock = stock_client_wanted();
        tracing::debug!(
            context,
            stack = if stock { "kube's stock" } else { "kforward's" },
            "client for {server}, {route}"
        );
        let reach = Arc::new(Reachability::default());
        let kube_error = |e: kube::Error| Error::Kubeconfig {
            message: error_chain(&e),
        };
        let client = if stock {
            kube::Client::try_from(config).map_err(kube_error)?
        } else {
            crate::connector::client(&config, route.clone(), reach.clone()).map_err(
                |e| match e {
                    crate::connector::ClientError::Kube(e) => kube_error(e),
                    crate::connector::ClientError::Proxy(f) => Error::Proxy {
                        server: server.clone(),
                        proxy: f.proxy,
                        message: f.message,
                        retryable: f.retryable,
                    },
                },
            )?
        };
        let inner = Arc::new(Inner {
            client,
            namespace,
            watches: WatchRegistry::new(&server, reach),
            server,
            context,
            fingerprint,
            probes: SingleFlight::default(),
            transports: Default::default(),
            session_pools: Default::default(),
            route: Some(route),
        });
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(fingerprint, Arc::downgrade(&inner));
        Ok(KubeContext { inner })
    }

    /// Wraps an existing client.
    pub fn from_client(client: kube::Client, namespace: &str, server: &str, context: &str) -> Self {
        KubeContext {
            inner: Arc::new(Inner {
                client,
                namespace: namespace.to_string(),
                server: server.to_string(),
                context: context.to_string(),
                fingerprint: 0,
                watches: WatchRegistry::new(server, Arc::new(Reachability::default())),
                probes: SingleFlight::default(),
                transports: Default::default(),
                session_pools: Default::default(),
                route: None,
            }),
        }
    }

    /// A hash of the context's kubeconfig entries (cluster, user, context): equal
    /// fingerprints mean the same server and credentials.
    pub fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// The kube client.
    pub fn client(&self) -> &kube::Client {
        &self.inner.client
    }

    /// The watches shared by every user of this context.
    pub(crate) fn watches(&self) -> &WatchRegistry {
        &self.inner.watches
    }

    /// The port-forward transport `auto` found for this cluster (see
    /// [`Transport`](crate::transport::Transport)).
    pub fn transport_memo(&self) -> &crate::transport::TransportMemo {
        &self.inner.transports
    }

    /// The port-forward session pools of this connection, by namespace and transport.
    pub(crate) fn session_pools(&self) -> &crate::transport::spdy::PoolRegistry {
        &self.inner.session_pools
    }

    /// The probe checks shared by every forward of this context.
    pub(crate) fn probes(&self) -> &SingleFlight {
        &self.inner.probes
    }

    /// The context's namespace (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// How connections reach the API server: directly or through which proxy, and why
    /// (`None` for a context made [`from_client`](Self::from_client)).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn f(ctx: kforward_core::KubeContext) {
    /// if let Some(route) = ctx.api_route() {
    ///     println!("{} is reached {route}", ctx.server());
    /// }
    /// # }
    /// ```
    pub fn api_route(&self) -> Option<&ApiRoute> {
        self.inner.route.as_ref()
    }

    /// The context's name.
    pub fn context(&self) -> &str {
        &self.inner.context
    }
}
