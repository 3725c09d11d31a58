//! Routing by destination: which way one connection goes (straight to a pod through a
//! port-forward, through the relay pod, or directly from this machine), decided per
//! connection from the catalog of services and pods.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::catalog::{Catalog, ServiceInfo};
use super::error::ProxyError;
use super::socks::{Address, Host};
use crate::client::KubeContext;
use crate::no_proxy::NoProxy;
use crate::resolve::{Endpoint, Endpoints};
use crate::spec::{RemotePort, Target};

/// Where one connection goes.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::Route;
/// let r = Route::Relay { host: "db.internal".into(), port: 5432 };
/// assert_eq!(r.to_string(), "relay db.internal:5432");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "route", rename_all = "snake_case")]
pub enum Route {
    /// A port-forward to a pod's port.
    Pod {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The port on the pod.
        port: u16,
        /// The service the pod was picked from, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// Through the relay pod, where the cluster's DNS resolves the host.
    Relay {
        /// The host as the cluster sees it.
        host: String,
        /// The port.
        port: u16,
    },
    /// From this machine (`--direct`).
    Direct {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Pod {
                namespace,
                pod,
                port,
                service: Some(s),
            } => write!(f, "pod {namespace}/{pod}:{port} (svc/{s})"),
            Route::Pod {
                namespace,
                pod,
                port,
                service: None,
            } => write!(f, "pod {namespace}/{pod}:{port}"),
            Route::Relay { host, port } => write!(f, "relay {}:{port}", bracket(host)),
            Route::Direct { host, port } => write!(f, "direct {}:{port}", bracket(host)),
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// What a destination name means in the cluster's DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterName {
    /// `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<domain>`; `sure` when the form can only
    /// name a service (an unknown one is then an error, not a name for the relay).
    Service {
        /// The service.
        name: String,
        /// Its namespace.
        namespace: String,
        /// Whether the name is a service name beyond doubt.
        sure: bool,
    },
    /// `a-b-c-d.ns.pod.<domain>`: the pod with that IPv4 address.
    PodAddress {
        /// The address.
        ip: Ipv4Addr,
        /// The namespace.
        namespace: String,
    },
    /// `hostname.subdomain.ns.svc.<domain>`: a pod under a headless service.
    PodHostname {
        /// The pod's `spec.hostname`.
        hostname: String,
        /// Its `spec.subdomain` (the headless service's name).
        subdomain: String,
        /// The namespace.
        namespace: String,
    },
    /// Under the cluster domain but of no form above: NXDOMAIN.
    Unknown,
    /// Not a cluster name.
    Outside,
}

/// Sorts `name` (any case, a trailing dot allowed) by the forms of the cluster's DNS
/// (Kubernetes' DNS-based service discovery specification), with `namespace` for a bare
/// service name.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::route::{classify, ClusterName};
/// let c = classify("web.demo.svc.cluster.local.", "default", "cluster.local");
/// assert_eq!(c, ClusterName::Service { name: "web".into(), namespace: "demo".into(), sure: true });
/// assert_eq!(classify("db.internal", "demo", "cluster.local"),
///     ClusterName::Service { name: "db".into(), namespace: "internal".into(), sure: false });
/// assert_eq!(classify("example.com.au", "demo", "cluster.local"), ClusterName::Outside);
/// ```
pub fn classify(name: &str, namespace: &str, domain: &str) -> ClusterName {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return ClusterName::Outside;
    }
    let under_domain = name
        .strip_suffix(domain.as_str())
        .and_then(|rest| rest.strip_suffix('.'));
    let service = |name: &str, namespace: &str, sure: bool| ClusterName::Service {
        name: name.to_string(),
        namespace: namespace.to_string(),
        sure,
    };
    if let Some(rest) = under_domain {
        let l: Vec<&str> = rest.split('.').collect();
        return match l.as_slice() {
            [svc, ns, "svc"] => service(svc, ns, true),
            [host, sub, ns, "svc"] => ClusterName::PodHostname {
                hostname: host.to_string(),
                subdomain: sub.to_string(),
                namespace: ns.to_string(),
            },
            [dashed, ns, "pod"] => match dashed.replace('-', ".").parse() {
                Ok(ip) => ClusterName::PodAddress {
                    ip,
                    namespace: ns.to_string(),
                },
                Err(_) => ClusterName::Unknown,
            },
            _ => ClusterName::Unknown,
        };
    }
    match labels.as_slice() {
        [svc, ns, "svc"] => service(svc, ns, true),
        [svc, ns] if is_label(svc) && is_label(ns) => service(svc, ns, false),
        [svc] if is_label(svc) && name != "localhost" => service(svc, namespace, true),
        _ => ClusterName::Outside,
    }
}

/// An RFC 1123 label, as namespace and service names are.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The routing settings.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// The namespace of bare service names.
    pub namespace: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Destinations to connect to from this machine.
    pub direct: NoProxy,
    /// Whether the relay may be used.
    pub relay: bool,
    /// How long to wait for a ready pod of a service.
    pub pod_wait: Duration,
}

