//! The REST verbs on stored objects, with authorization, selectors and Table printing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::labels::FieldSelector;
use super::route::{self, Route};
use super::watch::{self, WatchRequest};
use super::{
    Body, Selector, discovery, error_response, json_response, patch, protobuf, read_body, table,
};
use crate::state::{Shared, USER, lock};
use crate::store::now_rfc3339;
use crate::{ApiError, Kind};

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut q = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        q.entry(k.into_owned())
            .and_modify(|e: &mut String| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    q
}

/// Refuses a verb on a resource when a fault says so, in RBAC's words.
pub(crate) fn authorize(
    shared: &Shared,
    verb: &str,
    kind: Kind,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let resource = match subresource {
        Some(s) => format!("{}/{s}", kind.plural()),
        None => kind.plural().to_string(),
    };
    let auth = lock(&shared.auth);
    let denied = auth.denied.iter().any(|(v, r)| {
        (v == verb || v == "*") && (r == &resource || r == "*" || r == kind.plural())
    });
    if denied {
        return Err(ApiError::forbidden(
            USER,
            verb,
            &resource,
            kind.group(),
            namespace,
            name,
        ));
    }
    Ok(())
}

pub(crate) async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let Some(route) = route::parse(req.uri().path()) else {
        return error_response(&ApiError::no_route());
    };
    let result = match route {
        Route::Version => Ok(json_response(StatusCode::OK, &discovery::version())),
        Route::CoreVersions => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
                .to_string();
            Ok(json_response(
                StatusCode::OK,
                &discovery::core_versions(&host),
            ))
        }
        Route::Groups => Ok(json_response(StatusCode::OK, &discovery::groups())),
        Route::Group { group } => discovery::one_group(&group)
            .map(|g| json_response(StatusCode::OK, &g))
            .ok_or_else(ApiError::no_route),
        Route::Resources { group, version } => discovery::resources(&group, &version)
            .map(|r| json_response(StatusCode::OK, &r))
            .ok_or_else(ApiError::no_route),
        Route::SelfSubjectAccessReview => access_review(&shared, req).await,
        Route::Object {
            kind,
            namespace,
            name,
            subresource,
        } => object(shared, req, kind, namespace, name, subresource).await,
    };
    result.unwrap_or_else(|e| error_response(&e))
}

async fn access_review(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let header_has = |name: header::HeaderName, what: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(what))
    };
    // kubectl sends this review as protobuf; other clients as JSON.
    let proto_in = header_has(header::CONTENT_TYPE, protobuf::MEDIA_TYPE);
    // Answer in protobuf only to a client that takes nothing else.
    let proto_out = header_has(header::ACCEPT, protobuf::MEDIA_TYPE)
        && !header_has(header::ACCEPT, "json")
        && !header_has(header::ACCEPT, "*/*");
    let body = read_body(req).await?;
    let mut review: Value = if proto_in {
        protobuf::decode_access_review(&body)?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid SelfSubjectAccessReview: {e}")))?
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let verb = attrs["verb"].as_str().unwrap_or("");
    let resource = attrs["resource"].as_str().unwrap_or("");
    let sub = attrs["subresource"].as_str().filter(|s| !s.is_empty());
    let group = attrs["group"].as_str().unwrap_or("");
    let ns = attrs["namespace"].as_str().filter(|s| !s.is_empty());
    let allowed = match Kind::from_plural(group, resource) {
        Some(kind) => authorize(shared, verb, kind, sub, ns, None).is_ok(),
        // Resources the testkit does not serve are allowed, as for a cluster admin.
        None => true,
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the testkit"})
    } else {
        json!({"allowed": false, "denied": true, "reason": "denied by a testkit fault"})
    };
    if proto_out {
        let mut r = Response::new(super::full(protobuf::encode_access_review(&review)));
        *r.status_mut() = StatusCode::CREATED;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(protobuf::MEDIA_TYPE),
        );
        return Ok(r);
    }
    Ok(json_response(StatusCode::CREATED, &review))
}

