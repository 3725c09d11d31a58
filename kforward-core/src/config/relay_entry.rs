//! The relay pod settings of a config entry: `relay_image`, `relay_pull_policy`,
//! `relay_pull_secrets` and `relay_pod_patch`, what `--relay-image`, `--relay-pull-policy`,
//! `--relay-pull-secret` and `--relay-pod-patch` say on the command line. The C ABI reads
//! the same fields from its JSON.

use serde::Serialize;
use serde_json::Value;

use super::error::{ConfigError, FieldError};
use crate::relay::{PodPatch, PullPolicy, RelayOptions};
use crate::spec::name::check_dns1123_subdomain;
use crate::spec::non_empty;

/// How a config entry's relay pod (UDP and `proxy` entries) is made; unset fields keep
/// what the command line or the caller's [`RelayOptions`] say.
///
/// In a file, the fields sit beside kftray's: `"relay_image": "registry.corp/kforward-relay:0.1.0"`,
/// `"relay_pull_policy": "Always"`, `"relay_pull_secrets": ["corp-registry"]` and
/// `"relay_pod_patch": {...}` (a JSON merge patch over the pod, as
/// [`PodPatch`] describes, written inline). Entries of one cluster with the same relay
/// settings share their relay pods; entries with other settings get pods of their own.
///
/// # Example
///
/// ```
/// use kforward_core::config::ForwardConfig;
/// use kforward_core::relay::{PullPolicy, RelayOptions};
///
/// let config: ForwardConfig = serde_json::from_str(r#"{
///     "workload_type": "proxy", "remote_address": "db.internal", "remote_port": 5432,
///     "relay_image": "registry.corp.example/kforward-relay:0.1.0",
///     "relay_pull_policy": "Always",
///     "relay_pull_secrets": ["corp-registry"],
///     "relay_pod_patch": {"spec": {"nodeSelector": {"pool": "tools"}}}
/// }"#)?;
/// config.validate()?;
/// let mut relay = RelayOptions::default();
/// config.relay.apply_to(&mut relay)?;
/// assert_eq!(relay.image, "registry.corp.example/kforward-relay:0.1.0");
/// assert_eq!(relay.image_pull_policy, PullPolicy::Always);
/// assert_eq!(relay.pull_secrets, ["corp-registry"]);
/// let pod = relay.pod_preview()?;
/// assert_eq!(pod.spec.unwrap().node_selector.unwrap()["pool"], "tools");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayConfig {
    /// `relay_image`: the relay's container image, e.g. from a mirror registry.
    #[serde(rename = "relay_image", skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `relay_pull_policy`: `"Always"`, `"IfNotPresent"` or `"Never"`, as Kubernetes
    /// spells them.
    #[serde(
        rename = "relay_pull_policy",
        skip_serializing_if = "Option::is_none",
        serialize_with = "policy_text"
    )]
    pub pull_policy: Option<PullPolicy>,
    /// `relay_pull_secrets`: image pull secrets in the relay's namespace; empty means unset.
    #[serde(rename = "relay_pull_secrets", skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
    /// `relay_pod_patch`: a JSON merge patch over the relay pod (a JSON object).
    #[serde(rename = "relay_pod_patch", skip_serializing_if = "Option::is_none")]
    pub pod_patch: Option<Value>,
}

/// Where errors about `relay_pod_patch` say the patch came from.
const PATCH_FIELD: &str = "relay_pod_patch";

fn policy_text<S: serde::Serializer>(
    value: &Option<PullPolicy>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(p) => serializer.serialize_str(p.as_str()),
        None => serializer.serialize_none(),
    }
}

impl RelayConfig {
    /// Whether no relay field is set.
    pub fn is_empty(&self) -> bool {
        self == &RelayConfig::default()
    }

    /// Sets what this entry says on `opts`; what it leaves unset stays. A set list of pull
    /// secrets replaces the one in `opts`, as a set `relay_image` replaces the image.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming each bad field and its value: an image with spaces, a secret
    /// name Kubernetes refuses, a patch that is no object or gives no valid pod.
    pub fn apply_to(&self, opts: &mut RelayOptions) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        self.check(&mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::new(errors));
        }
        if let Some(image) = non_empty(self.image.as_deref()) {
            opts.image = image.trim().to_owned();
        }
        if let Some(policy) = self.pull_policy {
            opts.image_pull_policy = policy;
        }
        if !self.pull_secrets.is_empty() {
            opts.pull_secrets.clone_from(&self.pull_secrets);
        }
        if let Some(patch) = &self.pod_patch {
            opts.pod_patch = Some(patch_of(patch).map_err(ConfigError::from)?);
        }
        Ok(())
    }

    /// Checks the fields: an image without spaces, secret names that Kubernetes accepts
    /// (DNS-1123 subdomains), and a pod patch that is an object and gives a valid pod.
    pub(super) fn check(&self, errors: &mut Vec<FieldError>) {
        if let Some(image) = non_empty(self.image.as_deref())
            && image.trim().contains(char::is_whitespace)
        {
            errors.push(FieldError::new(
                "relay_image",
                image,
                "is not an image reference: it contains whitespace (e.g. \"registry.corp.example/kforward-relay:0.1.0\")",
            ));
        }
        for secret in &self.pull_secrets {
            if let Err(p) = check_dns1123_subdomain(secret) {
                errors.push(FieldError::new(
                    "relay_pull_secrets",
                    secret,
                    format!("is not a valid secret name: it {p}"),
                ));
            }
        }
        if let Some(patch) = &self.pod_patch
            && let Err(e) = patch_of(patch).and_then(|p| {
                RelayOptions {
                    pod_patch: Some(p),
                    ..RelayOptions::default()
                }
                .pod_preview()
                .map(|_| ())
                .map_err(|e| patch_problem(patch, &e))
            })
        {
            errors.push(e);
        }
    }
}