/// A service's endpoints being followed, with the service's resourceVersion they were
/// resolved at (a changed service is resolved again).
type Followed = (String, Arc<Endpoints>);

/// Decides routes.
pub struct Router {
    ctx: KubeContext,
    catalog: Catalog,
    opts: RouteOptions,
    /// Ready endpoints per (namespace, service, port).
    endpoints: Mutex<HashMap<(String, String, u16), Followed>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("opts", &self.opts).finish()
    }
}

impl Router {
    /// A router over `catalog`.
    pub fn new(ctx: KubeContext, catalog: Catalog, opts: RouteOptions) -> Router {
        Router {
            ctx,
            catalog,
            opts,
            endpoints: Mutex::default(),
        }
    }

    /// The settings.
    pub fn options(&self) -> &RouteOptions {
        &self.opts
    }

    /// The catalog routed by.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Where a connection to `dest` goes, in this order: `--direct` rules, cluster service
    /// names, ClusterIPs, pod IPs and pod names (to a ready pod), anything else through the
    /// relay.
    ///
    /// # Errors
    ///
    /// [`ProxyError::UnknownService`], [`ProxyError::NotResolved`] for a cluster name
    /// nobody has, [`ProxyError::NoSuchPort`], [`ProxyError::NoReadyPod`],
    /// [`ProxyError::RelayDisabled`], and the cluster's errors.
    pub async fn route(&self, dest: &Address) -> Result<Route, ProxyError> {
        self.route_avoiding(dest, None).await
    }

    /// Another ready pod for `dest` than the one of `failed`, whose stream failed: for a
    /// service, the next ready pod other than it (waiting up to the pod wait for one to
    /// appear when the failed pod is `gone`, as a Deployment replaces it); `None` when
    /// there is none, or when `dest` names that one pod (a pod IP or hostname).
    pub(crate) async fn another_pod(
        &self,
        dest: &Address,
        failed: &Route,
        gone: bool,
    ) -> Option<Route> {
        let Route::Pod { pod, .. } = failed else {
            return None;
        };
        let avoid = Avoid { pod, gone };
        let next = self.route_avoiding(dest, Some(avoid)).await.ok()?;
        (next != *failed).then_some(next)
    }

