//! What the API server does to a pod between authorization and storage: defaulting
//! (`imagePullPolicy`), Pod Security admission from the namespace's labels, and validating
//! webhooks that a test installs to refuse pods in a namespace.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::state::{Shared, lock};
use crate::{ApiError, Kind};

/// The namespace label Pod Security admission enforces (`privileged`, `baseline`,
/// `restricted`). Source: Kubernetes "Pod Security Admission" and
/// `k8s.io/pod-security-admission/api/constants.go`.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const POD_SECURITY_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";

/// Cluster-wide admission settings the tests switch.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Namespace to the validating webhook that refuses every pod there: `(webhook name,
    /// message)`.
    webhooks: Mutex<BTreeMap<String, (String, String)>>,
}

impl Admission {
    pub(crate) fn deny_pods(&self, namespace: &str, webhook: &str, message: &str) {
        lock(&self.webhooks).insert(
            namespace.to_string(),
            (webhook.to_string(), message.to_string()),
        );
    }

    pub(crate) fn allow_pods(&self, namespace: &str) {
        lock(&self.webhooks).remove(namespace);
    }
}

/// Defaults and admits a pod about to be created in `ns`, as the API server does in that
/// order: defaulting, then admission (Pod Security, then webhooks).
pub(crate) fn admit_pod(shared: &Shared, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    default_pull_policy(pod);
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    pod_security(shared, ns, &name, pod)?;
    if let Some((webhook, message)) = lock(&shared.admission.webhooks).get(ns).cloned() {
        // apiserver `admission/plugin/webhook/errors/statuserror.go`: 403 unless the webhook
        // said otherwise, the webhook's message behind "admission webhook %q denied the
        // request: ", details naming the object.
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("admission webhook \"{webhook}\" denied the request: {message}"),
            name: Some(name),
            kind: Some(Kind::Pod.plural().to_string()),
            more: Box::default(),
        });
    }
    Ok(())
}

/// The API server's default (`pkg/apis/core/v1/defaults.go`, `SetDefaults_Container`):
/// `Always` for an image tagged `:latest` or not tagged at all, else `IfNotPresent`.
fn default_pull_policy(pod: &mut Value) {
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            if c["imagePullPolicy"].is_string() {
                continue;
            }
            let image = c["image"].as_str().unwrap_or("");
            let policy = if crate::controller::image_is_latest(image) {
                "Always"
            } else {
                "IfNotPresent"
            };
            c["imagePullPolicy"] = json!(policy);
        }
    }
}

/// Pod Security admission at the namespace's `enforce` level: the checks of the baseline
/// and restricted profiles that a pod spec can fail, worded as `pod-security-admission`'s
/// `policy/check_*.go` word them.
fn pod_security(shared: &Shared, ns: &str, name: &str, pod: &Value) -> Result<(), ApiError> {
    let Ok(namespace) = shared.store.get(Kind::Namespace, "", ns) else {
        return Ok(());
    };
    let labels = &namespace["metadata"]["labels"];
    let level = labels[POD_SECURITY_ENFORCE]
        .as_str()
        .unwrap_or("privileged");
    if !matches!(level, "baseline" | "restricted") {
        return Ok(());
    }
    let version = labels[POD_SECURITY_ENFORCE_VERSION]
        .as_str()
        .unwrap_or("latest");
    let mut violations = baseline_violations(pod);
    if level == "restricted" {
        violations.extend(restricted_violations(pod));
    }
    if violations.is_empty() {
        return Ok(());
    }
    Err(ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "pods \"{name}\" is forbidden: violates PodSecurity \"{level}:{version}\": {}",
            violations.join(", ")
        ),
        name: Some(name.to_string()),
        kind: Some(Kind::Pod.plural().to_string()),
        more: Box::default(),
    })
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |l| pod["spec"][l].as_array().into_iter().flatten())
}

