//! The permissions kforward uses, what each one enables, and asking the API server about
//! them with SelfSubjectAccessReviews.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::client::KubeContext;
use crate::error::{Error, Result};

/// How much kforward needs a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Every TCP forward to pods and services needs it.
    Forwarding,
    /// Only forwards to one kind of target need it (deployments, StatefulSets,
    /// ReplicaSets).
    Target,
    /// UDP and `proxy` forwards need it: they run a relay pod.
    Relay,
}

/// One permission: a verb on a resource (and subresource) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `get`, `list`, `watch`, `create`, `patch`, `delete`.
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The plural resource.
    pub resource: &'static str,
    /// The subresource (`portforward`), or `""`.
    pub subresource: &'static str,
    /// Who needs it.
    pub need: Need,
    /// What cannot work without it.
    pub disables: &'static str,
}

impl Permission {
    /// `verb resource[/subresource]` with the group when not core, as `kubectl auth can-i`
    /// names it: `create pods/portforward`, `list endpointslices.discovery.k8s.io`.
    pub fn name(&self) -> String {
        let mut r = self.resource.to_string();
        if !self.group.is_empty() {
            r = format!("{r}.{}", self.group);
        }
        if !self.subresource.is_empty() {
            r = format!("{r}/{}", self.subresource);
        }
        format!("{} {r}", self.verb)
    }
}

const fn p(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    need: Need,
    disables: &'static str,
) -> Permission {
    Permission {
        verb,
        group,
        resource,
        subresource,
        need,
        disables,
    }
}

/// Every permission kforward may use, in the order `kforward doctor` checks them.
pub const PERMISSIONS: [Permission; 13] = [
    p(
        "create",
        "",
        "pods",
        "portforward",
        Need::Forwarding,
        "every forward (the port-forward tunnel itself)",
    ),
    p(
        "get",
        "",
        "pods",
        "",
        Need::Forwarding,
        "every forward (reading the target pod and its ports), and waiting for relay pods",
    ),
    p(
        "list",
        "",
        "pods",
        "",
        Need::Forwarding,
        "forwards to deployments and pod selectors (finding their pods), and kforward gc",
    ),
    p(
        "watch",
        "",
        "pods",
        "",
        Need::Forwarding,
        "following a deployment's or selector's pods through restarts",
    ),
    p(
        "get",
        "",
        "services",
        "",
        Need::Forwarding,
        "forwards to svc/NAME",
    ),
    p(
        "list",
        "discovery.k8s.io",
        "endpointslices",
        "",
        Need::Forwarding,
        "forwards to services (their ready pods come from EndpointSlices)",
    ),
    p(
        "watch",
        "discovery.k8s.io",
        "endpointslices",
        "",
        Need::Forwarding,
        "following a service's pods through restarts and rollouts",
    ),
    p(
        "get",
        "apps",
        "deployments",
        "",
        Need::Target,
        "forwards to deploy/NAME",
    ),
    p(
        "get",
        "apps",
        "statefulsets",
        "",
        Need::Target,
        "forwards to sts/NAME",
    ),
    p(
        "get",
        "apps",
        "replicasets",
        "",
        Need::Target,
        "forwards to rs/NAME",
    ),
    p(
        "create",
        "",
        "pods",
        "",
        Need::Relay,
        "UDP forwards and proxy forwards (they run a relay pod)",
    ),
    p(
        "delete",
        "",
        "pods",
        "",
        Need::Relay,
        "removing relay pods when forwards stop, and kforward gc",
    ),
    p(
        "patch",
        "",
        "pods",
        "",
        Need::Relay,
        "the relay pod's heartbeat (without it, another session's kforward gc may delete a relay pod in use)",
    ),
];

/// Asks the API server whether the current user may use `perm` in `namespace`; the
/// server's reason comes back with a refusal when it gives one.
///
/// # Errors
///
/// The API errors of creating the review ([`Error::Unauthorized`] for rejected
/// credentials, [`Error::Unreachable`]).
pub async fn can_i(
    ctx: &KubeContext,
    perm: &Permission,
    namespace: &str,
) -> Result<(bool, String)> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(perm.verb.to_string()),
                group: Some(perm.group.to_string()),
                resource: Some(perm.resource.to_string()),
                subresource: (!perm.subresource.is_empty()).then(|| perm.subresource.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(ctx.client().clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                ctx.server(),
                "create",
                "selfsubjectaccessreviews",
                namespace,
                None,
            )
        })?;
    let status = answer.status.unwrap_or_default();
    Ok((status.allowed, status.reason.unwrap_or_default()))
}
