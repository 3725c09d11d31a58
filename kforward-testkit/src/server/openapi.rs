//! `/openapi/v3`: the discovery of the OpenAPI v3 documents, one per group-version, with
//! the paths and operations the testkit serves and the schemas of [`crate::schema`].
//!
//! What kubectl reads from them (kubernetes/kubernetes, `staging/src/k8s.io/cli-runtime/
//! pkg/resource/query_param_verifier_v3.go`, `staging/src/k8s.io/kubectl/pkg/cmd/apply/
//! patcher.go`): the PATCH operation of a kind, found by its
//! `x-kubernetes-group-version-kind`, lists the `fieldValidation` query parameter, so
//! `kubectl apply` leaves field validation to the server; its request body accepts
//! `application/strategic-merge-patch+json`, so `apply` computes strategic merge patches from
//! the kind's schema (found by the same extension, as a list, on the component) and the
//! lists' `x-kubernetes-patch-merge-key`. Root and documents follow kube-openapi's
//! `handler3`: `{"paths": {"apis/apps/v1": {"serverRelativeURL": "...?hash=H"}}}`, a
//! document asked with a stale hash is redirected to the current one, and one asked with
//! the current hash may be cached for good.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::response::{Body, error_response, full, json_response};
use crate::schema::{
    PATCH, access_review_schema_name, components, reachable, scale_schema_name, schema_name,
    status_schema_names,
};
use crate::{ApiError, Kind};

/// One group-version's document, serialized once, and its hash.
struct Document {
    json: Bytes,
    hash: String,
}

/// The group-versions served: their path under `/openapi/v3/` and their group.
const GROUP_VERSIONS: [(&str, &str); 4] = [
    ("api/v1", ""),
    ("apis/apps/v1", "apps"),
    ("apis/authorization.k8s.io/v1", "authorization.k8s.io"),
    ("apis/discovery.k8s.io/v1", "discovery.k8s.io"),
];

fn documents() -> &'static BTreeMap<&'static str, Document> {
    static DOCS: OnceLock<BTreeMap<&'static str, Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        GROUP_VERSIONS
            .iter()
            .map(|(path, group)| {
                let json = Bytes::from(document(path, group).to_string());
                let hash = hex_upper(&Sha512::digest(&json));
                (*path, Document { json, hash })
            })
            .collect()
    })
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Answers `/openapi/v3` and `/openapi/v3/<group-version>`; `None` for other paths.
pub(crate) fn handle(path: &str, query: Option<&str>, accept: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/openapi/v3")?;
    let json_ok = accept.is_empty() || accept.contains("json") || accept.contains("*/*");
    if !json_ok {
        let mut e =
            ApiError::bad_request("only the following media types are accepted: application/json");
        e.code = 406;
        e.reason = "NotAcceptable";
        return Some(error_response(&e));
    }
    let rest = rest.trim_matches('/');
    if rest.is_empty() {
        let paths: Map<String, Value> = documents()
            .iter()
            .map(|(gv, doc)| {
                (
                    gv.to_string(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", doc.hash)}),
                )
            })
            .collect();
        return Some(json_response(StatusCode::OK, &json!({"paths": paths})));
    }
    let Some(doc) = documents().get(rest) else {
        return Some(error_response(&ApiError::no_route()));
    };
    let asked = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "hash")
            .map(|(_, v)| v.into_owned())
    });
    let mut r = Response::new(full(doc.json.clone()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", doc.hash)).ok()?,
    );
    match asked {
        Some(hash) if hash != doc.hash => {
            let mut moved = Response::new(full(""));
            *moved.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let to = format!("/openapi/v3/{rest}?hash={}", doc.hash);
            moved
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&to).ok()?);
            return Some(moved);
        }
        Some(_) => {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Accept"));
        }
        None => {}
    }
    Some(r)
}

