//! The cluster's services and pods as the forward proxy routes by them: by name, by
//! ClusterIP, by pod IP and by pod host name, kept current by watches (one per kind,
//! cluster-wide when allowed, else one per namespace in use), so no connection waits for a
//! lookup once the first list is in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::client::KubeContext;
use crate::error::Error;

/// How long a lookup waits for the first list of a namespace's objects.
const FIRST_LIST: Duration = Duration::from_secs(30);

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// Its name, if any.
    pub name: Option<String>,
    /// The port number on the ClusterIP.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// What the proxy knows of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its ClusterIPs (none for a headless service).
    pub cluster_ips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<ServicePortInfo>,
    /// Its pod selector, as `k=v,k2=v2` (empty: none).
    pub selector: String,
    /// Its resourceVersion, which changes with every change of the service.
    pub resource_version: String,
}

impl ServiceInfo {
    /// A headless service (`clusterIP: None`): its name resolves to its pods' addresses.
    pub fn headless(&self) -> bool {
        self.cluster_ips.is_empty()
    }

    fn from_service(s: &Service) -> Option<ServiceInfo> {
        let spec = s.spec.as_ref()?;
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.dedup();
        Some(ServiceInfo {
            namespace: s.namespace()?,
            name: s.metadata.name.clone()?,
            cluster_ips: ips,
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(ServicePortInfo {
                        name: p.name.clone(),
                        port: u16::try_from(p.port).ok()?,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    })
                })
                .collect(),
            selector: spec
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            resource_version: s.resource_version().unwrap_or_default(),
        })
    }
}

/// What the proxy knows of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its IPs.
    pub ips: Vec<IpAddr>,
    /// `spec.hostname` and `spec.subdomain`, which give it a DNS name under a headless
    /// service named like the subdomain.
    pub hostname: Option<(String, String)>,
}

impl PodInfo {
    fn from_pod(p: &Pod) -> Option<PodInfo> {
        let status = p.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.parse().ok())
            .chain(status.and_then(|s| s.pod_ip.as_ref()?.parse().ok()))
            .collect();
        ips.dedup();
        let spec = p.spec.as_ref();
        let hostname = match (
            spec.and_then(|s| s.hostname.clone()),
            spec.and_then(|s| s.subdomain.clone()),
        ) {
            (Some(h), Some(s)) => Some((h, s)),
            _ => None,
        };
        Some(PodInfo {
            namespace: p.namespace()?,
            name: p.metadata.name.clone()?,
            ips,
            hostname,
        })
    }
}

/// Namespace and name.
type Key = (String, String);

/// The objects the watches have seen, with the indexes lookups use.
#[derive(Debug, Default)]
struct Index {
    services: HashMap<Key, ServiceInfo>,
    by_cluster_ip: HashMap<IpAddr, Key>,
    /// Namespaces with at least one service, and how many.
    namespaces: HashMap<String, usize>,
    pods: HashMap<Key, PodInfo>,
    by_pod_ip: HashMap<IpAddr, Key>,
    /// (namespace, subdomain, hostname) to pod name.
    by_hostname: HashMap<(String, String, String), String>,
}

/// One kind of object the index keeps.
trait Indexed:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const RESOURCE: &'static str;
    fn insert(index: &mut Index, obj: &Self);
    fn remove(index: &mut Index, key: &Key);
    fn keys(index: &Index, scope: Option<&str>) -> Vec<Key>;
}

fn in_scope(key: &Key, scope: Option<&str>) -> bool {
    scope.is_none_or(|ns| key.0 == ns)
}