/// The patch of a `relay_pod_patch` value.
fn patch_of(value: &Value) -> Result<PodPatch, FieldError> {
    PodPatch::from_value(value.clone(), PATCH_FIELD).map_err(|e| patch_problem(value, &e))
}

fn patch_problem(value: &Value, e: &crate::Error) -> FieldError {
    let problem = match e {
        crate::Error::RelayPodPatch { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let shown = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    FieldError::new(
        PATCH_FIELD,
        shown,
        format!("is not a usable pod patch: {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use crate::config::{ForwardConfig, load_configs};
    use crate::relay::{PullPolicy, RelayOptions};

    /// Every problem of a file, one a line.
    fn problems(json: &str) -> String {
        load_configs(json).map_or_else(|e| e.to_string(), |_| String::new())
    }

    #[test]
    fn relay_fields_are_read_checked_and_written_back() {
        let json = r#"[{"service": "dns", "protocol": "udp", "remote_port": 53,
            "relay_image": " mirror.local/kforward-relay:1 ", "relay_pull_policy": "Never",
            "relay_pull_secrets": ["a", "b"], "relay_pod_patch": {"metadata": {"annotations": {"team": "x"}}}}]"#;
        let configs = load_configs(json).unwrap_or_else(|e| panic!("{e}"));
        let relay = &configs[0].relay;
        assert_eq!(relay.pull_policy, Some(PullPolicy::Never));
        assert_eq!(relay.pull_secrets, ["a", "b"]);
        assert!(configs[0].extra.is_empty(), "{:?}", configs[0].extra);

        let mut opts = RelayOptions {
            pull_secrets: vec!["from-the-flag".into()],
            ..RelayOptions::default()
        };
        relay.apply_to(&mut opts).expect("valid");
        assert_eq!(opts.image, "mirror.local/kforward-relay:1");
        assert_eq!(opts.pull_secrets, ["a", "b"], "the entry's list replaces");
        let pod = opts.pod_preview().expect("pod");
        assert_eq!(pod.metadata.annotations.expect("annotations")["team"], "x");

        let written = serde_json::to_value(&configs).expect("json");
        assert_eq!(written[0]["relay_pull_policy"], "Never");
        assert_eq!(
            written[0]["relay_pod_patch"]["metadata"]["annotations"]["team"],
            "x"
        );
        let again: Vec<ForwardConfig> = serde_json::from_value(written).expect("reads back");
        assert_eq!(again, configs);

        let plain = load_configs(r#"[{"service": "web", "remote_port": 80}]"#).expect("plain");
        assert!(plain[0].relay.is_empty());
        let written = serde_json::to_value(&plain).expect("json");
        assert!(written[0].get("relay_pull_secrets").is_none(), "{written}");
        let mut untouched = RelayOptions::default();
        plain[0]
            .relay
            .apply_to(&mut untouched)
            .expect("nothing to apply");
        assert_eq!(untouched, RelayOptions::default());
    }

    #[test]
    fn bad_relay_fields_are_named_with_their_values() {
        let got = problems(
            r#"[{"alias": "dns", "service": "dns", "protocol": "udp", "remote_port": 53,
                "relay_image": "mirror.local/kforward relay", "relay_pull_policy": "sometimes",
                "relay_pull_secrets": ["Corp_Registry"], "relay_pod_patch": [1]}]"#,
        );
        for part in [
            "field \"relay_image\": value \"mirror.local/kforward relay\" is not an image reference: it contains whitespace",
            "field \"relay_pull_policy\": value \"sometimes\" is not an image pull policy (expected \"Always\", \"IfNotPresent\" or \"Never\")",
            "field \"relay_pull_secrets\": value \"Corp_Registry\" is not a valid secret name",
            "field \"relay_pod_patch\": value \"[1]\" is an array, not an object",
        ] {
            assert!(got.contains(part), "{part}\nin: {got}");
        }

        let got = problems(
            r#"[{"service": "dns", "protocol": "udp", "remote_port": 53,
                "relay_pull_secrets": "corp-registry",
                "relay_pod_patch": {"spec": {"containers": [{"name": "relay", "ports": "none"}]}}}]"#,
        );
        assert_eq!(got.lines().count(), 2, "one problem: {got}");
        for part in [
            "field \"relay_pod_patch\": value \"{\\\"spec\\\"",
            "is not a usable pod patch: the patched pod is not a valid Pod",
        ] {
            assert!(got.contains(part), "{part}\nin: {got}");
        }
        let one = load_configs(
            r#"{"service": "dns", "protocol": "udp", "remote_port": 53, "relay_pull_secrets": "corp-registry"}"#,
        )
        .expect("one secret as a string");
        assert_eq!(one[0].relay.pull_secrets, ["corp-registry"]);
    }
}
