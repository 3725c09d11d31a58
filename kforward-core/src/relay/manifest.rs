//! What a relay pod looks like: [`RelayOptions`] (image, pull policy and secrets, a patch),
//! the pod object built from them, and [`PodPatch`], the user's JSON merge patch over it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, LocalObjectReference, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::error::{Error, Result};

/// The port the relay listens on inside its pod.
pub const DEFAULT_RELAY_PORT: u16 = kforward_relay::server::DEFAULT_PORT;
/// `app.kubernetes.io/name` of every relay pod.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/managed-by` of every relay pod.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the session that owns a relay pod.
pub const LABEL_SESSION: &str = "kforward.dev/session";
/// The environment variable that names the relay image when `--relay-image` does not.
pub const RELAY_IMAGE_ENV: &str = "KFORWARD_RELAY_IMAGE";
/// The name of the relay's container in its pod (a [`PodPatch`] names it to change it).
pub const RELAY_CONTAINER: &str = "relay";
pub(crate) const ANNOTATION_HEARTBEAT: &str = "kforward.dev/heartbeat";
const ANNOTATION_CREATED_AT: &str = "kforward.dev/created-at";
const ANNOTATION_CREATED_BY: &str = "kforward.dev/created-by";
/// Service meshes that inject a proxy sidecar would route the relay's own connections
/// through it (and hold the pod in Pending while it starts): the relay opts out by default.
/// Istio reads `sidecar.istio.io/inject`, Linkerd `linkerd.io/inject`. A patch setting one
/// to `null` removes it.
const SIDECAR_OPT_OUT: [(&str, &str); 2] = [
    ("sidecar.istio.io/inject", "false"),
    ("linkerd.io/inject", "disabled"),
];
const TOKEN_ENV: &str = "KFORWARD_RELAY_TOKEN";
const PORT_ENV: &str = "KFORWARD_RELAY_PORT";

/// The relay image of this version: `ghcr.io/kforward/kforward-relay:<version>`, which the
/// release workflow publishes for linux/amd64 and linux/arm64.
///
/// # Example
///
/// ```
/// assert!(kforward_core::relay::default_image().starts_with("ghcr.io/kforward/kforward-relay:"));
/// ```
pub fn default_image() -> String {
    format!(
        "ghcr.io/kforward/kforward-relay:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// When the kubelet pulls the relay image (the container's `imagePullPolicy`).
///
/// # Example
///
/// ```
/// use kforward_core::relay::PullPolicy;
/// assert_eq!(PullPolicy::default(), PullPolicy::IfNotPresent);
/// assert_eq!("Always".parse::<PullPolicy>(), Ok(PullPolicy::Always));
/// assert_eq!(PullPolicy::Never.as_str(), "Never");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image (the default: a relay pod per
    /// session should not cost a registry round trip, nor fail when the registry is down).
    #[default]
    IfNotPresent,
    /// Never pull: the image must be on the node already.
    Never,
}

impl PullPolicy {
    /// Kubernetes' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "invalid image pull policy {other:?}: use Always, IfNotPresent or Never"
            )),
        }
    }
}

/// Settings of relay pods.
///
/// # Example
///
/// ```
/// use kforward_core::relay::{PodPatch, RelayOptions};
/// let o = RelayOptions {
///     image: "registry.corp.example/kforward-relay:0.1.0".into(),
///     pull_secrets: vec!["corp-registry".into()],
///     pod_patch: Some(PodPatch::parse(r#"{"spec":{"nodeSelector":{"pool":"tools"}}}"#, "inline")?),
///     ..RelayOptions::default()
/// };
/// let pod = o.pod_preview()?;
/// assert_eq!(pod.spec.unwrap().node_selector.unwrap()["pool"], "tools");
/// # Ok::<(), kforward_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// The relay's container image (`--relay-image`, `KFORWARD_RELAY_IMAGE`).
    pub image: String,
    /// When the kubelet pulls the image.
    pub image_pull_policy: PullPolicy,
    /// Secrets (in the relay's namespace) holding credentials for the image's registry
    /// (`--relay-pull-secret`): the pod's `imagePullSecrets`.
    pub pull_secrets: Vec<String>,
    /// A JSON merge patch over the relay pod (`--relay-pod-patch`): node selectors,
    /// tolerations, annotations, resources, a security context.
    pub pod_patch: Option<PodPatch>,
    /// The port the relay listens on in its pod.
    pub port: u16,
    /// How long a new relay pod may take to become Ready.
    pub ready_timeout: Duration,
    /// How long the relay waits without any client before it exits (its pod completes and
    /// the next use makes a new one). A safety net for sessions that die without cleaning
    /// up; [`gc`](super::gc) is the other.
    pub idle_exit: Duration,
    /// Environment variables for the relay's container (`--relay-env KEY=VALUE`), such as
    /// `HTTPS_PROXY` and `NO_PROXY` for a cluster whose pods reach the outside only through
    /// a proxy: the relay then reaches TCP destinations through it (see
    /// [`check_relay_env`](super::check_relay_env) and
    /// [`default_relay_no_proxy`](super::default_relay_no_proxy)). They are set after
    /// [`pod_patch`](Self::pod_patch), so a patch's `env` list does not drop them.
    pub env: BTreeMap<String, String>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            image: default_image(),
            image_pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
            pod_patch: None,
            port: DEFAULT_RELAY_PORT,
            ready_timeout: Duration::from_secs(60),
            idle_exit: super::server::DEFAULT_IDLE_EXIT,
            env: BTreeMap::new(),
        }
    }
}

