//! What controllers share: owner references, the hashes that name ReplicaSets and
//! ControllerRevisions, and the pods they stamp out of a template.

use serde_json::{Value, json};

use super::kubelet::pod_is_ready;
use crate::Kind;
use crate::store::now_timestamp;

/// The characters Kubernetes encodes hashes and random suffixes with
/// (`k8s.io/apimachinery/pkg/util/rand`: no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits: the hash `pod-template-hash` and ControllerRevision names are made of.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `rand.SafeEncodeString(fmt.Sprint(fnv32a))`, as `controller.ComputeHash` and
/// `history.HashControllerRevision` name things. Kubernetes hashes a Go dump of the object;
/// the testkit hashes its JSON, which gives names of the same shape.
pub(crate) fn hash(bytes: &[u8]) -> String {
    fnv32a(bytes)
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The uid of the object's controller (the owner reference with `controller: true`).
pub(crate) fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

/// The objects of `objects` that `owner` controls.
pub(crate) fn owned<'a>(owner: &Value, objects: &'a [Value]) -> Vec<&'a Value> {
    let ns = &owner["metadata"]["namespace"];
    let Some(uid) = owner["metadata"]["uid"].as_str() else {
        return Vec::new();
    };
    objects
        .iter()
        .filter(|o| o["metadata"]["namespace"] == *ns && controller_uid(o) == Some(uid))
        .collect()
}

/// The owner reference a controller of `kind` puts on what it makes.
pub(crate) fn reference(owner: &Value, kind: Kind) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.name(),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// An object's name.
pub(crate) fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// An object's namespace.
pub(crate) fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// A non-negative integer field, or `default` when absent.
pub(crate) fn count(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default).max(0)
}

/// Whether the pod is being deleted.
pub(crate) fn is_terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether the pod counts for its controller: not being deleted and not finished
/// (`controller.FilterActivePods`).
pub(crate) fn is_active(pod: &Value) -> bool {
    !is_terminating(pod)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

/// Whether the pod has been Ready for at least `min_ready_seconds`
/// (`podutil.IsPodAvailable`).
pub(crate) fn is_available(pod: &Value, min_ready_seconds: i64) -> bool {
    if !pod_is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    since.is_some_and(|t| now_timestamp().as_second() - t.as_second() >= min_ready_seconds)
}

/// A pod stamped out of `template`: its labels and annotations plus `labels`, owned by
/// `owner`. With `name` it gets that name, else one generated from `generate_name`.
pub(crate) fn pod_from_template(
    template: &Value,
    name: Option<&str>,
    generate_name: &str,
    labels: &[(&str, String)],
    owner: Value,
) -> Value {
    let mut pod_labels = template["metadata"]["labels"].clone();
    if !pod_labels.is_object() {
        pod_labels = json!({});
    }
    for (k, v) in labels {
        pod_labels[*k] = json!(v);
    }
    let mut meta = json!({
        "labels": pod_labels,
        "ownerReferences": [owner],
    });
    match name {
        Some(n) => meta["name"] = json!(n),
        None => meta["generateName"] = json!(generate_name),
    }
    if template["metadata"]["annotations"].is_object() {
        meta["annotations"] = template["metadata"]["annotations"].clone();
    }
    json!({
        "metadata": meta,
        "spec": template["spec"],
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    })
}

/// A status object without the integer fields that are 0, as Go writes fields tagged
/// `omitempty`; the fields in `keep` stay.
pub(crate) fn without_zeros(mut status: Value, keep: &[&str]) -> Value {
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| keep.contains(&k.as_str()) || v.as_i64() != Some(0));
    }
    status
}

/// Objects ordered oldest first, as controllers order ReplicaSets and pods
/// (`creationTimestamp`, then name).
pub(crate) fn by_age<'a>(objects: &mut [&'a Value]) {
    objects.sort_by(|a, b| {
        let key = |o: &'a Value| {
            (
                o["metadata"]["creationTimestamp"].as_str().unwrap_or(""),
                name(o),
            )
        };
        key(a).cmp(&key(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fnv32a_in_kubernetes_characters() {
        // FNV-1a of "" is its offset basis, 2166136261.
        assert_eq!(fnv32a(b""), 2_166_136_261);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        let h = hash(b"{}");
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert_ne!(hash(b"{\"a\":1}"), hash(b"{\"a\":2}"));
    }

    #[test]
    fn controller_uid_reads_the_controlling_reference() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"uid": "a", "controller": false},
            {"uid": "b", "controller": true},
        ]}});
        assert_eq!(controller_uid(&pod), Some("b"));
        assert_eq!(controller_uid(&json!({"metadata": {}})), None);
    }
}
