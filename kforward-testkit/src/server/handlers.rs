//! The REST verbs on stored objects, with authorization, selectors and Table printing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::route::{self, Route};
use super::watch::{self, WatchRequest};
use super::write::{self, FieldValidation, WriteOptions};
use super::{discovery, protobuf, read_body, scale, table};
use crate::response::{Body, error_response, json_response};
use crate::selector::{FieldSelector, Selector};
use crate::state::{Shared, USER, lock};
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
        let mut r = Response::new(crate::response::full(protobuf::encode_access_review(
            &review,
        )));
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
        Some("scale") => {
            let name = name.unwrap_or_default();
            return scale::handle(&shared, req, verb, kind, ns_str, &name).await;
        }
        Some(other) => {
            let mut e = ApiError::no_route();
            e.message = format!("the server could not find the requested resource ({other})");
            return Err(e);
        }
    }
    let write = || -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
            dry_run: q.contains_key("dryRun"),
        })
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
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
        ("create", None) => write::create(&shared, req, kind, ns_str, write()?).await,
        ("update", Some(name)) => {
            let sub = subresource.as_deref();
            write::update(&shared, req, kind, ns_str, &name, sub, write()?).await
        }
        ("patch", Some(name)) => {
            let sub = subresource.as_deref();
            write::patch(&shared, req, kind, ns_str, &name, sub, write()?).await
        }
        ("delete", Some(name)) => write::delete(&shared, req, kind, ns_str, &name).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}
