//! Target resolution: turns a target and a remote port into the ready `(pod, port)`
//! endpoints behind it, and keeps that set current by watching (EndpointSlices for a
//! service, pods for a pod, a selector or a deployment), so the next connection goes to a
//! live pod without a lookup on its path.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::single_flight::SingleFlight;
use crate::spec::{RemotePort, Target};

/// How long one API call made while resolving may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch that has sent nothing (not even a bookmark) for this long is started again.
const WATCH_IDLE: Duration = Duration::from_secs(120);
/// Server-side watch timeout asked for.
const WATCH_SECONDS: u32 = 290;

/// One place a connection can go: a pod and the port on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The pod's name.
    pub pod: String,
    /// The port on the pod.
    pub port: u16,
}

/// The live endpoints of one target and port, updated by a background watch that stops
/// when this value is dropped.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{RemotePort, Target};
/// let eps = kforward_core::Endpoints::resolve(&ctx, "demo", &Target::Service { name: "web".into() }, &RemotePort::Number(80)).await?;
/// let ep = eps.pick(std::time::Duration::from_secs(60)).await;
/// # Ok(()) }
/// ```
pub struct Endpoints {
    rx: watch::Receiver<Vec<Endpoint>>,
    next: AtomicUsize,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("current", &*self.rx.borrow())
            .finish()
    }
}

/// Which port of an endpoint a pod offers for the remote port asked for.
#[derive(Debug, Clone)]
enum PortChoice {
    Number(u16),
    /// A container port name, looked up in each pod.
    Name(String),
}

/// What to watch.
#[derive(Debug, Clone)]
enum Source {
    Pods {
        labels: Option<String>,
        name: Option<String>,
        port: PortChoice,
        require_ready: bool,
    },
    Slices {
        service: String,
        /// The service port's name, whose resolved number the slices carry.
        port_name: Option<String>,
        /// A fixed port (numeric targetPort, or a kftray port that is not a service port).
        fixed: Option<u16>,
    },
}

