//! The kinds of object the testkit serves, and what the API says about each.

use serde_json::{Value, json};

/// A kind of Kubernetes object stored by the testkit.
///
/// # Example
///
/// ```
/// use kforward_testkit::Kind;
/// assert_eq!(Kind::from_plural("", "pods"), Some(Kind::Pod));
/// assert_eq!(Kind::Deployment.api_version(), "apps/v1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace (cluster scoped).
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` ReplicaSet (made and scaled by the deployment controller).
    ReplicaSet,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` ControllerRevision (a StatefulSet's template history).
    ControllerRevision,
}

impl Kind {
    /// Every kind, in discovery order.
    pub const ALL: [Kind; 8] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::ControllerRevision,
    ];

    /// The workload kinds whose pods come from a template, with a `scale` subresource.
    pub(crate) fn scalable(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
        )
    }

    /// The API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::ControllerRevision => {
                "apps"
            }
        }
    }

    /// The `apiVersion` string of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::ControllerRevision => {
                "apps/v1"
            }
        }
    }

    /// The `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::ControllerRevision => "ControllerRevision",
        }
    }

    /// The plural resource name used in URLs and RBAC.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::StatefulSet => "statefulsets",
            Kind::ControllerRevision => "controllerrevisions",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// Finds the kind served under `group` with this plural name.
    pub fn from_plural(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::EndpointSlice | Kind::ControllerRevision => &[],
            Kind::Deployment => &["deploy"],
            Kind::ReplicaSet => &["rs"],
            Kind::StatefulSet => &["sts"],
        }
    }

    pub(crate) fn verbs(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["create", "delete", "get", "list", "watch"],
            Kind::EndpointSlice => &["get", "list", "watch"],
            _ => &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
        }
    }

    /// The `APIResource` entry for discovery.
    pub(crate) fn api_resource(self) -> Value {
        let mut v = json!({
            "name": self.plural(),
            "singularName": self.name().to_ascii_lowercase(),
            "namespaced": self.namespaced(),
            "kind": self.name(),
            "verbs": self.verbs(),
        });
        if !self.short_names().is_empty() {
            v["shortNames"] = json!(self.short_names());
        }
        if matches!(self, Kind::Pod | Kind::Service) || self.scalable() {
            v["categories"] = json!(["all"]);
        }
        v
    }
}
