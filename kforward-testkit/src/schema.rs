//! The API's schemas, generated from k8s-openapi's types (its `schemars` impls): the
//! components of the OpenAPI v3 documents `kubectl` reads, and the field checks the API
//! server makes when it decodes an object (unknown fields are dropped, or refused under
//! `fieldValidation=Strict`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Status};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::Kind;

/// Where component schemas live in an OpenAPI v3 document.
const REF_PREFIX: &str = "#/components/schemas/";
/// The schema of every PATCH body (`io.k8s.apimachinery.pkg.apis.meta.v1.Patch`), which
/// k8s-openapi has no type for.
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// The lists a strategic merge patch merges element by element: `(schema, field, merge
/// key)`, from the `patchStrategy:"merge"` / `patchMergeKey` tags of `k8s.io/api`'s types
/// (an empty key: a list of plain values merged as a set). Every other list is replaced
/// whole.
pub(crate) const MERGE_KEYS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "volumes", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "type"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "",
    ),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type"),
];

/// The component name of a kind's schema.
pub(crate) fn schema_name(kind: Kind) -> String {
    match kind {
        Kind::Namespace => Namespace::schema_name(),
        Kind::Pod => Pod::schema_name(),
        Kind::Service => Service::schema_name(),
        Kind::EndpointSlice => EndpointSlice::schema_name(),
        Kind::Deployment => Deployment::schema_name(),
        Kind::ReplicaSet => ReplicaSet::schema_name(),
        Kind::StatefulSet => StatefulSet::schema_name(),
        Kind::ControllerRevision => ControllerRevision::schema_name(),
    }
    .into_owned()
}

/// The name of the Scale schema (`autoscaling/v1`), the body of every `scale` subresource.
pub(crate) fn scale_schema_name() -> String {
    Scale::schema_name().into_owned()
}

/// The name of the SelfSubjectAccessReview schema.
pub(crate) fn access_review_schema_name() -> String {
    SelfSubjectAccessReview::schema_name().into_owned()
}

/// The names of the Status and DeleteOptions schemas.
pub(crate) fn status_schema_names() -> (String, String) {
    (
        Status::schema_name().into_owned(),
        DeleteOptions::schema_name().into_owned(),
    )
}

/// Every component schema, generated once.
pub(crate) fn components() -> &'static Map<String, Value> {
    static COMPONENTS: OnceLock<Map<String, Value>> = OnceLock::new();
    COMPONENTS.get_or_init(generate)
}

fn generate() -> Map<String, Value> {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    generator.subschema_for::<Namespace>();
    generator.subschema_for::<Pod>();
    generator.subschema_for::<Service>();
    generator.subschema_for::<EndpointSlice>();
    generator.subschema_for::<Deployment>();
    generator.subschema_for::<ReplicaSet>();
    generator.subschema_for::<StatefulSet>();
    generator.subschema_for::<ControllerRevision>();
    generator.subschema_for::<Scale>();
    generator.subschema_for::<SelfSubjectAccessReview>();
    generator.subschema_for::<Status>();
    generator.subschema_for::<DeleteOptions>();
    let mut components = generator.take_definitions(true);
    // What the real documents add: the kind each schema is, the patch strategy of lists
    // (read by `kubectl apply` to compute strategic merge patches), and the Patch body.
    let gvks = Kind::ALL.map(|k| (schema_name(k), k.group(), k.name()));
    for (name, group, kind) in gvks.iter().map(|(n, g, k)| (n.clone(), *g, *k)).chain([
        (scale_schema_name(), "autoscaling", "Scale"),
        (
            access_review_schema_name(),
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
        ),
    ]) {
        if let Some(schema) = components.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "kind": kind, "version": "v1"}]);
        }
    }
    for (schema, field, key) in MERGE_KEYS {
        if let Some(property) = components
            .get_mut(*schema)
            .and_then(|s| s["properties"].get_mut(*field))
        {
            property["x-kubernetes-patch-strategy"] = json!("merge");
            if !key.is_empty() {
                property["x-kubernetes-patch-merge-key"] = json!(key);
            }
        }
    }
    components.insert(
        PATCH.into(),
        json!({
            "description": "A PATCH request body: a JSON patch, a JSON merge patch, a strategic merge patch or an apply configuration.",
            "type": "object",
        }),
    );
    components
}

/// The component names `roots` reach through `$ref`s, `roots` included.
pub(crate) fn reachable(roots: &[String]) -> BTreeSet<String> {
    let all = components();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = all.get(&name) {
            collect_refs(schema, &mut todo);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(r.to_string());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The schema `schema` stands for, through `$ref` and a single `allOf`.
fn resolve(schema: &Value) -> &Value {
    let mut s = schema;
    for _ in 0..8 {
        if let Some(one) = s["allOf"].as_array().filter(|a| a.len() == 1) {
            s = &one[0];
        } else if let Some(r) = s["$ref"].as_str().and_then(|r| r.strip_prefix(REF_PREFIX)) {
            match components().get(r) {
                Some(target) => s = target,
                None => return s,
            }
        } else {
            return s;
        }
    }
    s
}

/// Removes the fields of `obj` its kind's schema does not know, and returns their paths
/// (`spec.template.spec.containers[0].foo`), in the order Go's strict decoder reports them
/// for an object whose keys are sorted, as kubectl sends them.
pub(crate) fn drop_unknown_fields(schema: &str, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(root) = components().get(schema) {
        walk(root, obj, "", &mut out);
    }
    out
}

fn walk(schema: &Value, value: &mut Value, path: &str, out: &mut Vec<String>) {
    let schema = resolve(schema);
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema["properties"].as_object() {
                let mut unknown = Vec::new();
                for (key, v) in fields.iter_mut() {
                    let here = join(path, key);
                    match properties.get(key) {
                        Some(p) => walk(p, v, &here, out),
                        None => {
                            out.push(here);
                            unknown.push(key.clone());
                        }
                    }
                }
                for key in unknown {
                    fields.remove(&key);
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, v) in fields.iter_mut() {
                    walk(values, v, &join(path, key), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items").filter(|i| i.is_object()) {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(item, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_at_every_depth_and_dropped() {
        let mut d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any": "thing"}, "colour": "red"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPortz": 1}]},
                        {"name": "b", "imagePullPolicy": "Always", "foo": true},
                    ]},
                },
                "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
                "unknown": {"deep": 1},
            },
        });
        let found = drop_unknown_fields(&schema_name(Kind::Deployment), &mut d);
        assert_eq!(
            found,
            [
                "metadata.colour",
                "spec.template.spec.containers[0].ports[0].hostPortz",
                "spec.template.spec.containers[1].foo",
                "spec.unknown",
            ]
        );
        assert!(d["spec"].get("unknown").is_none());
        assert_eq!(d["metadata"]["labels"]["any"], "thing");
        assert_eq!(
            drop_unknown_fields(&schema_name(Kind::Deployment), &mut d),
            Vec::<String>::new()
        );
    }

    #[test]
    fn kinds_carry_their_group_version_kind_and_lists_their_merge_keys() {
        let c = components();
        let d = &c[&schema_name(Kind::Deployment)];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let containers = &c["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let reach = reachable(&[schema_name(Kind::Deployment)]);
        assert!(reach.contains("io.k8s.api.core.v1.Container"));
        assert!(!reach.contains(&schema_name(Kind::Service)));
    }
}