impl Indexed for Service {
    const RESOURCE: &'static str = "services";
    fn insert(index: &mut Index, obj: &Self) {
        let Some(info) = ServiceInfo::from_service(obj) else {
            return;
        };
        let key = (info.namespace.clone(), info.name.clone());
        Self::remove(index, &key);
        for ip in &info.cluster_ips {
            index.by_cluster_ip.insert(*ip, key.clone());
        }
        *index.namespaces.entry(key.0.clone()).or_default() += 1;
        index.services.insert(key, info);
    }
    fn remove(index: &mut Index, key: &Key) {
        if let Some(old) = index.services.remove(key) {
            for ip in &old.cluster_ips {
                if index.by_cluster_ip.get(ip) == Some(key) {
                    index.by_cluster_ip.remove(ip);
                }
            }
            if let Some(n) = index.namespaces.get_mut(&key.0) {
                *n -= 1;
                if *n == 0 {
                    index.namespaces.remove(&key.0);
                }
            }
        }
    }
    fn keys(index: &Index, scope: Option<&str>) -> Vec<Key> {
        let keys = index.services.keys();
        keys.filter(|k| in_scope(k, scope)).cloned().collect()
    }
}

impl Indexed for Pod {
    const RESOURCE: &'static str = "pods";
    fn insert(index: &mut Index, obj: &Self) {
        let Some(info) = PodInfo::from_pod(obj) else {
            return;
        };
        let key = (info.namespace.clone(), info.name.clone());
        Self::remove(index, &key);
        for ip in &info.ips {
            index.by_pod_ip.insert(*ip, key.clone());
        }
        if let Some((h, s)) = &info.hostname {
            let k = (key.0.clone(), s.clone(), h.clone());
            index.by_hostname.insert(k, key.1.clone());
        }
        index.pods.insert(key, info);
    }
    fn remove(index: &mut Index, key: &Key) {
        if let Some(old) = index.pods.remove(key) {
            for ip in &old.ips {
                if index.by_pod_ip.get(ip) == Some(key) {
                    index.by_pod_ip.remove(ip);
                }
            }
            if let Some((h, s)) = old.hostname {
                let k = (key.0.clone(), s, h);
                if index.by_hostname.get(&k) == Some(&key.1) {
                    index.by_hostname.remove(&k);
                }
            }
        }
    }
    fn keys(index: &Index, scope: Option<&str>) -> Vec<Key> {
        let keys = index.pods.keys();
        keys.filter(|k| in_scope(k, scope)).cloned().collect()
    }
}

/// Where one scope's watches are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing {
    /// The first list has not come yet.
    Pending,
    /// Listed; the watch keeps it current.
    Ready,
    /// The list failed (the watch keeps trying).
    Failed(String),
}

