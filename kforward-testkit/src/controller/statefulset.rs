//! The StatefulSet controller: pods with stable, ordered names (`NAME-0`, `NAME-1`, ...),
//! each recreated under its own name when it goes away, the template's history kept as
//! ControllerRevisions, and rolling updates from the highest ordinal down.
//!
//! Facts from `pkg/controller/statefulset` of kubernetes/kubernetes:
//! `stateful_set_control.go` (OrderedReady waits for each pod to be Running and Ready
//! before the next, deletes condemned pods from the highest ordinal, updates one pod at a
//! time down to the partition; Parallel does not wait), `stateful_set_utils.go` (the pod's
//! `hostname`/`subdomain`, the `controller-revision-hash`,
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index` labels, the
//! revision's data: `{"spec":{"template":{...,"$patch":"replace"}}}`) and
//! `pkg/controller/history` (revision names `NAME-<hash>`, rollbacks renumbering an old
//! revision).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::kubelet::pod_is_ready;
use super::owner::{
    count, hash, is_available, is_terminating, name, namespace, owned, pod_from_template,
    reference, without_zeros,
};
use crate::state::Shared;
use crate::{ApiError, Kind};

/// The label naming the revision a pod was made from.
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";
/// The label every pod of a StatefulSet carries with its own name.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label every pod of a StatefulSet carries with its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label on a ControllerRevision with its hash.
const HASH_LABEL: &str = "controller.kubernetes.io/hash";

pub(crate) fn reconcile(shared: &Arc<Shared>) -> Result<(), ApiError> {
    let (sets, _) = shared.store.list(Kind::StatefulSet, None);
    if sets.is_empty() {
        return Ok(());
    }
    let (pods, _) = shared.store.list(Kind::Pod, None);
    let (revisions, _) = shared.store.list(Kind::ControllerRevision, None);
    for sts in &sets {
        reconcile_one(shared, sts, &pods, &revisions)?;
    }
    Ok(())
}

/// The data of the revision of `sts`'s current template.
pub(crate) fn revision_data(sts: &Value) -> Value {
    let mut template = sts["spec"]["template"].clone();
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The ordinal of a pod named `<set>-<n>`.
fn ordinal(set: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && pod_is_ready(pod)
}

fn pod_revision(pod: &Value) -> &str {
    pod["metadata"]["labels"][REVISION_LABEL]
        .as_str()
        .unwrap_or("")
}

/// The revision to run (created, or an equal older one renumbered as the newest).
fn update_revision(
    shared: &Shared,
    sts: &Value,
    history: &mut Vec<Value>,
) -> Result<String, ApiError> {
    let ns = namespace(sts);
    let data = revision_data(sts);
    let newest = history
        .iter()
        .map(|r| count(&r["revision"], 0))
        .max()
        .unwrap_or(0);
    if let Some(equal) = history.iter_mut().rev().find(|r| r["data"] == data) {
        let rev_name = name(equal).to_string();
        if count(&equal["revision"], 0) < newest {
            *equal = shared
                .store
                .update(Kind::ControllerRevision, ns, &rev_name, |r| {
                    r["revision"] = json!(newest + 1);
                    Ok(())
                })?;
        }
        return Ok(rev_name);
    }
    let h = hash(data.to_string().as_bytes());
    let rev_name = format!("{}-{h}", name(sts));
    let mut labels = sts["spec"]["template"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[HASH_LABEL] = json!(h);
    let revision = json!({
        "metadata": {
            "name": rev_name,
            "labels": labels,
            "ownerReferences": [reference(sts, Kind::StatefulSet)],
        },
        "data": data,
        "revision": newest + 1,
    });
    match shared.store.create(Kind::ControllerRevision, ns, revision) {
        Ok(created) => history.push(created),
        // A leftover of the same name (its set was deleted and made again): take it over.
        Err(e) if e.code == 409 => {
            let taken = shared
                .store
                .update(Kind::ControllerRevision, ns, &rev_name, |r| {
                    r["metadata"]["ownerReferences"] = json!([reference(sts, Kind::StatefulSet)]);
                    r["data"] = data.clone();
                    r["revision"] = json!(newest + 1);
                    Ok(())
                })?;
            history.push(taken);
        }
        Err(e) => return Err(e),
    }
    Ok(rev_name)
}

/// What one pass does to the pods: at most one step when pods are managed in order.
fn manage_pods(
    shared: &Shared,
    sts: &Value,
    pods: &BTreeMap<usize, &Value>,
    revision: &str,
) -> Result<(), ApiError> {
    let ns = namespace(sts);
    let set = name(sts);
    let replicas = count(&sts["spec"]["replicas"], 1) as usize;
    let ordered = sts["spec"]["podManagementPolicy"] != "Parallel";
    let service = sts["spec"]["serviceName"].as_str().unwrap_or("");
    let create = |i: usize| -> Result<(), ApiError> {
        let pod_name = format!("{set}-{i}");
        let mut pod = pod_from_template(
            &sts["spec"]["template"],
            Some(&pod_name),
            "",
            &[
                (REVISION_LABEL, revision.to_string()),
                (POD_NAME_LABEL, pod_name.clone()),
                (POD_INDEX_LABEL, i.to_string()),
            ],
            reference(sts, Kind::StatefulSet),
        );
        pod["spec"]["hostname"] = json!(pod_name);
        if !service.is_empty() {
            pod["spec"]["subdomain"] = json!(service);
        }
        match shared.store.create(Kind::Pod, ns, pod) {
            // The old pod of that name is still on its way out.
            Err(e) if e.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    };
    // Bring up (or replace) the pods below `replicas`, in order.
    for i in 0..replicas {
        match pods.get(&i) {
            None => {
                create(i)?;
                if ordered {
                    return Ok(());
                }
            }
            Some(p) if is_terminating(p) => {
                if ordered {
                    return Ok(());
                }
            }
            Some(p) if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) => {
                let _ = crate::registry::delete(shared, Kind::Pod, ns, name(p));
                if ordered {
                    return Ok(());
                }
            }
            Some(p) if ordered && !running_and_ready(p) => return Ok(()),
            Some(_) => {}
        }
    }
    // Remove the pods at and above `replicas`, highest first.
    for (_, p) in pods.range(replicas..).rev() {
        if is_terminating(p) {
            if ordered {
                return Ok(());
            }
            continue;
        }
        let _ = crate::registry::delete(shared, Kind::Pod, ns, name(p));
        if ordered {
            return Ok(());
        }
    }
    // Rolling update: one pod at a time from the highest ordinal down to the partition.
    let strategy = &sts["spec"]["updateStrategy"];
    if strategy["type"] == "OnDelete" {
        return Ok(());
    }
    let partition = count(&strategy["rollingUpdate"]["partition"], 0) as usize;
    for i in (partition..replicas).rev() {
        let Some(p) = pods.get(&i) else { return Ok(()) };
        if pod_revision(p) != revision && !is_terminating(p) {
            let _ = crate::registry::delete(shared, Kind::Pod, ns, name(p));
            return Ok(());
        }
        if !running_and_ready(p) {
            return Ok(());
        }
    }
    Ok(())
}

fn reconcile_one(
    shared: &Shared,
    sts: &Value,
    all_pods: &[Value],
    revisions: &[Value],
) -> Result<(), ApiError> {
    let ns = namespace(sts);
    let set = name(sts);
    let mut history: Vec<Value> = owned(sts, revisions).into_iter().cloned().collect();
    let update = update_revision(shared, sts, &mut history)?;
    let pods: BTreeMap<usize, &Value> = owned(sts, all_pods)
        .into_iter()
        .filter_map(|p| Some((ordinal(set, name(p))?, p)))
        .collect();
    manage_pods(shared, sts, &pods, &update)?;

    // Status, from the pods as this pass found them (`updateStatefulSet`'s counting).
    let known: BTreeSet<&str> = history.iter().map(name).collect();
    let mut current = sts["status"]["currentRevision"]
        .as_str()
        .filter(|r| known.contains(r))
        .unwrap_or(&update)
        .to_string();
    let min_ready = count(&sts["spec"]["minReadySeconds"], 0);
    let created: Vec<&&Value> = pods
        .values()
        .filter(|p| !p["status"]["phase"].is_null())
        .collect();
    let live = || created.iter().filter(|p| !is_terminating(p));
    let replicas = created.len();
    let ready = created.iter().filter(|p| running_and_ready(p)).count();
    let available = created
        .iter()
        .filter(|p| running_and_ready(p) && is_available(p, min_ready))
        .count();
    let updated = live().filter(|p| pod_revision(p) == update).count();
    let mut current_count = live().filter(|p| pod_revision(p) == current).count();
    // `completeRollingUpdate`: every pod runs the update revision and is ready.
    if sts["spec"]["updateStrategy"]["type"] != "OnDelete"
        && updated == replicas
        && ready == replicas
    {
        current = update.clone();
        current_count = updated;
    }
    let status = without_zeros(
        json!({
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": ready,
            "currentReplicas": current_count,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "currentRevision": current,
            "updateRevision": update,
            "collisionCount": 0,
        }),
        &["replicas", "availableReplicas", "collisionCount"],
    );
    shared.store.update(Kind::StatefulSet, ns, set, |o| {
        o["status"] = status;
        Ok(())
    })?;

    // History beyond `revisionHistoryLimit`, oldest first, except what pods still run.
    let limit = count(&sts["spec"]["revisionHistoryLimit"], 10) as usize;
    let mut in_use: BTreeSet<&str> = pods.values().map(|p| pod_revision(p)).collect();
    in_use.insert(&current);
    in_use.insert(&update);
    let mut unused: Vec<&Value> = history
        .iter()
        .filter(|r| !in_use.contains(name(r)))
        .collect();
    unused.sort_by_key(|r| count(&r["revision"], 0));
    let surplus = (history.len()).saturating_sub(limit.max(in_use.len()));
    for r in unused.into_iter().take(surplus) {
        let _ = shared.store.delete(Kind::ControllerRevision, ns, name(r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_set_name() {
        assert_eq!(ordinal("db", "db-0"), Some(0));
        assert_eq!(ordinal("db", "db-12"), Some(12));
        assert_eq!(ordinal("db", "db-x"), None);
        assert_eq!(ordinal("db", "dbx-1"), None);
    }

    #[test]
    fn revision_data_replaces_the_whole_template() {
        let sts = json!({"spec": {"template": {"metadata": {"labels": {"app": "db"}}}}});
        assert_eq!(
            revision_data(&sts).to_string(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"db"}}}}}"#
        );
    }
}