impl RelayOptions {
    /// The relay pod these options make, as it would be created (with a placeholder name,
    /// session and token, and [`env`](Self::env) without the `NO_PROXY` that kforward adds
    /// from the cluster's ranges): to check a patch before anything runs, or to show the pod.
    ///
    /// # Errors
    ///
    /// [`Error::RelayPodPatch`] when the patch does not give a valid pod.
    pub fn pod_preview(&self) -> Result<Pod> {
        let user_env = self
            .env
            .iter()
            .map(|(name, value)| env(name, value.clone()))
            .collect();
        relay_pod(
            self,
            "kforward-relay-preview",
            "preview",
            "<token>",
            user_env,
        )
    }
}

/// A JSON merge patch (RFC 7386) over the relay pod, with one addition that Kubernetes'
/// strategic merge patches also make: entries of `spec.containers` are merged into the
/// container of the same `name` (the relay's is [`RELAY_CONTAINER`]) instead of replacing
/// the whole list, so `{"spec":{"containers":[{"name":"relay","resources":{...}}]}}`
/// changes the relay's resources and keeps its image, arguments and ports. Everything else
/// follows RFC 7386: objects merge, `null` removes a key, arrays (tolerations, a
/// container's `env`) are replaced whole.
///
/// The relay's name, labels, token and port stay what kforward sets, whatever the patch
/// says: they are how kforward finds, talks to and cleans up its pods.
///
/// # Example
///
/// ```
/// use kforward_core::relay::PodPatch;
/// let p = PodPatch::parse(r#"{"metadata":{"annotations":{"team":"tools"}}}"#, "inline")?;
/// assert_eq!(p.value()["metadata"]["annotations"]["team"], "tools");
/// assert!(PodPatch::parse("[1, 2]", "inline").is_err());
/// # Ok::<(), kforward_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPatch {
    value: Value,
    origin: String,
}

impl PodPatch {
    /// Parses a patch from JSON text; `origin` (a file name, a config field) names it in
    /// errors.
    ///
    /// # Errors
    ///
    /// [`Error::RelayPodPatch`] when the text is not JSON or not an object.
    pub fn parse(text: &str, origin: &str) -> Result<PodPatch> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::RelayPodPatch {
            origin: origin.to_string(),
            message: format!("not valid JSON: {e}"),
        })?;
        PodPatch::from_value(value, origin)
    }

    /// A patch from a JSON value (a config file's field).
    ///
    /// # Errors
    ///
    /// [`Error::RelayPodPatch`] when the value is not an object.
    pub fn from_value(value: Value, origin: &str) -> Result<PodPatch> {
        if !value.is_object() {
            return Err(Error::RelayPodPatch {
                origin: origin.to_string(),
                message:
                    "a pod patch must be a JSON object, like {\"spec\":{\"nodeSelector\":{...}}}"
                        .into(),
            });
        }
        Ok(PodPatch {
            value,
            origin: origin.to_string(),
        })
    }

    /// Reads a patch from a file.
    ///
    /// # Errors
    ///
    /// [`Error::RelayPodPatch`] when the file cannot be read, or as [`PodPatch::parse`].
    pub fn from_file(path: &Path) -> Result<PodPatch> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::RelayPodPatch {
            origin: origin.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        PodPatch::parse(&text, &origin)
    }

    /// The patch as JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Where the patch came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Applies the patch to a pod object (as JSON).
    fn apply(&self, pod: &mut Value) {
        let mut patch = self.value.clone();
        let containers = patch
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .and_then(|spec| spec.remove("containers"));
        match containers {
            Some(Value::Array(list)) => {
                for c in list {
                    merge_container(pod, c);
                }
            }
            // `null` or anything but a list: as RFC 7386 says.
            Some(other) => {
                json_patch::merge(pod, &serde_json::json!({"spec": {"containers": other}}))
            }
            None => {}
        }
        json_patch::merge(pod, &patch);
    }
}

