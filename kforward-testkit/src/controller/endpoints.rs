//! The EndpointSlice controller, kube-proxy (a real TCP/UDP forwarder on each ClusterIP)
//! and the DNS records of services.
//!
//! DNS as CoreDNS's `kubernetes` plugin answers it: `SVC.NS.svc.cluster.local` is the
//! ClusterIP; for a headless service (`clusterIP: None`) it is the address of every ready
//! endpoint, and `HOSTNAME.SVC.NS.svc.cluster.local` is the address of the ready endpoint
//! with that hostname (a pod whose `hostname` is set and whose `subdomain` names the
//! service, as the EndpointSlice controller's `ShouldSetHostname` puts it in the slice).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::warn;

use super::kubelet::{NODE, pod_is_ready};
use crate::network::{Protocol, ServiceProxy};
use crate::selector::Selector;
use crate::state::Shared;
use crate::{ApiError, Kind};

/// Resolves a service port's `targetPort` against one pod's container ports.
pub(crate) fn target_port(service_port: &Value, pod: &Value) -> Option<u16> {
    let tp = &service_port["targetPort"];
    if let Some(n) = tp.as_u64() {
        return u16::try_from(n).ok();
    }
    if let Some(name) = tp.as_str() {
        if let Ok(n) = name.parse::<u16>() {
            return Some(n);
        }
        return pod["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok());
    }
    service_port["port"]
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
}

fn selected_pods<'a>(svc: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let sel = &svc["spec"]["selector"];
    let ns = &svc["metadata"]["namespace"];
    if !sel.is_object() || sel.as_object().is_some_and(|m| m.is_empty()) {
        return Vec::new();
    }
    let sel = Selector::from_map(sel);
    pods.iter()
        .filter(|p| p["metadata"]["namespace"] == *ns && sel.matches(&p["metadata"]["labels"]))
        .filter(|p| p["status"]["podIP"].is_string())
        .collect()
}

/// The hostname an endpoint of `svc` carries for pod `p` (`ShouldSetHostname`).
fn endpoint_hostname<'a>(svc: &Value, p: &'a Value) -> Option<&'a str> {
    let hostname = p["spec"]["hostname"].as_str().filter(|h| !h.is_empty())?;
    let same_ns = p["metadata"]["namespace"] == svc["metadata"]["namespace"];
    (same_ns && p["spec"]["subdomain"] == svc["metadata"]["name"]).then_some(hostname)
}

/// Whether a service is headless (`clusterIP: None`).
fn is_headless(svc: &Value) -> bool {
    svc["spec"]["clusterIP"] == "None"
}

/// The endpoints and ports a service's slice should hold.
fn desired_slice(svc: &Value, pods: &[&Value]) -> (Value, Value) {
    let svc_ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let ports: Vec<Value> = svc_ports
        .iter()
        .map(|sp| {
            let port = pods.iter().find_map(|p| target_port(sp, p));
            let mut v = json!({
                "name": sp["name"].as_str().unwrap_or(""),
                "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
            });
            if let Some(port) = port {
                v["port"] = json!(port);
            }
            v
        })
        .collect();
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            let ready = pod_is_ready(p);
            let terminating = !p["metadata"]["deletionTimestamp"].is_null();
            let mut endpoint = json!({
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": ready || (terminating && p["status"]["phase"] == "Running"), "terminating": terminating},
                "targetRef": {
                    "kind": "Pod",
                    "namespace": p["metadata"]["namespace"],
                    "name": p["metadata"]["name"],
                    "uid": p["metadata"]["uid"],
                },
                "nodeName": NODE,
            });
            if let Some(h) = endpoint_hostname(svc, p) {
                endpoint["hostname"] = json!(h);
            }
            endpoint
        })
        .collect();
    (json!(endpoints), json!(ports))
}

/// A slice's labels; the EndpointSlice controller marks the slices of headless services.
fn slice_labels(svc: &Value, name: &str) -> Value {
    let mut labels = json!({
        "kubernetes.io/service-name": name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    });
    if is_headless(svc) {
        labels["service.kubernetes.io/headless"] = json!("");
    }
    labels
}

