//! Target resolution: turns a target and a remote port into the ready `(pod, port)`
//! endpoints behind it, and keeps that set current by watching (EndpointSlices for a
//! service, pods for a pod, a selector or a workload: deployment, statefulset, replicaset),
//! so the next connection goes to a live pod without a lookup on its path. A statefulset's
//! endpoints are one pod, the one `kubectl port-forward` takes (`pod_order.rs`), kept while
//! it stays ready. The watches are shared by every forward of one
//! cluster connection that asks the same question (`watches.rs`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::core::{Expression, Selector};
use tokio::sync::watch;

use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::pod_order;
use crate::spec::{RemotePort, SpecError, Target};
use crate::watches::{Filter, View, Watched};

/// How long one API call made while resolving may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The namespace's shared watch of services, held so that the next forward to a
    /// service of this namespace finds it there instead of asking the API server.
    _services: Option<View<Service>>,
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

/// Which of a target's pods connections go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Every ready pod, round robin, as a Service spreads connections.
    All,
    /// One ready pod, the one `kubectl port-forward` takes, kept while it stays ready
    /// (a statefulset's pods are not interchangeable).
    One,
}

/// What to watch.
#[derive(Debug, Clone)]
enum Source {
    Pods {
        labels: Option<Selector>,
        name: Option<String>,
        port: PortChoice,
        require_ready: bool,
        pick: Pick,
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

/// The endpoint of the pod kubectl would take among `ready` (of `pods`), or of `kept` while
/// it is still among them.
fn one_endpoint(
    pods: &BTreeMap<String, Pod>,
    ready: Vec<Endpoint>,
    kept: Option<&str>,
) -> Option<Endpoint> {
    if let Some(e) = ready.iter().find(|e| Some(e.pod.as_str()) == kept) {
        return Some(e.clone());
    }
    let best = ready
        .iter()
        .filter_map(|e| pods.get(&e.pod))
        .min_by(|a, b| pod_order::prefer(a, b))?;
    ready
        .into_iter()
        .find(|e| Some(&e.pod) == best.metadata.name.as_ref())
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

/// The service `name` of `ns`, from the namespace's shared watch of services (returned, for
/// the caller to hold: 1,000 forwards to services of one namespace then list services once
/// instead of getting each); asked for alone when the watch has not seen it (created just
/// now) or cannot run (no `list services`), so the answer is never older than a GET's.
async fn service(
    ctx: &KubeContext,
    ns: &str,
    name: &str,
) -> Result<(Service, Option<View<Service>>)> {
    let watched = Watched {
        api: Api::<Service>::namespaced(ctx.client().clone(), ns),
        resource: "services",
        namespace: ns.to_owned(),
        filter: Filter {
            labels: None,
            name: Some(name.to_owned()),
        },
    };
    let view = match ctx.watches().get_or_start(watched).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(namespace = ns, error = %e, "no shared watch of services; getting the one");
            None
        }
    };
    if let Some(svc) = view.as_ref().and_then(|v| v.get(name)) {
        return Ok((svc, view));
    }
    let api: Api<Service> = Api::namespaced(ctx.client().clone(), ns);
    let svc = call(ctx, api.get(name), "get", "services", ns, Some(name)).await?;
    Ok((svc, view))
}

impl Endpoints {
    /// Resolves `target` and `remote` in `namespace` and starts watching.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the pod, service or workload does not exist,
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
        let mut services = None;
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
                    pick: Pick::All,
                }
            }
            Target::PodSelector { selector } => Source::Pods {
                labels: Some(Selector::from(selector)),
                name: None,
                port: choice,
                require_ready: true,
                pick: Pick::All,
            },
            Target::Deployment { name } => {
                let api: Api<Deployment> = Api::namespaced(ctx.client().clone(), ns);
                let d = call(ctx, api.get(name), "get", "deployments", ns, Some(name)).await?;
                let spec = d.spec;
                workload_source(target, &spec.selector, &spec.template, choice, Pick::All)?
            }
            Target::StatefulSet { name } => {
                let api: Api<StatefulSet> = Api::namespaced(ctx.client().clone(), ns);
                let s = call(ctx, api.get(name), "get", "statefulsets", ns, Some(name)).await?;
                let spec = s.spec;
                workload_source(target, &spec.selector, &spec.template, choice, Pick::One)?
            }
            Target::ReplicaSet { name } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client().clone(), ns);
                let r = call(ctx, api.get(name), "get", "replicasets", ns, Some(name)).await?;
                let spec = r.spec;
                let template = spec.template.unwrap_or_default();
                workload_source(target, &spec.selector, &template, choice, Pick::All)?
            }
            Target::Service { name } => {
                let (svc, view) = service(ctx, ns, name).await?;
                services = view;
                service_source(&svc, name, remote)?
            }
            Target::Remote { host } => {
                return Err(Error::Api {
                    action: format!("resolve proxy/{host}"),
                    code: 400,
                    message: "remote addresses go through the relay, not a pod port".into(),
                });
            }
            Target::Socks(_) => {
                return Err(Error::Api {
                    action: "resolve socks".into(),
                    code: 400,
                    message: "a forward proxy's clients name their destinations".into(),
                });
            }
        };
        let (tx, rx) = watch::channel(Vec::new());
        // The first list happens before this returns (or was done by whoever started the
        // shared watch), so the caller starts with the current endpoints.
        let task = match source {
            Source::Pods {
                labels,
                name,
                port,
                require_ready,
                pick,
            } => {
                let watched = Watched {
                    api: Api::<Pod>::namespaced(ctx.client().clone(), ns),
                    resource: "pods",
                    namespace: ns.to_owned(),
                    filter: Filter { labels, name },
                };
                // The pod kept by `Pick::One`, by name: a statefulset's pod that comes back
                // under its name is the same member, and is kept.
                let kept = Mutex::new(None::<String>);
                let compute = move |m: &BTreeMap<String, Pod>| {
                    let ready = pod_endpoints(m, &port, require_ready);
                    if pick == Pick::All {
                        return ready;
                    }
                    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                    let one = one_endpoint(m, ready, kept.as_deref());
                    kept.clone_from(&one.as_ref().map(|e| e.pod.clone()));
                    one.into_iter().collect()
                };
                ctx.watches()
                    .get_or_start(watched)
                    .await?
                    .follow(compute, tx)
            }
            Source::Slices {
                service,
                port_name,
                fixed,
            } => {
                let labels = Expression::Equal("kubernetes.io/service-name".to_owned(), service);
                let watched = Watched {
                    api: Api::<EndpointSlice>::namespaced(ctx.client().clone(), ns),
                    resource: "endpointslices",
                    namespace: ns.to_owned(),
                    filter: Filter {
                        labels: Some(labels.into()),
                        name: None,
                    },
                };
                let compute = move |m: &BTreeMap<String, EndpointSlice>| {
                    slice_endpoints(m, port_name.as_deref(), fixed)
                };
                ctx.watches()
                    .get_or_start(watched)
                    .await?
                    .follow(compute, tx)
            }
        };
        Ok(Endpoints {
            rx,
            next: AtomicUsize::new(0),
            task,
            _services: services,
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
        list.get(self.spread() % list.len()).cloned()
    }

    /// The next number of the round robin [`Endpoints::pick`] spreads by, for a caller
    /// picking among some of the endpoints.
    pub(crate) fn spread(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

fn port_not_found_in_pod(pod: &Pod, target: &Target, port: &str) -> Error {
    port_not_found(pod.spec.as_ref(), target, port)
}

/// A port name that no container of `spec` declares.
fn port_not_found(spec: Option<&PodSpec>, target: &Target, port: &str) -> Error {
    let available = spec
        .into_iter()
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

/// The ready pods of a workload (deployment, statefulset, replicaset): those of its
/// selector, as kubectl's `SelectorsForObject` takes them. A port name that the pod
/// template does not declare fails here, as it does for a pod, rather than as no ready pod
/// after the wait.
fn workload_source(
    target: &Target,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    port: PortChoice,
    pick: Pick,
) -> Result<Source> {
    if let PortChoice::Name(name) = &port {
        let spec = template.spec.as_ref();
        let declared = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .any(|p| p.name.as_deref() == Some(name.as_str()));
        if !declared {
            return Err(port_not_found(spec, target, name));
        }
    }
    let labels = Selector::try_from(selector.clone()).map_err(|e| {
        Error::Spec(SpecError::InvalidSelector {
            selector: format!(
                "{target} spec.selector {}",
                serde_json::to_string(selector).unwrap_or_default()
            ),
            problem: e.to_string(),
        })
    })?;
    Ok(Source::Pods {
        labels: Some(labels),
        name: None,
        port,
        require_ready: true,
        pick,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn ready_pod(name: &str, ready_at: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "db", "containerPort": 5432}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": ready_at}
            ]},
        }))
        .expect("pod")
    }

    #[test]
    fn one_pod_is_kubectls_choice_and_is_kept_while_ready() {
        let pods = BTreeMap::from([
            (
                "db-0".to_string(),
                ready_pod("db-0", "2026-01-01T00:00:00Z"),
            ),
            (
                "db-1".to_string(),
                ready_pod("db-1", "2026-01-01T00:05:00Z"),
            ),
        ]);
        let port = PortChoice::Name("db".into());
        let ready = pod_endpoints(&pods, &port, true);
        let pod = |e: Option<Endpoint>| e.map(|e| e.pod);
        assert_eq!(
            pod(one_endpoint(&pods, ready.clone(), None)).as_deref(),
            Some("db-0"),
            "ready the longest"
        );
        assert_eq!(
            pod(one_endpoint(&pods, ready.clone(), Some("db-1"))).as_deref(),
            Some("db-1"),
            "the kept pod stays while it is ready"
        );
        let only_db0: Vec<Endpoint> = ready.into_iter().filter(|e| e.pod == "db-0").collect();
        assert_eq!(
            pod(one_endpoint(&pods, only_db0, Some("db-1"))).as_deref(),
            Some("db-0")
        );
        assert_eq!(one_endpoint(&pods, Vec::new(), Some("db-0")), None);
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