/// `"apps"` -> `"Apps"`, `"discovery.k8s.io"` -> `"Discovery"`, `""` -> `"Core"`, as
/// operation ids spell groups.
fn group_word(group: &str) -> String {
    let first = group
        .split('.')
        .next()
        .filter(|g| !g.is_empty())
        .unwrap_or("core");
    let mut c = first.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query_param(name: &str, description: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

/// The query parameters of writes (create, update, patch).
fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "When present, the change is checked but not persisted. The only valid value is All.",
            "string",
        ),
        query_param(
            "fieldManager",
            "A name for the actor making the change.",
            "string",
        ),
        query_param(
            "fieldValidation",
            "What the server does with unknown or duplicate fields in the object: Ignore drops them, Warn (the default) drops them with a warning header each, Strict refuses the request.",
            "string",
        ),
    ];
    if patch {
        p.push(query_param(
            "force",
            "Take over conflicting fields of other managers (apply patches only).",
            "boolean",
        ));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        "labelSelector",
        "fieldSelector",
        "resourceVersion",
        "continue",
    ]
    .iter()
    .map(|n| query_param(n, "Filters or positions a list or watch.", "string"))
    .chain(
        ["watch", "allowWatchBookmarks", "sendInitialEvents"]
            .iter()
            .map(|n| query_param(n, "Turns the list into a watch, and tunes it.", "boolean")),
    )
    .chain(
        ["limit", "timeoutSeconds"]
            .iter()
            .map(|n| query_param(n, "Bounds a list or watch.", "integer")),
    )
    .collect()
}

/// One operation on a kind (or one of its subresources).
struct Op {
    verb: &'static str,
    action: &'static str,
    id: String,
    description: String,
    gvk: Value,
    body: Option<String>,
    response: Value,
    params: Vec<Value>,
}

impl Op {
    fn to_json(&self) -> Value {
        let mut op = json!({
            "description": self.description,
            "operationId": self.id,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": self.response}}},
                "401": {"description": "Unauthorized"},
            },
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if !self.params.is_empty() {
            op["parameters"] = json!(self.params);
        }
        if let Some(schema) = &self.body {
            let content = if self.verb == "patch" {
                json!({
                    "application/apply-patch+yaml": {"schema": reference(PATCH)},
                    "application/json-patch+json": {"schema": reference(PATCH)},
                    "application/merge-patch+json": {"schema": reference(PATCH)},
                    "application/strategic-merge-patch+json": {"schema": reference(PATCH)},
                })
            } else {
                json!({"*/*": {"schema": reference(schema)}})
            };
            op["requestBody"] = json!({"content": content, "required": true});
        }
        if self.verb == "post" {
            op["responses"]["201"] = json!({"description": "Created", "content": {"application/json": {"schema": self.response}}});
        }
        op
    }
}

fn path_params(names: &[&str]) -> Value {
    json!(names
        .iter()
        .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}))
        .collect::<Vec<_>>())
}

/// The list schema of a kind (k8s-openapi has one generic `List`; the real documents have
/// one per kind).
fn list_schema(kind: Kind) -> (String, Value) {
    let item = schema_name(kind);
    let name = format!("{item}List");
    let schema = json!({
        "description": format!("A list of {}.", kind.plural()),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": reference(&item)},
            "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
        },
        "x-kubernetes-group-version-kind": [{"group": kind.group(), "kind": format!("{}List", kind.name()), "version": "v1"}],
    });
    (name, schema)
}

