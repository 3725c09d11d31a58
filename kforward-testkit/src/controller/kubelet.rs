//! The kubelet: runs each pod's containers as real servers on the pod's own loopback
//! address, reports status and readiness, and carries out graceful deletion.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::Kind;
use crate::network::{ContainerPort, Protocol, WorkloadHandle, WorkloadSpec, start_workload};
use crate::state::{Shared, lock};
use crate::store::now_rfc3339;

/// The node every pod runs on.
pub(crate) const NODE: &str = "testkit-node";

/// Whether a pod object is Running with a true Ready condition and is not being deleted.
pub(crate) fn pod_is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

#[derive(Default)]
pub(crate) struct Kubelet {
    /// Running pods by uid.
    running: HashMap<String, WorkloadHandle>,
    /// Pods whose image could not be pulled, by uid: when the pull first failed.
    pull_failed: HashMap<String, std::time::Instant>,
}

/// How long after a failed pull the kubelet reports `ImagePullBackOff` instead of
/// `ErrImagePull` (the kubelet's first back-off is 10 s; the testkit keeps time short).
const PULL_BACK_OFF_SHOWN: std::time::Duration = std::time::Duration::from_secs(1);

fn container_ports(pod: &Value) -> Vec<ContainerPort> {
    let mut out = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            let protocol = Protocol::from_k8s(p["protocol"].as_str().unwrap_or("TCP"))
                .unwrap_or(Protocol::Tcp);
            out.push(ContainerPort { port, protocol });
        }
    }
    out
}

fn env(pod: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for e in c["env"].as_array().into_iter().flatten() {
            if let (Some(n), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                out.insert(n.to_string(), v.to_string());
            }
        }
    }
    out
}

fn condition(ty: &str, status: bool) -> Value {
    json!({
        "type": ty,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(),
    })
}

fn container_statuses(pod: &Value, ready: bool, waiting: Option<(&str, &str)>) -> Value {
    let started = now_rfc3339();
    let list: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let state = match waiting {
                Some((reason, message)) => {
                    json!({"waiting": {"reason": reason, "message": message}})
                }
                None => json!({"running": {"startedAt": started}}),
            };
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": ready,
                "started": waiting.is_none(),
                "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    json!(list)
}