pub(crate) fn reconcile_slices(shared: &Arc<Shared>) -> Result<(), ApiError> {
    let (services, _) = shared.store.list(Kind::Service, None);
    let (pods, _) = shared.store.list(Kind::Pod, None);
    let (slices, _) = shared.store.list(Kind::EndpointSlice, None);
    let mut by_service: HashMap<(String, String), &Value> = HashMap::new();
    for s in &slices {
        let ns = s["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Slices someone else manages (a service without a selector has its endpoints
        // written by hand) are not the controller's to change or delete, as in Kubernetes'
        // EndpointSlice controller, which only takes slices labelled as managed by it.
        let labels = &s["metadata"]["labels"];
        if labels["endpointslice.kubernetes.io/managed-by"] != "endpointslice-controller.k8s.io" {
            continue;
        }
        if let Some(svc) = labels["kubernetes.io/service-name"].as_str() {
            by_service.insert((ns, svc.to_string()), s);
        }
    }
    let mut wanted = HashSet::new();
    for svc in &services {
        if !svc["spec"]["selector"].is_object() {
            continue;
        }
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        wanted.insert((ns.clone(), name.clone()));
        let (endpoints, ports) = desired_slice(svc, &selected_pods(svc, &pods));
        match by_service.get(&(ns.clone(), name.clone())) {
            Some(existing) => {
                let slice_name = existing["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                shared
                    .store
                    .update(Kind::EndpointSlice, &ns, &slice_name, |o| {
                        o["endpoints"] = endpoints;
                        o["ports"] = ports;
                        o["metadata"]["labels"] = slice_labels(svc, &name);
                        Ok(())
                    })?;
            }
            None => {
                let slice = json!({
                    "metadata": {
                        "generateName": format!("{name}-"),
                        "labels": slice_labels(svc, &name),
                        "ownerReferences": [{
                            "apiVersion": "v1", "kind": "Service", "name": name,
                            "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                });
                shared.store.create(Kind::EndpointSlice, &ns, slice)?;
            }
        }
    }
    for ((ns, svc), slice) in by_service {
        if !wanted.contains(&(ns.clone(), svc))
            && let Some(n) = slice["metadata"]["name"].as_str()
        {
            let _ = shared.store.delete(Kind::EndpointSlice, &ns, n);
        }
    }
    Ok(())
}

/// The names of a headless service: the service name with every ready pod's address,
/// and each ready pod's `HOSTNAME.SVC...` name; none while no pod is ready (NXDOMAIN).
fn headless_names(
    shared: &Shared,
    svc: &Value,
    fqdn: &str,
    ready: &[&Value],
    names: &mut HashSet<String>,
) {
    let ip = |p: &Value| {
        p["status"]["podIP"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
    };
    let all: Vec<Ipv4Addr> = ready.iter().filter_map(|p| ip(p)).collect();
    if all.is_empty() {
        return;
    }
    shared.dns_records.set(fqdn, all);
    names.insert(fqdn.to_string());
    for p in ready {
        if let (Some(host), Some(addr)) = (endpoint_hostname(svc, p), ip(p)) {
            let pod_name = format!("{host}.{fqdn}");
            shared.dns_records.set(&pod_name, vec![addr]);
            names.insert(pod_name);
        }
    }
}

/// A service's uid, port and protocol.
type ProxyKey = (String, u16, Protocol);

/// The ClusterIP forwarders and DNS names, kept in step with services and slices.
#[derive(Default)]
pub(crate) struct Network {
    /// Per service uid and (port, protocol): the forwarder and its backend list.
    proxies: HashMap<ProxyKey, (ServiceProxy, watch::Sender<Vec<SocketAddr>>)>,
    names: HashSet<String>,
}

impl Network {
    pub(crate) async fn reconcile(&mut self, shared: &Arc<Shared>) {
        let (services, _) = shared.store.list(Kind::Service, None);
        let (pods, _) = shared.store.list(Kind::Pod, None);
        let mut keep = HashSet::new();
        let mut names = HashSet::new();
        for svc in &services {
            let uid = svc["metadata"]["uid"].as_str().unwrap_or("").to_string();
            let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
            let name = svc["metadata"]["name"].as_str().unwrap_or("");
            let fqdn = format!("{name}.{ns}.svc.cluster.local");
            let ready: Vec<&Value> = selected_pods(svc, &pods)
                .into_iter()
                .filter(|p| pod_is_ready(p))
                .collect();
            if is_headless(svc) {
                headless_names(shared, svc, &fqdn, &ready, &mut names);
                continue;
            }
            let Some(ip) = svc["spec"]["clusterIP"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            shared.dns_records.set(&fqdn, vec![ip]);
            names.insert(fqdn);
            for sp in svc["spec"]["ports"].as_array().into_iter().flatten() {
                let Some(port) = sp["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                let protocol = Protocol::from_k8s(sp["protocol"].as_str().unwrap_or("TCP"))
                    .unwrap_or(Protocol::Tcp);
                let backends: Vec<SocketAddr> = ready
                    .iter()
                    .filter_map(|p| {
                        let ip = p["status"]["podIP"].as_str()?.parse::<Ipv4Addr>().ok()?;
                        Some(SocketAddr::from((ip, target_port(sp, p)?)))
                    })
                    .collect();
                let key = (uid.clone(), port, protocol);
                keep.insert(key.clone());
                if let Some((_, tx)) = self.proxies.get(&key) {
                    tx.send_if_modified(|cur| {
                        if *cur == backends {
                            false
                        } else {
                            *cur = backends.clone();
                            true
                        }
                    });
                    continue;
                }
                let (tx, rx) = watch::channel(backends);
                match ServiceProxy::start(ip, port, protocol, rx).await {
                    Ok(p) => {
                        self.proxies.insert(key, (p, tx));
                    }
                    Err(e) => {
                        warn!(service = name, error = %e, "cannot start the ClusterIP forwarder")
                    }
                }
            }
        }
        for stale in self.names.difference(&names) {
            shared.dns_records.remove(stale);
        }
        self.names = names;
        let gone: Vec<_> = self
            .proxies
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some((p, _)) = self.proxies.remove(&k) {
                p.stop().await;
            }
        }
    }
}