    async fn route_avoiding(
        &self,
        dest: &Address,
        avoid: Option<Avoid<'_>>,
    ) -> Result<Route, ProxyError> {
        // An address sent as a name (SOCKS5 address type 3, SOCKS4a, clients told to let
        // the proxy resolve, such as PySocks with `socks5h://`) is that address: a pod IP
        // sent so goes to its pod, not to the relay as an outside name.
        let literal;
        let dest = match &dest.host {
            Host::Name(n) => match n.trim_start_matches('[').trim_end_matches(']').parse() {
                Ok(ip) => {
                    literal = Address {
                        host: Host::Ip(ip),
                        port: dest.port,
                    };
                    &literal
                }
                Err(_) => dest,
            },
            Host::Ip(_) => dest,
        };
        let port = dest.port;
        let host = match &dest.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.trim_end_matches('.').to_ascii_lowercase(),
        };
        if self.opts.direct.matching(&host, port).is_some() {
            return Ok(Route::Direct { host, port });
        }
        let cluster = |e| ProxyError::from_cluster(e, &dest.to_string());
        let outside = |host: String| {
            if self.opts.relay {
                Ok(Route::Relay { host, port })
            } else {
                Err(ProxyError::RelayDisabled {
                    target: dest.to_string(),
                })
            }
        };
        match &dest.host {
            Host::Ip(ip) => {
                self.catalog
                    .ensure(&self.opts.namespace)
                    .await
                    .map_err(cluster)?;
                if let Some(svc) = self.catalog.service_by_ip(*ip) {
                    return self.to_service(&svc, port, avoid).await;
                }
                if let Some(pod) = self.catalog.pod_by_ip(*ip) {
                    return Ok(Route::Pod {
                        namespace: pod.namespace,
                        pod: pod.name,
                        port,
                        service: None,
                    });
                }
                outside(host)
            }
            Host::Name(_) => {
                let not_resolved = |why: &str| ProxyError::NotResolved {
                    host: host.clone(),
                    message: why.to_string(),
                };
                match classify(&host, &self.opts.namespace, &self.opts.cluster_domain) {
                    ClusterName::Service {
                        name,
                        namespace,
                        sure,
                    } => {
                        // `db.internal` may be service db of namespace internal, or an outside
                        // name: a namespace that cannot be listed (403 where rights are per
                        // namespace) is taken as not being one.
                        if !sure
                            && !self
                                .catalog
                                .has_namespace(&namespace)
                                .await
                                .unwrap_or(false)
                        {
                            return outside(host);
                        }
                        match self
                            .catalog
                            .service(&namespace, &name)
                            .await
                            .map_err(cluster)?
                        {
                            Some(svc) => self.to_service(&svc, port, avoid).await,
                            None => Err(ProxyError::UnknownService {
                                service: name,
                                namespace,
                            }),
                        }
                    }
                    ClusterName::PodAddress { ip, namespace } => {
                        self.catalog.ensure(&namespace).await.map_err(cluster)?;
                        match self.catalog.pod_by_ip(IpAddr::V4(ip)) {
                            Some(pod) if pod.namespace == namespace => Ok(Route::Pod {
                                namespace,
                                pod: pod.name,
                                port,
                                service: None,
                            }),
                            _ => Err(not_resolved("no pod has that address in that namespace")),
                        }
                    }
                    ClusterName::PodHostname {
                        hostname,
                        subdomain,
                        namespace,
                    } => {
                        self.catalog.ensure(&namespace).await.map_err(cluster)?;
                        match self
                            .catalog
                            .pod_by_hostname(&namespace, &subdomain, &hostname)
                        {
                            Some(pod) => Ok(Route::Pod {
                                namespace,
                                pod: pod.name,
                                port,
                                service: Some(subdomain),
                            }),
                            None => Err(not_resolved(
                                "no pod has that hostname and subdomain in that namespace",
                            )),
                        }
                    }
                    ClusterName::Unknown => Err(not_resolved(
                        "a name under the cluster domain of no service or pod form",
                    )),
                    ClusterName::Outside => outside(host),
                }
            }
        }
    }

    /// A ready pod of `svc` for `port`: through the service port's targetPort, or, for a
    /// headless service, the same port on one of its pods.
    async fn to_service(
        &self,
        svc: &ServiceInfo,
        port: u16,
        avoid: Option<Avoid<'_>>,
    ) -> Result<Route, ProxyError> {
        let headless = svc.headless();
        if !headless
            && !svc
                .ports
                .iter()
                .any(|p| p.port == port && p.protocol == "TCP")
        {
            return Err(ProxyError::NoSuchPort {
                service: svc.name.clone(),
                namespace: svc.namespace.clone(),
                port,
                available: svc
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.port, p.protocol))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let key = (svc.namespace.clone(), svc.name.clone(), port);
        let cached = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(rv, _)| *rv == svc.resource_version)
            .map(|(_, e)| e.clone());
        let eps = match cached {
            Some(e) => e,
            None => {
                let target = if headless {
                    Target::PodSelector {
                        selector: svc.selector.parse().map_err(|_| ProxyError::NoReadyPod {
                            service: svc.name.clone(),
                            namespace: svc.namespace.clone(),
                        })?,
                    }
                } else {
                    Target::Service {
                        name: svc.name.clone(),
                    }
                };
                let e = Endpoints::resolve(
                    &self.ctx,
                    &svc.namespace,
                    &target,
                    &RemotePort::Number(port),
                )
                .await
                .map_err(|e| ProxyError::from_cluster(e, &format!("{}:{port}", svc.name)))?;
                let e = Arc::new(e);
                self.endpoints
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, (svc.resource_version.clone(), e.clone()));
                e
            }
        };
        let picked = match avoid {
            None => eps.pick(self.opts.pod_wait).await,
            Some(a) => other_endpoint(&eps, a, self.opts.pod_wait).await,
        };
        match picked {
            Some(ep) => Ok(Route::Pod {
                namespace: svc.namespace.clone(),
                pod: ep.pod,
                port: ep.port,
                service: Some(svc.name.clone()),
            }),
            None => Err(ProxyError::NoReadyPod {
                service: svc.name.clone(),
                namespace: svc.namespace.clone(),
            }),
        }
    }
}