/// Merges one container of a patch into the pod's container of the same name, or adds it.
fn merge_container(pod: &mut Value, patch: Value) {
    let name = patch
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(list) = pod
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    match list
        .iter_mut()
        .find(|c| name.is_some() && c.get("name").and_then(Value::as_str) == name.as_deref())
    {
        Some(existing) => json_patch::merge(existing, &patch),
        None => list.push(patch),
    }
}

/// Seconds since the Unix epoch (0 on a clock before it): the heartbeat and creation time.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `user@host` of whoever runs kforward, for the `created-by` annotation.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{host}")
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// The relay pod `opts` describe, named `name`, owned by `session`, checking `token`, with
/// the relay container's environment `user_env` (`opts.env` and what kforward adds to it,
/// `relay_pod_env`).
///
/// # Errors
///
/// [`Error::RelayPodPatch`] when the patch does not give a valid pod.
pub(crate) fn relay_pod(
    opts: &RelayOptions,
    name: &str,
    session: &str,
    token: &str,
    user_env: Vec<EnvVar>,
) -> Result<Pod> {
    let identity = Identity {
        name,
        session,
        token,
        user_env,
    };
    let base = base_pod(opts, name, session);
    let Some(patch) = &opts.pod_patch else {
        return Ok(with_identity(base, opts, identity));
    };
    let broken = |message: String| Error::RelayPodPatch {
        origin: patch.origin.clone(),
        message,
    };
    let mut value = serde_json::to_value(&base).map_err(|e| broken(e.to_string()))?;
    patch.apply(&mut value);
    let patched = serde_json::from_value::<Pod>(value)
        .map_err(|e| broken(format!("the patched pod is not a valid Pod: {e}")))?;
    Ok(with_identity(patched, opts, identity))
}

