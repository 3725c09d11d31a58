//! Which pod of a workload `kubectl port-forward` takes: the most useful one first.
//!
//! kubectl's `AttachablePodForObject` lists the pods of the object's selector and takes the
//! first after `sort.Reverse(podutils.ActivePods(pods))` (kubectl's
//! `pkg/polymorphichelpers/attachablepodforobject.go` and `pkg/util/podutils/podutils.go`):
//! assigned to a node before unassigned, Running before Unknown before Pending, ready before
//! not ready, ready for longer before ready for less time, fewer container restarts before
//! more, older before newer. [`prefer`] is that order; ties end on the name here, so the
//! order is total (Go's sort leaves them in list order).

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `Less` when `a` is the better pod to attach to, in kubectl's order: after
/// `pods.sort_by(prefer)`, `pods[0]` is the one `kubectl port-forward` takes.
pub(crate) fn prefer(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => 2,
        Some("Unknown") => 1,
        // Pending, and what ActivePods' map does not name (its zero value).
        _ => 0,
    };
    // Descending where kubectl's reversed order puts the larger value first.
    assigned(b)
        .cmp(&assigned(a))
        .then_with(|| phase(b).cmp(&phase(a)))
        .then_with(|| ready_since(b).is_some().cmp(&ready_since(a).is_some()))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) => earlier_first(x, y),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(a).cmp(&restarts(b)))
        .then_with(|| earlier_first(created(a), created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Earlier times first, and a missing time last (ActivePods' `afterOrZero`, reversed).
fn earlier_first(a: Option<&Time>, b: Option<&Time>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.0.cmp(&y.0),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// When the pod became ready, if it is: `Some(None)` for a ready pod without the time.
#[allow(clippy::option_option)]
fn ready_since(p: &Pod) -> Option<Option<&Time>> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref())
}

fn created(p: &Pod) -> Option<&Time> {
    p.metadata.creation_timestamp.as_ref()
}

/// The highest restart count of the pod's containers (ActivePods' `maxContainerRestarts`).
fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}
            ]},
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("a pod")
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn first(mut pods: Vec<Pod>) -> String {
        pods.sort_by(prefer);
        pods[0].metadata.name.clone().unwrap_or_default()
    }

    #[test]
    fn kubectl_takes_the_most_useful_pod() {
        let base = || pod("b", json!({}));
        let unassigned = pod("a", json!({"spec": {"nodeName": ""}}));
        assert_eq!(first(vec![unassigned, base()]), "b");
        let pending = pod("a", json!({"status": {"phase": "Pending"}}));
        assert_eq!(first(vec![pending, base()]), "b");
        let not_ready = pod(
            "a",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(first(vec![not_ready, base()]), "b");
        let ready_later = pod(
            "a",
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:05:00Z"}
            ]}}),
        );
        assert_eq!(first(vec![ready_later, base()]), "b", "ready for longer");
        let restarted = pod(
            "a",
            json!({"status": {"containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 3
            }]}}),
        );
        assert_eq!(first(vec![restarted, base()]), "b", "fewer restarts");
        let newer = pod(
            "a",
            json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:30Z"}}),
        );
        assert_eq!(first(vec![newer, base()]), "b", "older");
        assert_eq!(
            first(vec![base(), pod("a", json!({}))]),
            "a",
            "then the name"
        );
    }
}