/// The watches of one scope (a namespace, or the whole cluster).
struct Scope {
    /// Services' and pods' first lists.
    services: watch::Receiver<Listing>,
    pods: watch::Receiver<Listing>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Services and pods, watched.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> Result<(), kforward_core::Error> {
/// use kforward_core::forward_proxy::Catalog;
/// let catalog = Catalog::new(ctx);
/// if let Some(svc) = catalog.service("demo", "web").await? {
///     println!("{} has ClusterIPs {:?}", svc.name, svc.cluster_ips);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: KubeContext,
    index: Arc<RwLock<Index>>,
    /// `None`: the whole cluster; else each namespace watched.
    scopes: tokio::sync::Mutex<HashMap<Option<String>, Arc<Scope>>>,
    /// Whether cluster-wide lists were refused (403), decided once.
    cluster_wide: tokio::sync::OnceCell<bool>,
    /// Namespaces whose lists failed, already warned about.
    warned: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn read(index: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}

impl Catalog {
    /// A catalog of the cluster behind `ctx`; it watches nothing until first asked.
    pub fn new(ctx: KubeContext) -> Catalog {
        Catalog {
            inner: Arc::new(Inner {
                ctx,
                index: Arc::default(),
                scopes: tokio::sync::Mutex::default(),
                cluster_wide: tokio::sync::OnceCell::new(),
                warned: Mutex::default(),
            }),
        }
    }

    /// Whether the catalog watches the whole cluster (else one namespace at a time).
    ///
    /// # Errors
    ///
    /// None today; kept fallible for the probe's API errors other than 403.
    pub async fn cluster_wide(&self) -> Result<bool, Error> {
        let ctx = &self.inner.ctx;
        let wide = self
            .inner
            .cluster_wide
            .get_or_init(|| async {
                let lp = ListParams::default().limit(1);
                let svcs: Api<Service> = Api::all(ctx.client().clone());
                let pods: Api<Pod> = Api::all(ctx.client().clone());
                let ok = |r: kube::Result<_>| match r {
                    Ok(_) => true,
                    Err(e) => {
                        debug!(error = %e, "cluster-wide list refused; watching per namespace");
                        false
                    }
                };
                ok(svcs.list_metadata(&lp).await.map(|_| ()))
                    && ok(pods.list_metadata(&lp).await.map(|_| ()))
            })
            .await;
        Ok(*wide)
    }

    /// Makes sure `namespace`'s services and pods are watched and listed (a cluster-wide
    /// watch covers every namespace).
    ///
    /// # Errors
    ///
    /// The list's error ([`Error::Forbidden`] without `list services` or `list pods`), or
    /// [`Error::Unreachable`] when the first list takes longer than 30 s.
    pub async fn ensure(&self, namespace: &str) -> Result<(), Error> {
        let scope_key = if self.cluster_wide().await? {
            None
        } else {
            Some(namespace.to_string())
        };
        let scope = {
            let mut scopes = self.inner.scopes.lock().await;
            scopes
                .entry(scope_key.clone())
                .or_insert_with(|| Arc::new(self.start(scope_key.as_deref())))
                .clone()
        };
        for (rx, resource) in [(&scope.services, "services"), (&scope.pods, "pods")] {
            let mut rx = rx.clone();
            let listed = tokio::time::timeout(FIRST_LIST, rx.wait_for(|l| *l != Listing::Pending))
                .await
                .map_err(|_| Error::Unreachable {
                    server: self.inner.ctx.server().to_string(),
                    message: format!(
                        "listing {resource} in namespace {namespace:?} took longer than {}s",
                        FIRST_LIST.as_secs()
                    ),
                })?
                .map(|l| l.clone())
                .unwrap_or(Listing::Pending);
            if let Listing::Failed(message) = listed {
                let first = self
                    .inner
                    .warned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(format!("{namespace}/{resource}"));
                if first {
                    warn!(%namespace, resource, %message, "cannot list; routing without them");
                }
                return Err(Error::Api {
                    action: format!("list {resource} in namespace {namespace:?}"),
                    code: 0,
                    message,
                });
            }
        }
        Ok(())
    }

    fn start(&self, namespace: Option<&str>) -> Scope {
        let (stx, srx) = watch::channel(Listing::Pending);
        let (ptx, prx) = watch::channel(Listing::Pending);
        let tasks = vec![
            self.spawn::<Service>(namespace, stx),
            self.spawn::<Pod>(namespace, ptx),
        ];
        Scope {
            services: srx,
            pods: prx,
            tasks,
        }
    }

    fn spawn<K: Indexed>(
        &self,
        namespace: Option<&str>,
        listing: watch::Sender<Listing>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.inner.ctx.client().clone();
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let index = self.inner.index.clone();
        let scope = namespace.map(str::to_string);
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            // Objects seen since the last `Init`, to drop the ones a relist no longer has.
            let mut fresh: HashSet<Key> = HashSet::new();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(WatchEvent::Apply(o)) => K::insert(&mut write(&index), &o),
                    Ok(WatchEvent::Delete(o)) => {
                        if let (Some(ns), Some(n)) = (o.namespace(), o.meta().name.clone()) {
                            K::remove(&mut write(&index), &(ns, n));
                        }
                    }
                    Ok(WatchEvent::Init) => fresh.clear(),
                    Ok(WatchEvent::InitApply(o)) => {
                        if let (Some(ns), Some(n)) = (o.namespace(), o.meta().name.clone()) {
                            fresh.insert((ns, n));
                        }
                        K::insert(&mut write(&index), &o);
                    }
                    Ok(WatchEvent::InitDone) => {
                        let mut ix = write(&index);
                        for k in K::keys(&ix, scope.as_deref()) {
                            if !fresh.contains(&k) {
                                K::remove(&mut ix, &k);
                            }
                        }
                        drop(ix);
                        fresh.clear();
                        listing.send_replace(Listing::Ready);
                    }
                    Err(e) => {
                        debug!(resource = K::RESOURCE, error = %e, "catalog watch failed; retrying");
                        listing.send_if_modified(|l| {
                            if *l == Listing::Pending {
                                *l = Listing::Failed(e.to_string());
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            }
        })
    }

    /// The service `name` in `namespace`, when it exists.
    ///
    /// # Errors
    ///
    /// As [`Catalog::ensure`].
    pub async fn service(&self, namespace: &str, name: &str) -> Result<Option<ServiceInfo>, Error> {
        self.ensure(namespace).await?;
        let key = (namespace.to_string(), name.to_string());
        Ok(read(&self.inner.index).services.get(&key).cloned())
    }

    /// Whether `namespace` has any service (how a two-label name `svc.ns` is told apart from
    /// an outside name like `db.internal`).
    ///
    /// # Errors
    ///
    /// As [`Catalog::ensure`].
    pub async fn has_namespace(&self, namespace: &str) -> Result<bool, Error> {
        self.ensure(namespace).await?;
        Ok(read(&self.inner.index).namespaces.contains_key(namespace))
    }

    /// The pod `name` in `namespace`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let key = (namespace.to_string(), name.to_string());
        read(&self.inner.index).pods.get(&key).cloned()
    }

    /// The service whose ClusterIP is `ip`, among the namespaces watched.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<ServiceInfo> {
        let ix = read(&self.inner.index);
        ix.by_cluster_ip
            .get(&ip)
            .and_then(|k| ix.services.get(k))
            .cloned()
    }

    /// The pod whose IP is `ip`, among the namespaces watched.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodInfo> {
        let ix = read(&self.inner.index);
        ix.by_pod_ip.get(&ip).and_then(|k| ix.pods.get(k)).cloned()
    }