/// The pod whose stream failed, for [`Router::another_pod`].
#[derive(Debug, Clone, Copy)]
struct Avoid<'a> {
    pod: &'a str,
    /// The pod is gone (not merely refusing): wait for a replacement.
    gone: bool,
}

/// A ready endpoint of `eps` on another pod than `avoid`'s, spread as
/// [`Endpoints::pick`] spreads; when there is none right now, `None` for a refusing pod
/// (its refusal stands), and for a pod that is gone the first to appear within `wait`.
async fn other_endpoint(eps: &Endpoints, avoid: Avoid<'_>, wait: Duration) -> Option<Endpoint> {
    let others = |v: &[Endpoint]| -> Vec<Endpoint> {
        v.iter().filter(|e| e.pod != avoid.pod).cloned().collect()
    };
    let now = others(&eps.current());
    let list = if !now.is_empty() {
        now
    } else if avoid.gone {
        let mut rx = eps.subscribe();
        let seen = tokio::time::timeout(wait, rx.wait_for(|v| !others(v).is_empty()))
            .await
            .ok()?
            .ok()?;
        others(&seen)
    } else {
        return None;
    };
    let i = eps.spread();
    list.get(i % list.len()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ns: &str, sure: bool) -> ClusterName {
        ClusterName::Service {
            name: name.into(),
            namespace: ns.into(),
            sure,
        }
    }

    #[test]
    fn names_sort_by_the_cluster_dns_forms() {
        let c = |n| classify(n, "demo", "cluster.local");
        assert_eq!(c("web"), svc("web", "demo", true));
        assert_eq!(c("WEB.demo"), svc("web", "demo", false));
        assert_eq!(c("web.other.svc"), svc("web", "other", true));
        assert_eq!(c("web.other.svc.cluster.local"), svc("web", "other", true));
        assert_eq!(
            c("db-0.db.demo.svc.cluster.local"),
            ClusterName::PodHostname {
                hostname: "db-0".into(),
                subdomain: "db".into(),
                namespace: "demo".into()
            }
        );
        assert_eq!(
            c("10-244-1-5.demo.pod.cluster.local"),
            ClusterName::PodAddress {
                ip: Ipv4Addr::new(10, 244, 1, 5),
                namespace: "demo".into()
            }
        );
        assert_eq!(c("nope.cluster.local"), ClusterName::Unknown);
        assert_eq!(c("private.example.internal"), ClusterName::Outside);
        assert_eq!(c("localhost"), ClusterName::Outside);
        assert_eq!(c("under_score.demo"), ClusterName::Outside);
        assert_eq!(
            classify("web.demo.svc.corp.example", "x", "corp.example."),
            svc("web", "demo", true)
        );
    }

    #[test]
    fn routes_print_their_way() {
        let r = Route::Pod {
            namespace: "demo".into(),
            pod: "web-1".into(),
            port: 8080,
            service: Some("web".into()),
        };
        assert_eq!(r.to_string(), "pod demo/web-1:8080 (svc/web)");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["route"], "pod");
        let d = Route::Direct {
            host: "::1".into(),
            port: 80,
        };
        assert_eq!(d.to_string(), "direct [::1]:80");
    }
}