/// Sets the Ready and ContainersReady conditions of a pod.
pub(crate) fn set_ready(shared: &Shared, ns: &str, name: &str, uid: &str, ready: bool) {
    let r = shared.store.update(Kind::Pod, ns, name, |p| {
        if p["metadata"]["uid"] != uid || p["status"]["phase"] != "Running" {
            return Ok(());
        }
        if !p["metadata"]["deletionTimestamp"].is_null() && ready {
            return Ok(());
        }
        if pod_is_ready(p) == ready {
            return Ok(());
        }
        let conds = p["status"]["conditions"].as_array_mut();
        if let Some(conds) = conds {
            for c in conds.iter_mut() {
                if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                    *c = condition(c["type"].as_str().unwrap_or("Ready"), ready);
                }
            }
        }
        if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
            for c in cs {
                c["ready"] = json!(ready);
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        debug!(error = %e, pod = name, "readiness update skipped");
    }
}

/// What `start_workload` needs to run `pod` on `ip`.
fn workload_spec(shared: &Shared, ns: &str, name: &str, pod: &Value, ip: Ipv4Addr) -> WorkloadSpec {
    let mut env = env(pod);
    // The pod's resolv.conf: the cluster DNS server.
    if let Some(dns) = *lock(&shared.dns_addr) {
        env.insert(crate::network::POD_DNS_ENV.to_string(), dns.to_string());
    }
    WorkloadSpec {
        image: pod["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        pod_name: name.to_string(),
        namespace: ns.to_string(),
        pod_ip: ip,
        ports: container_ports(pod),
        env,
    }
}

/// Marks the pod Ready after the cluster's readiness delay, unless a fault holds it back.
fn ready_after_delay(shared: &Arc<Shared>, ns: &str, name: &str, uid: &str) {
    let delay = *lock(&shared.ready_delay);
    let (shared, ns, name, uid) = (
        shared.clone(),
        ns.to_string(),
        name.to_string(),
        uid.to_string(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let forced = lock(&shared.not_ready).contains(&format!("{ns}/{name}"));
        if !forced {
            set_ready(&shared, &ns, &name, &uid, true);
        }
    });
}

impl Kubelet {
    pub(crate) async fn reconcile(&mut self, shared: &Arc<Shared>) {
        let (pods, _) = shared.store.list(Kind::Pod, None);
        let mut alive = std::collections::HashSet::new();
        for pod in &pods {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            alive.insert(uid.clone());
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                self.terminate(shared, &ns, &name, &uid, pod);
                continue;
            }
            if self
                .running
                .get(&uid)
                .is_some_and(WorkloadHandle::has_exited)
            {
                if let Some(h) = self.running.remove(&uid) {
                    h.stop().await;
                }
                self.exited(shared, &ns, &name, &uid, pod).await;
                continue;
            }
            if pod["status"]["phase"] == "Pending" && !self.running.contains_key(&uid) {
                self.start(shared, &ns, &name, &uid, pod).await;
            }
        }
        // Pods removed from the store by other means: stop their servers.
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|u| !alive.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(h) = self.running.remove(&uid) {
                h.stop().await;
            }
        }
        self.pull_failed.retain(|uid, _| alive.contains(uid));
    }

    fn terminate(&mut self, shared: &Arc<Shared>, ns: &str, name: &str, uid: &str, pod: &Value) {
        // First out of the endpoints, then stopped after the grace period, then removed.
        set_ready(shared, ns, name, uid, false);
        let Some(handle) = self.running.remove(uid) else {
            if pod["status"]["phase"] != "Running" {
                let _ = shared.store.delete(Kind::Pod, ns, name);
            }
            return;
        };
        let grace = *lock(&shared.termination_grace);
        let (shared, ns, name, uid) = (
            shared.clone(),
            ns.to_string(),
            name.to_string(),
            uid.to_string(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            handle.stop().await;
            if let Ok(p) = shared.store.get(Kind::Pod, &ns, &name)
                && p["metadata"]["uid"] == uid.as_str()
            {
                let _ = shared.store.delete(Kind::Pod, &ns, &name);
            }
        });
    }

    /// The container's process ended by itself with status 0 (the relay's idle exit). As
    /// the kubelet does: with `restartPolicy` `Never` or `OnFailure` the pod completes
    /// (phase `Succeeded`, container terminated with reason `Completed`); with `Always`
    /// the container restarts in the same pod, keeping its IP, with `restartCount` raised
    /// (without the kubelet's crash-loop back-off).
    async fn exited(&mut self, shared: &Arc<Shared>, ns: &str, name: &str, uid: &str, pod: &Value) {
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let finished = now_rfc3339();
        let terminated = |c: &Value| {
            json!({"terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": c["state"]["running"]["startedAt"],
                "finishedAt": finished,
            }})
        };
        if policy != "Always" {
            let _ = shared.store.update(Kind::Pod, ns, name, |p| {
                if p["metadata"]["uid"] != uid {
                    return Ok(());
                }
                p["status"]["phase"] = json!("Succeeded");
                if let Some(conds) = p["status"]["conditions"].as_array_mut() {
                    for c in conds.iter_mut() {
                        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                            let ty = c["type"].as_str().unwrap_or("Ready").to_string();
                            *c = condition(&ty, false);
                            c["reason"] = json!("PodCompleted");
                        }
                    }
                }
                if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
                    for c in cs {
                        c["state"] = terminated(c);
                        c["ready"] = json!(false);
                        c["started"] = json!(false);
                    }
                }
                Ok(())
            });
            debug!(pod = name, "container exited; pod completed");
            return;
        }
        let Some(ip) = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            return;
        };
        set_ready(shared, ns, name, uid, false);
        match start_workload(workload_spec(shared, ns, name, pod, ip)).await {
            Ok(handle) => {
                self.running.insert(uid.to_string(), handle);
                let _ = shared.store.update(Kind::Pod, ns, name, |p| {
                    if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
                        for c in cs {
                            c["lastState"] = terminated(c);
                            c["state"] = json!({"running": {"startedAt": now_rfc3339()}});
                            c["restartCount"] = json!(c["restartCount"].as_u64().unwrap_or(0) + 1);
                        }
                    }
                    Ok(())
                });
                ready_after_delay(shared, ns, name, uid);
                debug!(pod = name, "container exited; restarted");
            }
            Err(e) => warn!(pod = name, error = %e, "cannot restart container"),
        }
    }

    async fn start(&mut self, shared: &Arc<Shared>, ns: &str, name: &str, uid: &str, pod: &Value) {
        if let Some(message) = super::scheduler::unschedulable(pod) {
            let _ = shared.store.update(Kind::Pod, ns, name, |p| {
                if p["status"]["conditions"][0]["reason"] == "Unschedulable" {
                    return Ok(());
                }
                p["status"]["conditions"] = json!([{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": now_rfc3339(),
                }]);
                Ok(())
            });
            return;
        }
        if let Err(failure) = self.pull_images(shared, uid, pod) {
            let since = *self
                .pull_failed
                .entry(uid.to_string())
                .or_insert_with(std::time::Instant::now);
            let (reason, message) = if failure.backs_off && since.elapsed() >= PULL_BACK_OFF_SHOWN {
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{}\"", failure.image),
                )
            } else {
                (failure.reason, failure.message)
            };
            waiting_for_image(shared, ns, name, &failure.container, reason, &message);
            return;
        }
        self.pull_failed.remove(uid);
        let mut last_err = None;
        let mut started: Option<(Ipv4Addr, WorkloadHandle)> = None;
        for _ in 0..8 {
            let ip = shared.pool.next_pod_ip();
            match start_workload(workload_spec(shared, ns, name, pod, ip)).await {
                Ok(h) => {
                    started = Some((ip, h));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((ip, handle)) = started else {
            warn!(pod = name, error = ?last_err, "cannot start pod");
            return;
        };
        self.running.insert(uid.to_string(), handle);
        let now = now_rfc3339();
        let r = shared.store.update(Kind::Pod, ns, name, |p| {
            p["spec"]["nodeName"] = json!(NODE);
            p["status"] = json!({
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}],
                "startTime": now,
                "qosClass": "BestEffort",
                "conditions": [
                    condition("PodReadyToStartContainers", true),
                    condition("Initialized", true),
                    condition("Ready", false),
                    condition("ContainersReady", false),
                    condition("PodScheduled", true),
                ],
                "containerStatuses": container_statuses(p, false, None),
            });
            Ok(())
        });
        if r.is_err() {
            return;
        }
        ready_after_delay(shared, ns, name, uid);
    }

    /// Pulls each container's image as its `imagePullPolicy` says; the first that cannot
    /// run, with its container.
    fn pull_images(&self, shared: &Shared, _uid: &str, pod: &Value) -> Result<(), ImageFailure> {
        let present = lock(&shared.node_images).clone();
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let image = c["image"].as_str().unwrap_or("");
            // Pods made by the testkit's own controllers skip the API server's defaulting.
            let default = if super::images::image_is_latest(image) {
                "Always"
            } else {
                "IfNotPresent"
            };
            let policy = c["imagePullPolicy"].as_str().unwrap_or(default);
            if let Err(f) = super::images::pull(image, policy, present.as_ref()) {
                return Err(ImageFailure {
                    container: c["name"].as_str().unwrap_or("").to_string(),
                    image: image.to_string(),
                    reason: f.reason,
                    message: f.message,
                    backs_off: f.backs_off,
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn stop_all(&mut self) {
        for (_, h) in self.running.drain() {
            h.stop().await;
        }
    }
}

/// A container whose image cannot run.
struct ImageFailure {
    container: String,
    image: String,
    reason: &'static str,
    message: String,
    backs_off: bool,
}

/// A scheduled pod whose container waits for its image, as the kubelet reports it: phase
/// Pending, not Ready for `ContainersNotReady`, the container waiting with `reason`.
/// Written only when the reason changes.
fn waiting_for_image(
    shared: &Shared,
    ns: &str,
    name: &str,
    container: &str,
    reason: &str,
    message: &str,
) {
    let _ = shared.store.update(Kind::Pod, ns, name, |p| {
        let current = p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .map(|c| c["state"]["waiting"]["reason"].clone());
        if current.as_ref().and_then(Value::as_str) == Some(reason) {
            return Ok(());
        }
        let unready = |ty: &str| {
            let mut c = condition(ty, false);
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!("containers with unready status: [{container}]"));
            c
        };
        p["spec"]["nodeName"] = json!(NODE);
        let mut statuses = container_statuses(p, false, None);
        for s in statuses.as_array_mut().into_iter().flatten() {
            let state = if s["name"] == container {
                json!({"waiting": {"reason": reason, "message": message}})
            } else {
                json!({"waiting": {"reason": "PodInitializing"}})
            };
            s["state"] = state;
            s["started"] = json!(false);
        }
        p["status"] = json!({
            "phase": "Pending",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": p["status"]["startTime"].as_str().map_or_else(now_rfc3339, str::to_string),
            "qosClass": p["status"]["qosClass"].clone(),
            "conditions": [
                condition("PodReadyToStartContainers", true),
                condition("Initialized", true),
                unready("Ready"),
                unready("ContainersReady"),
                condition("PodScheduled", true),
            ],
            "containerStatuses": statuses,
        });
        Ok(())
    });
}