    /// The pod named `hostname.subdomain` in `namespace` (its DNS name under a headless
    /// service `subdomain`).
    pub fn pod_by_hostname(
        &self,
        namespace: &str,
        subdomain: &str,
        hostname: &str,
    ) -> Option<PodInfo> {
        let ix = read(&self.inner.index);
        let key = (
            namespace.to_string(),
            subdomain.to_string(),
            hostname.to_string(),
        );
        let name = ix.by_hostname.get(&key)?;
        ix.pods.get(&(namespace.to_string(), name.clone())).cloned()
    }

    /// Every service known, by namespace, for the PAC file.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, name) in read(&self.inner.index).services.keys() {
            out.entry(ns.clone()).or_default().push(name.clone());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Every ClusterIP and every pod IP known, for the PAC file's ranges.
    pub fn addresses(&self) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let ix = read(&self.inner.index);
        let mut svc: Vec<IpAddr> = ix.by_cluster_ip.keys().copied().collect();
        let mut pods: Vec<IpAddr> = ix.by_pod_ip.keys().copied().collect();
        svc.sort();
        pods.sort();
        (svc, pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_follows_applies_and_deletes() {
        let mut ix = Index::default();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "1"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .expect("service");
        Service::insert(&mut ix, &svc);
        let key = ("demo".to_string(), "web".to_string());
        let ip: IpAddr = "10.96.0.10".parse().expect("ip");
        assert_eq!(ix.by_cluster_ip.get(&ip), Some(&key));
        assert_eq!(ix.services[&key].ports[0].protocol, "TCP");
        assert_eq!(ix.services[&key].selector, "app=web");
        Service::remove(&mut ix, &key);
        assert!(ix.by_cluster_ip.is_empty() && ix.namespaces.is_empty());

        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "demo"},
            "spec": {"hostname": "db-0", "subdomain": "db", "containers": []},
            "status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}
        }))
        .expect("pod");
        Pod::insert(&mut ix, &pod);
        let k = ("demo".to_string(), "db".to_string(), "db-0".to_string());
        assert_eq!(ix.by_hostname.get(&k).map(String::as_str), Some("db-0"));
        assert_eq!(ix.pods[&("demo".into(), "db-0".into())].ips.len(), 1);
    }
}
