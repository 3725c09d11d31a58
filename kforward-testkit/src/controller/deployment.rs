//! The deployment controller: keeps `replicas` pods of the current template, and rolls a
//! changed template out one pod at a time (maxSurge 1, maxUnavailable 0: the defaults of
//! 25% / 25% for one to three replicas), an old pod terminating only after a new one is
//! Ready.

use std::sync::Arc;

use serde_json::{Value, json};

use super::kubelet::pod_is_ready;
use crate::state::Shared;
use crate::store::random_suffix;
use crate::{ApiError, Kind};

/// The `pod-template-hash` of a template: FNV-1a of its JSON, in the characters Kubernetes
/// uses for generated names.
pub(crate) fn template_hash(template: &Value) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..10)
        .map(|i| CHARS[((h >> (i * 6)) % CHARS.len() as u64) as usize] as char)
        .collect()
}

pub(crate) fn reconcile(shared: &Arc<Shared>) -> Result<(), ApiError> {
    let (deployments, _) = shared.store.list(Kind::Deployment, None);
    let (pods, _) = shared.store.list(Kind::Pod, None);
    for d in &deployments {
        reconcile_one(shared, d, &pods)?;
    }
    Ok(())
}

fn owned_by<'a>(d: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let ns = &d["metadata"]["namespace"];
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    pods.iter()
        .filter(|p| {
            p["metadata"]["namespace"] == *ns
                && p["metadata"]["annotations"]["testkit.kforward.dev/deployment"] == name
        })
        .collect()
}

fn reconcile_one(shared: &Shared, d: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let template = &d["spec"]["template"];
    let hash = template_hash(template);
    let owned = owned_by(d, pods);
    let live: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let is_new = |p: &Value| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str();
    let new: Vec<&Value> = live.iter().copied().filter(|p| is_new(p)).collect();
    let old: Vec<&Value> = live.iter().copied().filter(|p| !is_new(p)).collect();
    let ready = live.iter().filter(|p| pod_is_ready(p)).count();

    // Surge: bring up new pods while the total stays within replicas + 1 (or below
    // replicas when pods went away).
    let mut total = live.len();
    let mut new_count = new.len();
    let limit = if old.is_empty() {
        replicas
    } else {
        replicas + 1
    };
    while new_count < replicas && total < limit {
        create_pod(shared, &ns, &name, d, &hash)?;
        total += 1;
        new_count += 1;
    }
    // Retire old pods only while enough pods stay Ready.
    let mut ready_now = ready;
    let mut old_sorted = old.clone();
    old_sorted.sort_by_key(|p| pod_is_ready(p));
    for p in old_sorted {
        let unready = !pod_is_ready(p);
        if unready || ready_now > replicas {
            delete_pod(shared, &ns, p);
            if !unready {
                ready_now -= 1;
            }
        }
    }
    // Scale down surplus new pods.
    if new.len() > replicas {
        let mut extra = new.clone();
        extra.sort_by_key(|p| pod_is_ready(p));
        for p in extra.into_iter().take(new.len() - replicas) {
            delete_pod(shared, &ns, p);
        }
    }
    // Status.
    let updated = new.len();
    let ready_new = new.iter().filter(|p| pod_is_ready(p)).count();
    let generation = d["metadata"]["generation"].clone();
    let complete = updated == replicas && old.is_empty() && ready_new == replicas;
    let status = json!({
        "observedGeneration": generation,
        "replicas": live.len(),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": replicas.saturating_sub(ready),
        "conditions": [
            {"type": "Available", "status": if ready >= replicas { "True" } else { "False" },
             "reason": if ready >= replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if ready >= replicas { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }},
            {"type": "Progressing", "status": "True",
             "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "message": format!("ReplicaSet \"{name}-{hash}\" {}", if complete { "has successfully progressed." } else { "is progressing." })},
        ],
    });
    shared.store.update(Kind::Deployment, &ns, &name, |o| {
        // Keep condition timestamps out of the comparison so no-op updates stay no-ops.
        o["status"] = status;
        Ok(())
    })?;
    Ok(())
}

fn create_pod(
    shared: &Shared,
    ns: &str,
    deploy: &str,
    d: &Value,
    hash: &str,
) -> Result<(), ApiError> {
    let t = &d["spec"]["template"];
    let mut labels = t["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["pod-template-hash"] = json!(hash);
    let mut annotations = t["metadata"]["annotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    annotations["testkit.kforward.dev/deployment"] = json!(deploy);
    let rs = format!("{deploy}-{hash}");
    let pod = json!({
        "metadata": {
            "name": format!("{rs}-{}", random_suffix(5)),
            "generateName": format!("{rs}-"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs,
                "uid": d["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": t["spec"],
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    match shared.store.create(Kind::Pod, ns, pod) {
        Ok(_) => Ok(()),
        // A name collision: the next reconcile tries another name.
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn delete_pod(shared: &Shared, ns: &str, p: &Value) {
    if let Some(name) = p["metadata"]["name"].as_str() {
        let _ = crate::registry::delete(shared, Kind::Pod, ns, name);
    }
}