fn base_pod(opts: &RelayOptions, name: &str, session: &str) -> Pod {
    let now = now_secs().to_string();
    let mut annotations = BTreeMap::from([
        (ANNOTATION_CREATED_AT.to_string(), now.clone()),
        (ANNOTATION_CREATED_BY.to_string(), who()),
        (ANNOTATION_HEARTBEAT.to_string(), now),
    ]);
    for (k, v) in SIDECAR_OPT_OUT {
        annotations.insert(k.to_string(), v.to_string());
    }
    let q = |s: &str| Quantity(s.to_string());
    let port = opts.port;
    let pull_secrets = (!opts.pull_secrets.is_empty()).then(|| {
        opts.pull_secrets
            .iter()
            .map(|s| LocalObjectReference { name: s.clone() })
            .collect()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(identity_labels(session)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(5),
            image_pull_secrets: pull_secrets,
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: RELAY_CONTAINER.into(),
                image: Some(opts.image.clone()),
                image_pull_policy: Some(opts.image_pull_policy.as_str().into()),
                args: Some(vec!["--port".into(), port.to_string()]),
                ports: Some(vec![ContainerPort {
                    name: Some("relay".into()),
                    container_port: i32::from(port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                security_context: Some(SecurityContext {
                    // The image's user is the numeric 65532 (relay.Dockerfile), which
                    // `runAsNonRoot` can check; no `runAsUser`, so that platforms that assign
                    // a user per namespace (OpenShift's restricted SCC) may.
                    run_as_non_root: Some(true),
                    read_only_root_filesystem: Some(true),
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), q("10m")),
                        ("memory".to_string(), q("16Mi")),
                    ])),
                    limits: Some(BTreeMap::from([("memory".to_string(), q("128Mi"))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn identity_labels(session: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "kforward-relay".to_string()),
        (LABEL_MANAGED_BY.to_string(), "kforward".to_string()),
        (LABEL_SESSION.to_string(), session.to_string()),
    ])
}

/// What a relay pod is made with beyond its [`RelayOptions`].
struct Identity<'a> {
    name: &'a str,
    session: &'a str,
    token: &'a str,
    user_env: Vec<EnvVar>,
}

/// Puts back what kforward relies on, whatever a patch did: the name, the labels, the
/// user's relay environment, and the relay container's token, port and idle exit.
fn with_identity(mut pod: Pod, opts: &RelayOptions, identity: Identity<'_>) -> Pod {
    let Identity {
        name,
        session,
        token,
        user_env,
    } = identity;
    pod.metadata.name = Some(name.to_string());
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(identity_labels(session));
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if !spec.containers.iter().any(|c| c.name == RELAY_CONTAINER) {
        spec.containers.insert(
            0,
            Container {
                name: RELAY_CONTAINER.into(),
                image: Some(opts.image.clone()),
                ..Default::default()
            },
        );
    }
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| c.name == RELAY_CONTAINER)
    {
        let ours = [
            env(TOKEN_ENV, token.to_string()),
            env(PORT_ENV, opts.port.to_string()),
            env(
                super::server::IDLE_EXIT_ENV,
                opts.idle_exit.as_secs_f64().to_string(),
            ),
        ];
        let list = c.env.get_or_insert_with(Vec::new);
        list.retain(|e| {
            !ours.iter().any(|o| o.name == e.name) && !user_env.iter().any(|u| u.name == e.name)
        });
        list.extend(user_env.iter().cloned());
        list.extend(ours);
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(patch: &str) -> RelayOptions {
        RelayOptions {
            pod_patch: Some(PodPatch::parse(patch, "test").expect("valid patch")),
            ..RelayOptions::default()
        }
    }

    fn relay(pod: &Pod) -> &Container {
        let spec = pod.spec.as_ref().expect("spec");
        spec.containers
            .iter()
            .find(|c| c.name == RELAY_CONTAINER)
            .expect("relay container")
    }

    #[test]
    fn defaults_are_restricted_if_not_present_and_opt_out_of_sidecars() {
        let pod = relay_pod(&RelayOptions::default(), "p", "s", "t", Vec::new()).expect("pod");
        let c = relay(&pod);
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        let ann = pod.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann["sidecar.istio.io/inject"], "false");
        assert!(
            pod.spec
                .as_ref()
                .expect("spec")
                .image_pull_secrets
                .is_none()
        );
    }

    #[test]
    fn a_patch_merges_containers_by_name_and_keeps_what_kforward_needs() {
        let o = opts(
            r#"{
              "metadata": {"name": "evil", "labels": {"team": "tools", "kforward.dev/session": "x"},
                           "annotations": {"sidecar.istio.io/inject": null}},
              "spec": {
                "nodeSelector": {"pool": "tools"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "containers": [{"name": "relay", "resources": {"limits": {"memory": "64Mi"}},
                                "env": [{"name": "EXTRA", "value": "1"}]}]
              }
            }"#,
        );
        let pod = relay_pod(&o, "p", "s", "tok", Vec::new()).expect("pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "tools");
        assert_eq!(labels[LABEL_SESSION], "s");
        let ann = pod.metadata.annotations.as_ref().expect("annotations");
        assert!(!ann.contains_key("sidecar.istio.io/inject"));
        assert_eq!(ann["linkerd.io/inject"], "disabled");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            spec.node_selector.as_ref().expect("selector")["pool"],
            "tools"
        );
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        let c = relay(&pod);
        assert_eq!(c.image.as_deref(), Some(default_image().as_str()));
        assert_eq!(
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .expect("limits")["memory"],
            Quantity("64Mi".into())
        );
        assert!(c.args.is_some(), "arguments kept");
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(
            env.contains(&"EXTRA") && env.contains(&TOKEN_ENV),
            "{env:?}"
        );
        let token = c.env.iter().flatten().find(|e| e.name == TOKEN_ENV);
        assert_eq!(token.and_then(|e| e.value.as_deref()), Some("tok"));
    }

    #[test]
    fn the_security_context_changes_only_when_the_patch_says_so() {
        let o = opts(
            r#"{"spec":{"containers":[{"name":"relay","securityContext":{"allowPrivilegeEscalation":true}}]}}"#,
        );
        let pod = relay_pod(&o, "p", "s", "t", Vec::new()).expect("pod");
        let sc = relay(&pod).security_context.as_ref().expect("sc");
        assert_eq!(sc.allow_privilege_escalation, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true), "the rest stays");
    }

    #[test]
    fn pull_secrets_and_policy_land_on_the_pod() {
        let o = RelayOptions {
            pull_secrets: vec!["a".into(), "b".into()],
            image_pull_policy: PullPolicy::Always,
            ..RelayOptions::default()
        };
        let pod = o.pod_preview().expect("pod");
        let secrets: Vec<_> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .expect("secrets")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(secrets, ["a", "b"]);
        assert_eq!(relay(&pod).image_pull_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn a_patch_that_breaks_the_pod_is_named() {
        let o = opts(r#"{"spec":{"nodeSelector":"not a map"}}"#);
        let e = o.pod_preview().expect_err("invalid");
        let msg = e.to_string();
        assert!(
            msg.contains("test") && msg.contains("not a valid Pod"),
            "{msg}"
        );
        assert!(
            PodPatch::parse("{", "f.json")
                .expect_err("json")
                .to_string()
                .contains("f.json")
        );
    }
}
