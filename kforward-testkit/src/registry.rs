//! What the API server does for each kind on top of storing objects: the defaults filled in
//! on create, and deletion (graceful for pods, cascading for namespaces).

use serde_json::{Value, json};

use crate::selector::Selector;
use crate::state::Shared;
use crate::store::now_rfc3339;
use crate::{ApiError, Kind};

/// Fills in what the API server defaults on create.
pub(crate) fn prepare_create(
    shared: &Shared,
    kind: Kind,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match kind {
        Kind::Pod => {
            let containers = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            if containers == 0 {
                return Err(ApiError::invalid(
                    kind,
                    &name,
                    "spec.containers: Required value",
                ));
            }
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        Kind::Service => {
            if !obj["spec"]["clusterIP"].is_string() {
                obj["spec"]["clusterIP"] = json!(shared.pool.next_service_ip().to_string());
            }
            let ip = obj["spec"]["clusterIP"].clone();
            obj["spec"]["clusterIPs"] = json!([ip]);
            if !obj["spec"]["type"].is_string() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
                for p in ports {
                    if !p["protocol"].is_string() {
                        p["protocol"] = json!("TCP");
                    }
                    if p["targetPort"].is_null() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
        }
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => {
            default_workload(kind, &mut obj);
            let errors = validate_workload(kind, &obj);
            if !errors.is_empty() {
                let errors: Vec<&str> = errors.iter().map(String::as_str).collect();
                return Err(ApiError::invalid_fields(kind, &name, &errors));
            }
            // `PrepareForCreate` clears the status a client sent.
            obj["status"] = match kind {
                Kind::Deployment => json!({}),
                Kind::ReplicaSet => json!({"replicas": 0}),
                _ => json!({"replicas": 0, "availableReplicas": 0}),
            };
        }
        Kind::ControllerRevision => {
            if obj["revision"].is_null() {
                return Err(ApiError::invalid(kind, &name, "revision: Required value"));
            }
        }
        Kind::Namespace => {
            obj["status"] = json!({"phase": "Active"});
        }
        Kind::EndpointSlice => {}
    }
    Ok(obj)
}

/// The defaults `pkg/apis/apps/v1/defaults.go` fills in.
fn default_workload(kind: Kind, obj: &mut Value) {
    let spec = &mut obj["spec"];
    if spec["replicas"].is_null() {
        spec["replicas"] = json!(1);
    }
    match kind {
        Kind::Deployment => {
            if spec["strategy"]["type"].is_null() {
                spec["strategy"]["type"] = json!("RollingUpdate");
            }
            if spec["strategy"]["type"] == "RollingUpdate" {
                for field in ["maxUnavailable", "maxSurge"] {
                    if spec["strategy"]["rollingUpdate"][field].is_null() {
                        spec["strategy"]["rollingUpdate"][field] = json!("25%");
                    }
                }
            }
            if spec["revisionHistoryLimit"].is_null() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec["progressDeadlineSeconds"].is_null() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
        }
        Kind::StatefulSet => {
            if spec["podManagementPolicy"].is_null() {
                spec["podManagementPolicy"] = json!("OrderedReady");
            }
            if spec["updateStrategy"]["type"].is_null() {
                spec["updateStrategy"]["type"] = json!("RollingUpdate");
            }
            if spec["updateStrategy"]["type"] == "RollingUpdate"
                && spec["updateStrategy"]["rollingUpdate"]["partition"].is_null()
            {
                spec["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
            }
            if spec["revisionHistoryLimit"].is_null() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec["persistentVolumeClaimRetentionPolicy"].is_null() {
                spec["persistentVolumeClaimRetentionPolicy"] =
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
            }
        }
        _ => {}
    }
}

/// The field errors `pkg/apis/apps/validation` reports for what the testkit's
/// controllers rely on: a selector, that matches the template's labels, and containers.
pub(crate) fn validate_workload(kind: Kind, obj: &Value) -> Vec<String> {
    let spec = &obj["spec"];
    let mut errors = Vec::new();
    let selector = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if !selector.is_object() {
        errors.push("spec.selector: Required value".to_string());
    } else if selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
    {
        errors.push(format!(
            "spec.selector: Invalid value: {}: empty selector is invalid for {}",
            go_label_selector(selector),
            kind.plural().trim_end_matches('s')
        ));
    } else if !Selector::from_label_selector(selector).matches(labels) {
        errors.push(format!(
            "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`",
            go_string_map(labels)
        ));
    }
    if spec["template"]["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        errors.push("spec.template.spec.containers: Required value".to_string());
    }
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        errors.push(format!(
            "spec.replicas: Invalid value: {}: must be greater than or equal to 0",
            spec["replicas"]
        ));
    }
    errors
}

/// A `map[string]string` as Go's `%#v` prints it.
fn go_string_map(v: &Value) -> String {
    let entries: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
        .collect();
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// A label selector as Go's `%#v` prints the pointer `field.Invalid` gets (abridged to the
/// fields that decide).
fn go_label_selector(v: &Value) -> String {
    format!(
        "&v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}",
        go_string_map(&v["matchLabels"])
    )
}

/// Deletes an object. A pod is first marked for deletion; the kubelet then stops its
/// containers and removes it, as a graceful deletion does.
pub(crate) fn delete(shared: &Shared, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
    if kind == Kind::Pod {
        return shared.store.update(kind, ns, name, |o| {
            if o["metadata"]["deletionTimestamp"].is_null() {
                o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(30);
            }
            Ok(())
        });
    }
    if kind == Kind::Namespace {
        for k in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
            for o in shared.store.list(k, Some(name)).0 {
                if let Some(n) = o["metadata"]["name"].as_str() {
                    let _ = delete(shared, k, name, n);
                }
            }
        }
    }
    shared.store.delete(kind, ns, name)
}
