//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets: an
//! `autoscaling/v1` Scale read from, and written into, the object's `spec.replicas`.
//!
//! Facts from `pkg/registry/apps/{deployment,replicaset,statefulset}/storage/storage.go`
//! (kubernetes/kubernetes): the Scale carries the parent's name, namespace, uid,
//! resourceVersion and creationTimestamp, `spec.replicas`, `status.replicas` and the
//! label selector as text; a write changes only `spec.replicas`. `kubectl scale` sends a
//! JSON merge patch `{"spec":{"replicas":N}}` to it.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{patch, read_body};
use crate::response::{Body, json_response};
use crate::selector::Selector;
use crate::state::Shared;
use crate::{ApiError, Kind};

/// The Scale of a workload object.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": Selector::from_label_selector(&obj["spec"]["selector"]).to_string(),
        },
    })
}

/// The replicas a written Scale asks for.
fn replicas_of(kind: Kind, name: &str, scale: &Value) -> Result<i64, ApiError> {
    match scale["spec"]["replicas"].as_i64() {
        Some(n) if n >= 0 => Ok(n),
        Some(n) => Err(ApiError::invalid(
            kind,
            name,
            &format!("spec.replicas: Invalid value: {n}: must be greater than or equal to 0"),
        )),
        None if scale["spec"]["replicas"].is_null() => Ok(0),
        None => Err(ApiError::bad_request(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {} is not an integer",
            scale["spec"]["replicas"]
        ))),
    }
}

/// GET, PUT or PATCH on `.../NAME/scale`.
pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    verb: &str,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    if !kind.scalable() {
        let mut e = ApiError::no_route();
        e.message = "the server could not find the requested resource (scale)".into();
        return Err(e);
    }
    let content_type = patch::content_type(&req);
    match verb {
        "get" => Ok(json_response(
            StatusCode::OK,
            &scale_of(&shared.store.get(kind, ns, name)?),
        )),
        "update" | "patch" => {
            let body = read_body(req).await?;
            let sent: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let updated = shared.store.update(kind, ns, name, |obj| {
                let mut scale = scale_of(obj);
                if verb == "update" {
                    if let Some(rv) = sent["metadata"]["resourceVersion"].as_str()
                        && Some(rv) != obj["metadata"]["resourceVersion"].as_str()
                    {
                        return Err(ApiError::conflict(kind, name));
                    }
                    scale = sent.clone();
                } else {
                    match content_type.as_str() {
                        "application/merge-patch+json" => patch::merge(&mut scale, &sent),
                        "application/strategic-merge-patch+json" => {
                            patch::strategic_merge(&mut scale, &sent)
                        }
                        "application/json-patch+json" => patch::json_patch(&mut scale, &sent)?,
                        other => return Err(ApiError::unsupported_media_type(other)),
                    }
                }
                obj["spec"]["replicas"] = json!(replicas_of(kind, name, &scale)?);
                Ok(())
            })?;
            Ok(json_response(StatusCode::OK, &scale_of(&updated)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_mirrors_its_workload() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "demo", "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(replicas_of(Kind::Deployment, "web", &json!({"spec": {"replicas": -1}})).is_err());
    }
}
