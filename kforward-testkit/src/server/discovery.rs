//! Legacy discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) and
//! `/version`.

use serde_json::{Value, json};

use crate::Kind;

/// The Kubernetes version the testkit reports.
pub(crate) const GIT_VERSION: &str = "v1.35.0-kforward-testkit";

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-11-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

const GROUPS: [&str; 3] = ["apps", "discovery.k8s.io", "authorization.k8s.io"];

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

pub(crate) fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| group(g)).collect::<Vec<_>>(),
    })
}

pub(crate) fn one_group(name: &str) -> Option<Value> {
    GROUPS.contains(&name).then(|| group(name))
}

fn sub(name: &str, kind: &str, namespaced: bool, verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs})
}

pub(crate) fn resources(group: &str, version: &str) -> Option<Value> {
    if version != "v1" {
        return None;
    }
    let mut list: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .map(Kind::api_resource)
        .collect();
    match group {
        "" => {
            list.push(sub("namespaces/status", "Namespace", false, &["get"]));
            list.push(sub(
                "pods/portforward",
                "PodPortForwardOptions",
                true,
                &["create", "get"],
            ));
            list.push(sub("pods/status", "Pod", true, &["get", "patch", "update"]));
            list.push(sub(
                "services/status",
                "Service",
                true,
                &["get", "patch", "update"],
            ));
        }
        "apps" => {
            for kind in [Kind::Deployment, Kind::ReplicaSet, Kind::StatefulSet] {
                let plural = kind.plural();
                let mut scale = sub(
                    &format!("{plural}/scale"),
                    "Scale",
                    true,
                    &["get", "patch", "update"],
                );
                scale["group"] = json!("autoscaling");
                scale["version"] = json!("v1");
                list.push(scale);
                list.push(sub(
                    &format!("{plural}/status"),
                    kind.name(),
                    true,
                    &["get", "patch", "update"],
                ));
            }
        }
        "authorization.k8s.io" => {
            list.push(sub(
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
                &["create"],
            ));
        }
        "discovery.k8s.io" => {}
        _ => return None,
    }
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}