/// The paths of one kind: the collection, the object and its subresources.
fn kind_paths(kind: Kind, prefix: &str, paths: &mut Map<String, Value>, roots: &mut Vec<String>) {
    let schema = schema_name(kind);
    let (list_name, _) = list_schema(kind);
    roots.push(schema.clone());
    roots.push(list_name.clone());
    let gvk = json!({"group": kind.group(), "version": "v1", "kind": kind.name()});
    let word = format!("{}V1", group_word(kind.group()));
    let (scope, base, object) = if kind.namespaced() {
        (
            "Namespaced",
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural()),
            format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                kind.plural()
            ),
        )
    } else {
        (
            "",
            format!("{prefix}/{}", kind.plural()),
            format!("{prefix}/{}/{{name}}", kind.plural()),
        )
    };
    let verbs = kind.verbs();
    let can = |v: &str| verbs.contains(&v);
    let op = |verb: &'static str,
              action: &'static str,
              id: String,
              what: String,
              body: Option<String>,
              response: Value,
              params: Vec<Value>| {
        Op {
            verb,
            action,
            id,
            description: what,
            gvk: gvk.clone(),
            body,
            response,
            params,
        }
        .to_json()
    };
    let name = kind.name();
    let mut collection = Map::new();
    if can("list") {
        collection.insert(
            "get".into(),
            op(
                "get",
                "list",
                format!("list{word}{scope}{name}"),
                format!("list or watch objects of kind {name}"),
                None,
                reference(&list_name),
                list_params(),
            ),
        );
    }
    if can("create") {
        collection.insert(
            "post".into(),
            op(
                "post",
                "post",
                format!("create{word}{scope}{name}"),
                format!("create a {name}"),
                Some(schema.clone()),
                reference(&schema),
                write_params(false),
            ),
        );
    }
    let ns_params: &[&str] = if kind.namespaced() {
        &["namespace"]
    } else {
        &[]
    };
    collection.insert("parameters".into(), path_params(ns_params));
    paths.insert(format!("/{base}"), Value::Object(collection));
    let mut one = Map::new();
    one.insert(
        "get".into(),
        op(
            "get",
            "get",
            format!("read{word}{scope}{name}"),
            format!("read the specified {name}"),
            None,
            reference(&schema),
            Vec::new(),
        ),
    );
    if can("update") {
        one.insert(
            "put".into(),
            op(
                "put",
                "put",
                format!("replace{word}{scope}{name}"),
                format!("replace the specified {name}"),
                Some(schema.clone()),
                reference(&schema),
                write_params(false),
            ),
        );
    }
    if can("patch") {
        one.insert(
            "patch".into(),
            op(
                "patch",
                "patch",
                format!("patch{word}{scope}{name}"),
                format!("partially update the specified {name}"),
                Some(PATCH.to_string()),
                reference(&schema),
                write_params(true),
            ),
        );
    }
    if can("delete") {
        let (status, options) = status_schema_names();
        roots.push(status.clone());
        roots.push(options);
        one.insert(
            "delete".into(),
            op(
                "delete",
                "delete",
                format!("delete{word}{scope}{name}"),
                format!("delete a {name}"),
                None,
                reference(&status),
                Vec::new(),
            ),
        );
    }
    let obj_params: Vec<&str> = ns_params.iter().copied().chain(["name"]).collect();
    one.insert("parameters".into(), path_params(&obj_params));
    paths.insert(format!("/{object}"), Value::Object(one));
    if kind.namespaced() {
        let mut all = Map::new();
        if can("list") {
            all.insert(
                "get".into(),
                op(
                    "get",
                    "list",
                    format!("list{word}{name}ForAllNamespaces"),
                    format!("list or watch objects of kind {name}"),
                    None,
                    reference(&list_name),
                    list_params(),
                ),
            );
            paths.insert(format!("/{prefix}/{}", kind.plural()), Value::Object(all));
        }
    }
    let mut sub = |what: &str, body: String, response: String, sub_gvk: Value| {
        let suffix = match what {
            "status" => "Status",
            _ => "Scale",
        };
        let mut s = Map::new();
        let mk = |verb: &'static str,
                  action: &'static str,
                  prefix_word: &str,
                  desc: &str,
                  body: Option<String>,
                  params: Vec<Value>| {
            Op {
                verb,
                action,
                id: format!("{prefix_word}{word}{scope}{name}{suffix}"),
                description: format!("{desc} {what} of the specified {name}"),
                gvk: sub_gvk.clone(),
                body,
                response: reference(&response),
                params,
            }
            .to_json()
        };
        s.insert(
            "get".into(),
            mk("get", "get", "read", "read", None, Vec::new()),
        );
        s.insert(
            "put".into(),
            mk(
                "put",
                "put",
                "replace",
                "replace",
                Some(body.clone()),
                write_params(false),
            ),
        );
        s.insert(
            "patch".into(),
            mk(
                "patch",
                "patch",
                "patch",
                "partially update",
                Some(PATCH.to_string()),
                write_params(true),
            ),
        );
        s.insert("parameters".into(), path_params(&obj_params));
        paths.insert(format!("/{object}/{what}"), Value::Object(s));
    };
    if !matches!(kind, Kind::EndpointSlice | Kind::ControllerRevision) {
        sub("status", schema.clone(), schema.clone(), gvk.clone());
    }
    if kind.scalable() {
        let scale = scale_schema_name();
        roots.push(scale.clone());
        sub(
            "scale",
            scale.clone(),
            scale,
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        );
    }
}