fn pod_port(pod: &Pod, choice: &PortChoice) -> Option<u16> {
    match choice {
        PortChoice::Number(n) => Some(*n),
        PortChoice::Name(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

fn pod_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn pod_ready(pod: &Pod) -> bool {
    pod_running(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_endpoints(
    pods: &BTreeMap<String, Pod>,
    port: &PortChoice,
    require_ready: bool,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = pods
        .values()
        .filter(|p| {
            if require_ready {
                pod_ready(p)
            } else {
                pod_running(p)
            }
        })
        .filter_map(|p| {
            Some(Endpoint {
                pod: p.metadata.name.clone()?,
                port: pod_port(p, port)?,
            })
        })
        .collect();
    out.sort();
    out
}

fn slice_endpoints(
    slices: &BTreeMap<String, EndpointSlice>,
    port_name: Option<&str>,
    fixed: Option<u16>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in slices.values() {
        let port = fixed.or_else(|| {
            s.ports.iter().flatten().find_map(|p| {
                let name = p.name.as_deref().unwrap_or("");
                (name == port_name.unwrap_or(""))
                    .then_some(p.port)
                    .flatten()
                    .and_then(|n| u16::try_from(n).ok())
            })
        });
        let Some(port) = port else { continue };
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let terminating = e
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            let Some(r) = &e.target_ref else { continue };
            if !ready || terminating || r.kind.as_deref() != Some("Pod") {
                continue;
            }
            if let Some(pod) = &r.name {
                out.push(Endpoint {
                    pod: pod.clone(),
                    port,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn call<T>(
    ctx: &KubeContext,
    fut: impl std::future::Future<Output = kube::Result<T>>,
    verb: &str,
    resource: &str,
    ns: &str,
    name: Option<&str>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| Error::from_kube(e, ctx.server(), verb, resource, ns, name)),
        Err(_) => Err(Error::Unreachable {
            server: ctx.server().to_string(),
            message: format!(
                "no answer to {verb} {resource} within {}s",
                CALL_TIMEOUT.as_secs()
            ),
        }),
    }
}

impl Endpoints {
    /// Resolves `target` and `remote` in `namespace` and starts watching.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the pod, service or deployment does not exist,
    /// [`Error::PortNotFound`] for a port name nobody declares, and the API errors
    /// (403, 401, unreachable).
    pub async fn resolve(
        ctx: &KubeContext,
        namespace: &str,
        target: &Target,
        remote: &RemotePort,
    ) -> Result<Endpoints> {
        let ns = namespace;
        let choice = match remote {
            RemotePort::Number(n) => PortChoice::Number(*n),
            RemotePort::Name(s) => PortChoice::Name(s.clone()),
        };
        let source = match target {
            Target::Pod { name } => {
                let api: Api<Pod> = Api::namespaced(ctx.client().clone(), ns);
                let pod = call(ctx, api.get(name), "get", "pods", ns, Some(name)).await?;
                if let PortChoice::Name(port) = &choice
                    && pod_port(&pod, &choice).is_none()
                {
                    return Err(port_not_found_in_pod(&pod, target, port));
                }
                Source::Pods {
                    labels: None,
                    name: Some(name.clone()),
                    port: choice,
                    require_ready: false,
                }
            }
            Target::PodSelector { selector } => Source::Pods {
                labels: Some(selector.to_string()),
                name: None,
                port: choice,
                require_ready: true,
            },
            Target::Deployment { name } => {
                let api: Api<Deployment> = Api::namespaced(ctx.client().clone(), ns);
                let d = call(ctx, api.get(name), "get", "deployments", ns, Some(name)).await?;
                Source::Pods {
                    labels: Some(selector_string(&d.spec.selector)),
                    name: None,
                    port: choice,
                    require_ready: true,
                }
            }
            Target::Service { name } => {
                let api: Api<Service> = Api::namespaced(ctx.client().clone(), ns);
                let svc = call(ctx, api.get(name), "get", "services", ns, Some(name)).await?;
                service_source(&svc, name, remote)?
            }
            Target::Remote { host } => {
                return Err(Error::Api {
                    action: format!("resolve proxy/{host}"),
                    code: 400,
                    message: "remote addresses go through the relay, not a pod port".into(),
                });
            }
        };
        let (tx, rx) = watch::channel(Vec::new());
        // The first list happens before this returns (or was done by whoever started the
        // shared watch), so the caller starts with the current endpoints.
        let task = match &source {
            Source::Pods {
                labels,
                name,
                port,
                require_ready,
            } => {
                let api: Api<Pod> = Api::namespaced(ctx.client().clone(), ns);
                let mut lp = ListParams::default();
                if let Some(l) = labels {
                    lp = lp.labels(l);
                }
                if let Some(n) = name {
                    lp = lp.fields(&format!("metadata.name={n}"));
                }
                let (port, ready) = (port.clone(), *require_ready);
                let compute = move |m: &BTreeMap<String, Pod>| pod_endpoints(m, &port, ready);
                let w = Watched {
                    ctx: ctx.clone(),
                    api,
                    ns: ns.to_string(),
                    resource: "pods",
                    lp,
                };
                follow(ctx.watches().get_or_start(w).await?, compute, tx)
            }
            Source::Slices {
                service,
                port_name,
                fixed,
            } => {
                let api: Api<EndpointSlice> = Api::namespaced(ctx.client().clone(), ns);
                let lp =
                    ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
                let (port_name, fixed) = (port_name.clone(), *fixed);
                let compute = move |m: &BTreeMap<String, EndpointSlice>| {
                    slice_endpoints(m, port_name.as_deref(), fixed)
                };
                let w = Watched {
                    ctx: ctx.clone(),
                    api,
                    ns: ns.to_string(),
                    resource: "endpointslices",
                    lp,
                };
                follow(ctx.watches().get_or_start(w).await?, compute, tx)
            }
        };
        Ok(Endpoints {
            rx,
            next: AtomicUsize::new(0),
            task,
        })
    }

    /// The ready endpoints now.
    pub fn current(&self) -> Vec<Endpoint> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every change of the endpoint set.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Endpoint>> {
        self.rx.clone()
    }

    /// The next endpoint, round robin over the ready ones (as a Service spreads
    /// connections), waiting up to `timeout` for one to appear.
    pub async fn pick(&self, timeout: Duration) -> Option<Endpoint> {
        let mut rx = self.rx.clone();
        let list = tokio::time::timeout(timeout, rx.wait_for(|v| !v.is_empty()))
            .await
            .ok()?
            .ok()?
            .clone();
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        list.get(i % list.len()).cloned()
    }
}

fn port_not_found_in_pod(pod: &Pod, target: &Target, port: &str) -> Error {
    let available = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| match &p.name {
            Some(n) => format!("{n} ({})", p.container_port),
            None => p.container_port.to_string(),
        })
        .collect();
    Error::PortNotFound {
        target: target.to_string(),
        port: port.to_string(),
        available,
    }
}

fn selector_string(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Maps the remote port through the service: a service port by number or name gives its
/// target port (named target ports come resolved in the EndpointSlices); a number that is
/// no service port is taken as the target port itself, which is what kftray configs mean.
fn service_source(svc: &Service, name: &str, remote: &RemotePort) -> Result<Source> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let found = ports.iter().find(|p| match remote {
        RemotePort::Number(n) => i32::from(*n) == p.port,
        RemotePort::Name(s) => p.name.as_deref() == Some(s.as_str()),
    });
    let Some(sp) = found else {
        return match remote {
            RemotePort::Number(n) => Ok(Source::Slices {
                service: name.to_string(),
                port_name: None,
                fixed: Some(*n),
            }),
            RemotePort::Name(s) => Err(Error::PortNotFound {
                target: format!("svc/{name}"),
                port: s.clone(),
                available: ports
                    .iter()
                    .map(|p| match &p.name {
                        Some(n) => format!("{n} ({})", p.port),
                        None => p.port.to_string(),
                    })
                    .collect(),
            }),
        };
    };
    let fixed = match &sp.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(_)) => None,
        None => u16::try_from(sp.port).ok(),
    };
    Ok(Source::Slices {
        service: name.to_string(),
        port_name: sp.name.clone(),
        fixed,
    })
}

/// A list that keeps the objects by name, with the list's resourceVersion.
struct Listed<K> {
    objects: BTreeMap<String, K>,
    rv: String,
}

async fn list<K>(
    ctx: &KubeContext,
    api: &Api<K>,
    lp: &ListParams,
    ns: &str,
    resource: &str,
) -> Result<Listed<K>>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let l = call(ctx, api.list(lp), "list", resource, ns, None).await?;
    let rv = l.metadata.resource_version.clone().unwrap_or_default();
    let objects = l
        .items
        .into_iter()
        .filter_map(|o| Some((o.meta().name.clone()?, o)))
        .collect();
    Ok(Listed { objects, rv })
}

/// What one watch lists and watches.
#[derive(Clone)]
struct Watched<K: Clone> {
    ctx: KubeContext,
    api: Api<K>,
    ns: String,
    resource: &'static str,
    lp: ListParams,
}

/// Watches shared by every user of one [`KubeContext`]: one list and one watch per resource,
/// namespace and selector, however many forwards follow it (a `kforward run` with 200
/// forwards to one service holds one watch, not 200 connections).
#[derive(Default)]
pub(crate) struct WatchRegistry {
    watches: Mutex<HashMap<WatchKey, Weak<dyn Any + Send + Sync>>>,
    /// Starts in progress, one per key.
    starting: SingleFlight,
}

/// Resource, namespace, label selector, field selector.
type WatchKey = (&'static str, String, Option<String>, Option<String>);

/// The objects one watch keeps current; the watch stops when the last user drops this.
struct SharedWatch<K> {
    objects: watch::Receiver<BTreeMap<String, K>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for SharedWatch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WatchRegistry {
    /// The running watch of `w`'s resource and selectors, or a new one (listed first, so it
    /// starts with the current objects).
    async fn get_or_start<K>(&self, w: Watched<K>) -> Result<Arc<SharedWatch<K>>>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let key: WatchKey = (
            w.resource,
            w.ns.clone(),
            w.lp.label_selector.clone(),
            w.lp.field_selector.clone(),
        );
        if let Some(shared) = self.running::<K>(&key) {
            return Ok(shared);
        }
        // Forwards started together all miss at first: one of them lists and starts the
        // watch while the others wait for it (`SingleFlight`), instead of each starting
        // its own (seen: 69 watches and 138 lists for 200 forwards of one service).
        let mut mine = None;
        {
            let (mine, w, key) = (&mut mine, w.clone(), key.clone());
            self.starting
                .run(format!("{key:?}"), move || async move {
                    *mine = Some(self.start(w, key).await?);
                    Ok::<(), Error>(())
                })
                .await?;
        }
        match mine.or_else(|| self.running::<K>(&key)) {
            Some(shared) => Ok(shared),
            // Whoever started it has already let it go.
            None => self.start(w, key).await,
        }
    }

    /// The running watch of `key`, if any.
    fn running<K: Send + Sync + 'static>(&self, key: &WatchKey) -> Option<Arc<SharedWatch<K>>> {
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .and_then(Weak::upgrade)
            .and_then(|a| a.downcast::<SharedWatch<K>>().ok())
    }

    /// Lists, starts the watch and registers it under `key`.
    async fn start<K>(&self, w: Watched<K>, key: WatchKey) -> Result<Arc<SharedWatch<K>>>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let first = list(&w.ctx, &w.api, &w.lp, &w.ns, w.resource).await?;
        let shared = Arc::new(spawn_watch(w, first));
        let erased: Arc<dyn Any + Send + Sync> = shared.clone();
        let mut map = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, v| v.strong_count() > 0);
        map.insert(key, Arc::downgrade(&erased));
        Ok(shared)
    }
}

/// Keeps `tx` at `compute` of the shared watch's objects, until the receivers are gone.
fn follow<K, F>(
    shared: Arc<SharedWatch<K>>,
    compute: F,
    tx: watch::Sender<Vec<Endpoint>>,
) -> tokio::task::JoinHandle<()>
where
    K: Send + Sync + 'static,
    F: Fn(&BTreeMap<String, K>) -> Vec<Endpoint> + Send + Sync + 'static,
{
    let mut objects = shared.objects.clone();
    let publish = move |objects: &mut watch::Receiver<BTreeMap<String, K>>| {
        let next = compute(&objects.borrow_and_update());
        tx.send_if_modified(|cur| {
            if *cur == next {
                false
            } else {
                *cur = next;
                true
            }
        });
    };
    publish(&mut objects);
    tokio::spawn(async move {
        // Holding the shared watch keeps it running for as long as this follows it.
        let _shared = shared;
        while objects.changed().await.is_ok() {
            publish(&mut objects);
        }
    })
}

fn spawn_watch<K>(w: Watched<K>, first: Listed<K>) -> SharedWatch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let Watched {
        ctx,
        api,
        ns,
        resource,
        lp,
    } = w;
    let Listed { objects, mut rv } = first;
    let (tx, rx) = watch::channel(objects);
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut wp = WatchParams::default().timeout(WATCH_SECONDS);
            if let Some(l) = &lp.label_selector {
                wp = wp.labels(l);
            }
            if let Some(f) = &lp.field_selector {
                wp = wp.fields(f);
            }
            let relist = match tokio::time::timeout(CALL_TIMEOUT, api.watch(&wp, &rv)).await {
                Ok(Ok(stream)) => {
                    let mut stream = stream.boxed();
                    let mut relist = false;
                    loop {
                        let ev = match tokio::time::timeout(WATCH_IDLE, stream.try_next()).await {
                            Err(_) => break,
                            Ok(Err(e)) => {
                                debug!(error = %e, "watch stream broke");
                                break;
                            }
                            Ok(Ok(None)) => break,
                            Ok(Ok(Some(ev))) => ev,
                        };
                        backoff = Duration::from_millis(200);
                        match ev {
                            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                                rv = o.meta().resource_version.clone().unwrap_or(rv);
                                if let Some(n) = o.meta().name.clone() {
                                    tx.send_modify(|m| {
                                        m.insert(n, o);
                                    });
                                }
                            }
                            WatchEvent::Deleted(o) => {
                                rv = o.meta().resource_version.clone().unwrap_or(rv);
                                if let Some(n) = &o.meta().name {
                                    tx.send_if_modified(|m| m.remove(n).is_some());
                                }
                            }
                            WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                            WatchEvent::Error(e) => {
                                debug!(code = e.code, message = %e.message, "watch error event");
                                relist = true;
                                break;
                            }
                        }
                    }
                    relist
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "watch failed to start");
                    true
                }
                Err(_) => true,
            };
            if tx.is_closed() {
                return;
            }
            if relist {
                // Cut short when the API server is reachable again after an outage.
                let back = ctx.api_back().notified();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = back => debug!("API server reachable again; relisting now"),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match list(&ctx, &api, &lp, &ns, resource).await {
                    Ok(l) => {
                        rv = l.rv;
                        tx.send_replace(l.objects);
                    }
                    Err(e) => warn!(error = %e, "relisting failed; retrying"),
                }
            }
        }
    });
    SharedWatch { objects: rx, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    #[test]
    fn slices_give_ready_pods_with_the_named_port() {
        let s = slice(json!({
            "metadata": {"name": "web-x"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.0.0.2"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "b"}},
                {"addresses": ["127.0.0.3"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "c"}},
                {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "a"}},
            ],
        }));
        let m = BTreeMap::from([("web-x".to_string(), s)]);
        let eps = slice_endpoints(&m, Some("http"), None);
        assert_eq!(
            eps,
            vec![
                Endpoint {
                    pod: "a".into(),
                    port: 8080
                },
                Endpoint {
                    pod: "b".into(),
                    port: 8080
                }
            ]
        );
        assert!(slice_endpoints(&m, Some("grpc"), None).is_empty());
        assert_eq!(slice_endpoints(&m, None, Some(9000))[0].port, 9000);
    }
}