fn verb_of(method: &Method, has_name: bool, q: &HashMap<String, String>) -> &'static str {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn object(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let ns = namespace.as_deref();
    if kind == Kind::Pod && subresource.as_deref() == Some("portforward") {
        authorize(
            &shared,
            "create",
            kind,
            Some("portforward"),
            ns,
            name.as_deref(),
        )?;
        let (ns, name) = (ns.unwrap_or_default(), name.unwrap_or_default());
        return crate::portforward::handle(shared, req, ns, &name).await;
    }
    let verb = verb_of(req.method(), name.is_some(), &q);
    authorize(
        &shared,
        verb,
        kind,
        subresource.as_deref(),
        ns,
        name.as_deref(),
    )?;
    let ns_str = ns.unwrap_or("");
    match subresource.as_deref() {
        None | Some("status") => {}
        Some(other) => {
            return Err(ApiError {
                code: 404,
                reason: "NotFound",
                message: format!("the server could not find the requested resource ({other})"),
                name: None,
                kind: None,
            });
        }
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    match (verb, name) {
        ("watch", name) => {
            let mut fields = FieldSelector::parse(q.get("fieldSelector").map_or("", |s| s), kind)?;
            if let Some(n) = name {
                fields = FieldSelector::parse(&format!("metadata.name={n}"), kind)?;
            }
            let since = match q.get("resourceVersion").filter(|s| !s.is_empty()) {
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
                None => None,
            };
            Ok(watch::serve(
                shared,
                WatchRequest {
                    kind,
                    namespace,
                    labels: Selector::parse(q.get("labelSelector").map_or("", |s| s))?,
                    fields,
                    since,
                    timeout: q
                        .get("timeoutSeconds")
                        .and_then(|t| t.parse::<u64>().ok())
                        .map(Duration::from_secs),
                    send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
                    bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
                },
            ))
        }
        ("list", _) => {
            let labels = Selector::parse(q.get("labelSelector").map_or("", |s| s))?;
            let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", |s| s), kind)?;
            let (items, rv) = shared.store.list(kind, ns);
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
                .collect();
            if table::wants_table(&accept) {
                let include = q.get("includeObject").map_or("Metadata", |s| s.as_str());
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(kind, &items, rv, include),
                ));
            }
            let list = json!({
                "kind": format!("{}List", kind.name()),
                "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            });
            Ok(json_response(StatusCode::OK, &list))
        }
        ("get", Some(name)) => {
            let obj = shared.store.get(kind, ns_str, &name)?;
            if table::wants_table(&accept) {
                let include = q.get("includeObject").map_or("Metadata", |s| s.as_str());
                let rv = shared.store.resource_version();
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(kind, &[obj], rv, include),
                ));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        ("create", None) => {
            let body = read_body(req).await?;
            let obj: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let mut obj = prepare_create(&shared, kind, obj)?;
            if kind == Kind::Pod {
                crate::admission::admit_pod(&shared, ns_str, &mut obj)?;
            }
            if q.contains_key("dryRun") {
                return Ok(json_response(StatusCode::CREATED, &obj));
            }
            let created = shared.store.create(kind, ns_str, obj)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("update", Some(name)) => {
            let body = read_body(req).await?;
            let obj: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            let updated = shared.store.replace(kind, ns_str, &name, obj)?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("patch", Some(name)) => {
            let body = read_body(req).await?;
            let p: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            let ct = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let updated = shared
                .store
                .update(kind, ns_str, &name, |obj| match ct.as_str() {
                    "application/merge-patch+json" => {
                        patch::merge(obj, &p);
                        Ok(())
                    }
                    "application/strategic-merge-patch+json" => {
                        patch::strategic_merge(obj, &p);
                        Ok(())
                    }
                    "application/json-patch+json" => patch::json_patch(obj, &p),
                    other => Err(ApiError::unsupported_media_type(other)),
                })?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("delete", Some(name)) => {
            let obj = delete(&shared, kind, ns_str, &name)?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Fills in what the API server defaults on create.
fn prepare_create(shared: &Shared, kind: Kind, mut obj: Value) -> Result<Value, ApiError> {
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
