//! Reading a starting relay pod's status as the kubelet and the scheduler report it: Ready,
//! still coming, or stuck for a reason a user must fix (an image that cannot be pulled, no
//! node that fits, a container that cannot start), said with the flag that fixes it.

use k8s_openapi::api::core::v1::Pod;

/// Container waiting reasons that mean the image will not come without the user: the
/// kubelet's `ErrImagePull` (a pull failed), `ImagePullBackOff` (waiting to retry one),
/// `InvalidImageName` (the reference does not parse), `ErrImageNeverPull` (policy `Never`
/// and not on the node). Source: kubelet `pkg/kubelet/images/types.go`.
const PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// Container waiting reasons of a container that was pulled but cannot run: a bad
/// configuration (a missing secret or config map, from a patch), a runtime refusal, or a
/// crash loop. Source: kubelet `pkg/kubelet/container/sync_result.go`, `kuberuntime`.
const START_REASONS: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// What a starting relay pod's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Startup {
    /// Running, with the Ready condition true.
    Ready,
    /// Still starting; what it waits for, when the status says (`ContainerCreating`).
    Starting(Option<String>),
    /// It will not start without the user.
    Stuck {
        /// What happened and what to do.
        message: String,
        /// Whether it may still start by itself later (a node may come: the cluster
        /// autoscaler adds one for an Unschedulable pod).
        retryable: bool,
    },
}

/// Reads `pod`'s status; `image` is the relay image asked for, named in messages.
pub(crate) fn assess(pod: &Pod, image: &str) -> Startup {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let Some(status) = &pod.status else {
        return Startup::Starting(None);
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let condition = |ty: &str| status.conditions.iter().flatten().find(|c| c.type_ == ty);
    if phase == "Running" && condition("Ready").is_some_and(|c| c.status == "True") {
        return Startup::Ready;
    }
    for cs in status.container_statuses.iter().flatten() {
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or("");
            let detail = w.message.as_deref().unwrap_or("no message");
            if PULL_REASONS.contains(&reason) {
                let shown = cs.image.as_str();
                let shown = if shown.is_empty() { image } else { shown };
                let fix = if reason == "InvalidImageName" {
                    "fix the reference with --relay-image (or KFORWARD_RELAY_IMAGE)".to_string()
                } else {
                    "copy the image to a registry the cluster can pull from and pass it with --relay-image \
                     (or KFORWARD_RELAY_IMAGE); a private registry also \
                     needs --relay-pull-secret"
                        .to_string()
                };
                return Startup::Stuck {
                    message: format!(
                        "the cluster cannot pull the relay image {shown:?} ({reason}: {detail}): {fix}"
                    ),
                    retryable: false,
                };
            }
            if START_REASONS.contains(&reason) {
                return Startup::Stuck {
                    message: format!(
                        "the relay container in pod {name:?} cannot start ({reason}: {detail}): \
                         check what --relay-pod-patch changes"
                    ),
                    retryable: false,
                };
            }
        }
    }
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        let reason = c.reason.as_deref().unwrap_or("");
        if reason == "Unschedulable" {
            let detail = c.message.as_deref().unwrap_or("no message");
            return Startup::Stuck {
                message: format!(
                    "no node can run the relay pod {name:?} (Unschedulable: {detail}): set nodeSelector, \
                     tolerations or resources that fit a node with --relay-pod-patch"
                ),
                retryable: true,
            };
        }
    }
    if matches!(phase, "Failed" | "Succeeded") {
        let ended = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref())
            .map(|t| {
                format!(
                    " (exit code {}{})",
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(", {r}"))
                        .unwrap_or_default()
                )
            })
            .next()
            .unwrap_or_default();
        return Startup::Stuck {
            message: format!("relay pod {name:?} exited before it was ready{ended}"),
            retryable: true,
        };
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .next()
        .or_else(|| {
            condition("PodScheduled")
                .filter(|c| c.status == "False")
                .and_then(|c| c.reason.clone())
        });
    Startup::Starting(waiting.or_else(|| Some(phase.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "kforward-relay-x"},
            "status": status,
        }))
        .expect("pod")
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "relay", "image": "ghcr.io/kforward/kforward-relay:0.1.0", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }],
        }))
    }

    #[test]
    fn pull_errors_name_the_image_and_the_flag() {
        for reason in PULL_REASONS {
            let Startup::Stuck { message, retryable } = assess(
                &waiting(reason, "dial tcp: lookup ghcr.io: no such host"),
                "x",
            ) else {
                panic!("{reason} is stuck");
            };
            assert!(!retryable);
            assert!(
                message.contains("\"ghcr.io/kforward/kforward-relay:0.1.0\"")
                    && message.contains("--relay-image")
                    && message.contains(reason),
                "{message}"
            );
        }
    }

    #[test]
    fn a_creating_container_is_still_starting() {
        assert_eq!(
            assess(&waiting("ContainerCreating", ""), "x"),
            Startup::Starting(Some("ContainerCreating".into()))
        );
    }

    #[test]
    fn unschedulable_names_the_scheduler_and_the_patch() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}],
        }));
        let Startup::Stuck { message, retryable } = assess(&p, "x") else {
            panic!("stuck");
        };
        assert!(retryable);
        assert!(
            message.contains("didn't match") && message.contains("--relay-pod-patch"),
            "{message}"
        );
    }

    #[test]
    fn ready_and_exited() {
        let ready =
            pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(assess(&ready, "x"), Startup::Ready);
        let done = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "relay", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}));
        let Startup::Stuck { message, .. } = assess(&done, "x") else {
            panic!("stuck");
        };
        assert!(message.contains("exit code 2, Error"), "{message}");
    }
}
