//! What the API server does for each kind on top of storing objects: the defaults filled in
//! on create, and deletion (graceful for pods, cascading for namespaces).

use serde_json::{Value, json};

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
        Kind::Deployment => {
            if obj["spec"]["replicas"].is_null() {
                obj["spec"]["replicas"] = json!(1);
            }
            obj["status"] = json!({});
        }
        Kind::Namespace => {
            obj["status"] = json!({"phase": "Active"});
        }
        Kind::EndpointSlice => {}
    }
    Ok(obj)
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
        for k in [
            Kind::Pod,
            Kind::Service,
            Kind::Deployment,
            Kind::EndpointSlice,
        ] {
            for o in shared.store.list(k, Some(name)).0 {
                if let Some(n) = o["metadata"]["name"].as_str() {
                    let _ = delete(shared, k, name, n);
                }
            }
        }
    }
    shared.store.delete(kind, ns, name)
}
