//! Scheduling onto the cluster's one node: a pod fits when its `nodeSelector` matches the
//! node's labels; otherwise it stays Pending with the scheduler's Unschedulable condition.

use serde_json::Value;

/// The labels of the one node, as a kubelet registers them (`kubernetes.io/hostname`,
/// `kubernetes.io/os`, `kubernetes.io/arch`).
pub(crate) fn node_labels() -> [(&'static str, &'static str); 3] {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    [
        ("kubernetes.io/hostname", super::kubelet::NODE),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
    ]
}

/// `None` when `pod` fits the node; else the scheduler's message for the PodScheduled
/// condition, worded as kube-scheduler words it for one node whose labels do not match
/// (`framework/plugins/nodeaffinity`, and the preemption suffix of `schedule_one.go`).
pub(crate) fn unschedulable(pod: &Value) -> Option<String> {
    let selector = pod["spec"]["nodeSelector"].as_object()?;
    let labels = node_labels();
    let fits = selector.iter().all(|(k, v)| {
        labels
            .iter()
            .any(|(lk, lv)| lk == k && v.as_str() == Some(lv))
    });
    (!fits).then(|| {
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            .to_string()
    })
}