/// Capabilities the baseline profile allows to add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn baseline_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec[*f] == true)
        .map(|f| format!("{f}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    for c in containers(pod) {
        let name = c["name"].as_str().unwrap_or("");
        if c["securityContext"]["privileged"] == true {
            out.push(format!(
                "privileged (container \"{name}\" must not set securityContext.privileged=true)"
            ));
        }
        let added: Vec<&str> = c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .collect();
        if !added.is_empty() {
            out.push(format!(
                "non-default capabilities (container \"{name}\" must not include \"{}\" in securityContext.capabilities.add)",
                added.join("\", \"")
            ));
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(hp) = p["hostPort"].as_u64().filter(|p| *p != 0) {
                out.push(format!(
                    "hostPort (container \"{name}\" uses hostPort {hp})"
                ));
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if v["hostPath"].is_object() {
            out.push(format!(
                "hostPath volumes (volume \"{}\")",
                v["name"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod_sc = &pod["spec"]["securityContext"];
    let mut escalation = Vec::new();
    let mut capabilities = Vec::new();
    let mut non_root = Vec::new();
    let mut root_user = Vec::new();
    let mut seccomp = Vec::new();
    for c in containers(pod) {
        let name = format!("\"{}\"", c["name"].as_str().unwrap_or(""));
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            escalation.push(name.clone());
        }
        let drops_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        let adds_other = sc["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x != "NET_BIND_SERVICE"));
        if !drops_all || adds_other {
            capabilities.push(name.clone());
        }
        let non_root_set = match sc["runAsNonRoot"].as_bool() {
            Some(v) => v,
            None => pod_sc["runAsNonRoot"] == true,
        };
        if !non_root_set {
            non_root.push(name.clone());
        }
        if sc["runAsUser"] == 0 || (sc["runAsUser"].is_null() && pod_sc["runAsUser"] == 0) {
            root_user.push(name.clone());
        }
        let profile = if sc["seccompProfile"]["type"].is_string() {
            &sc["seccompProfile"]["type"]
        } else {
            &pod_sc["seccompProfile"]["type"]
        };
        if profile != "RuntimeDefault" && profile != "Localhost" {
            seccomp.push(name);
        }
    }
    let s = |v: &Vec<String>| if v.len() == 1 { "" } else { "s" };
    if !escalation.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false (container{} {} must set securityContext.allowPrivilegeEscalation=false)",
            s(&escalation),
            escalation.join(", ")
        ));
    }
    if !capabilities.is_empty() {
        out.push(format!(
            "unrestricted capabilities (container{} {} must set securityContext.capabilities.drop=[\"ALL\"])",
            s(&capabilities),
            capabilities.join(", ")
        ));
    }
    if !non_root.is_empty() {
        out.push(format!(
            "runAsNonRoot != true (pod or container{} {} must set securityContext.runAsNonRoot=true)",
            s(&non_root),
            non_root.join(", ")
        ));
    }
    if !root_user.is_empty() {
        out.push(format!(
            "runAsUser=0 (container{} {} must not set runAsUser=0)",
            s(&root_user),
            root_user.join(", ")
        ));
    }
    if !seccomp.is_empty() {
        out.push(format!(
            "seccompProfile (pod or container{} {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            s(&seccomp),
            seccomp.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sc: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "relay", "image": "x:1", "securityContext": sc}]}})
    }

    #[test]
    fn restricted_lists_each_missing_setting() {
        let v = restricted_violations(&pod(json!({})));
        let all = v.join(", ");
        for word in [
            "allowPrivilegeEscalation",
            "capabilities",
            "runAsNonRoot",
            "seccompProfile",
        ] {
            assert!(all.contains(word), "{all}");
        }
        let ok = pod(json!({
            "allowPrivilegeEscalation": false, "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        }));
        assert!(restricted_violations(&ok).is_empty());
        assert!(baseline_violations(&ok).is_empty());
    }

    #[test]
    fn pull_policy_defaults_like_the_api_server() {
        let mut p = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:latest"},
            {"name": "c", "image": "nginx:1.27"}, {"name": "d", "image": "x:1", "imagePullPolicy": "Never"},
        ]}});
        default_pull_policy(&mut p);
        let got: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["imagePullPolicy"].as_str())
            .collect();
        assert_eq!(got, ["Always", "Always", "IfNotPresent", "Never"]);
    }
}
