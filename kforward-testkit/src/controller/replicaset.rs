//! The ReplicaSet controller: keeps `spec.replicas` active pods of the template, owned by
//! the ReplicaSet, and reports them in the status the deployment controller reads.
//!
//! Facts from `pkg/controller/replicaset/replica_set.go` and `replica_set_utils.go`
//! (kubernetes/kubernetes): pods are counted while active (not being deleted, not finished),
//! surplus pods are deleted not-ready first, status holds `replicas`,
//! `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` and `observedGeneration`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::kubelet::pod_is_ready;
use super::owner::{
    count, is_active, is_available, name, namespace, owned, pod_from_template, reference,
    without_zeros,
};
use crate::selector::Selector;
use crate::state::Shared;
use crate::{ApiError, Kind};

pub(crate) fn reconcile(shared: &Arc<Shared>) -> Result<(), ApiError> {
    let (sets, _) = shared.store.list(Kind::ReplicaSet, None);
    let (pods, _) = shared.store.list(Kind::Pod, None);
    for rs in &sets {
        reconcile_one(shared, rs, &pods)?;
    }
    Ok(())
}

fn reconcile_one(shared: &Shared, rs: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let ns = namespace(rs).to_string();
    let rs_name = name(rs).to_string();
    let want = count(&rs["spec"]["replicas"], 1) as usize;
    let min_ready = count(&rs["spec"]["minReadySeconds"], 0);
    let mut active: Vec<&Value> = owned(rs, pods)
        .into_iter()
        .filter(|p| is_active(p))
        .collect();
    if active.len() < want {
        let template = &rs["spec"]["template"];
        for _ in active.len()..want {
            let pod = pod_from_template(
                template,
                None,
                &format!("{rs_name}-"),
                &[],
                reference(rs, Kind::ReplicaSet),
            );
            shared.store.create(Kind::Pod, &ns, pod)?;
        }
    } else if active.len() > want {
        // Not ready first, then the newest (`getPodsToDelete` ranks them so).
        let mut doomed = active.clone();
        doomed.sort_by(|a, b| {
            let key = |p: &Value| {
                (
                    pod_is_ready(p),
                    std::cmp::Reverse(
                        p["metadata"]["creationTimestamp"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ),
                )
            };
            key(a).cmp(&key(b))
        });
        for p in doomed.into_iter().take(active.len() - want) {
            let _ = crate::registry::delete(shared, Kind::Pod, &ns, name(p));
        }
    }
    let template_labels = Selector::from_map(&rs["spec"]["template"]["metadata"]["labels"]);
    active.retain(|p| is_active(p));
    let status = without_zeros(
        json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": active.iter().filter(|p| template_labels.matches(&p["metadata"]["labels"])).count(),
            "readyReplicas": active.iter().filter(|p| pod_is_ready(p)).count(),
            "availableReplicas": active.iter().filter(|p| is_available(p, min_ready)).count(),
            "observedGeneration": rs["metadata"]["generation"],
        }),
        &["replicas"],
    );
    shared.store.update(Kind::ReplicaSet, &ns, &rs_name, |o| {
        o["status"] = status;
        Ok(())
    })?;
    Ok(())
}