/// The document of one group-version.
fn document(gv_path: &str, group: &str) -> Value {
    let mut paths = Map::new();
    let mut roots = vec![PATCH.to_string()];
    for kind in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        kind_paths(kind, gv_path, &mut paths, &mut roots);
    }
    let mut lists = Map::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        let (name, schema) = list_schema(kind);
        lists.insert(name, schema);
    }
    if group == "authorization.k8s.io" {
        let review = access_review_schema_name();
        roots.push(review.clone());
        let op = Op {
            verb: "post",
            action: "post",
            id: "createAuthorizationV1SelfSubjectAccessReview".into(),
            description: "create a SelfSubjectAccessReview".into(),
            gvk: json!({"group": group, "version": "v1", "kind": "SelfSubjectAccessReview"}),
            body: Some(review.clone()),
            response: reference(&review),
            params: write_params(false),
        };
        paths.insert(
            format!("/{gv_path}/selfsubjectaccessreviews"),
            json!({"post": op.to_json()}),
        );
    }
    roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta".into());
    let wanted: BTreeSet<String> = reachable(&roots);
    let mut schemas: Map<String, Value> = components()
        .iter()
        .filter(|(name, _)| wanted.contains(*name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    schemas.extend(lists);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response<Body>) -> Value {
        use http_body_util::BodyExt;
        let bytes = futures::executor::block_on(r.into_body().collect())
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn root_lists_every_group_version_with_its_hash() {
        let root = body(handle("/openapi/v3", None, "application/json").expect("served"));
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .expect("apps");
        let (path, query) = url.split_once('?').expect("hash");
        let r = handle(path, Some(query), "application/json").expect("served");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        let stale = handle(path, Some("hash=0"), "application/json").expect("served");
        assert_eq!(stale.status(), StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn patch_operations_offer_field_validation_and_strategic_merge() {
        let doc = body(handle("/openapi/v3/apis/apps/v1", None, "").expect("served"));
        for kind in ["deployments", "statefulsets", "replicasets"] {
            let patch = &doc["paths"]
                [format!("/apis/apps/v1/namespaces/{{namespace}}/{kind}/{{name}}")]["patch"];
            assert!(
                patch["parameters"]
                    .as_array()
                    .expect("params")
                    .iter()
                    .any(|p| p["name"] == "fieldValidation"),
                "{kind}"
            );
            assert!(
                patch["requestBody"]["content"]["application/strategic-merge-patch+json"]
                    .is_object()
            );
            assert_eq!(patch["x-kubernetes-group-version-kind"]["group"], "apps");
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        assert!(schemas.contains_key("io.k8s.api.apps.v1.StatefulSet"));
        assert!(schemas.contains_key("io.k8s.api.core.v1.PodSpec"));
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Service"));
        let scale =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    }
}
