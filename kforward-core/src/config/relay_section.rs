//! The config file's `relay` section: settings of the relay pods of the file's UDP and
//! proxy entries, for the whole file: the environment, and the image, pull policy, pull
//! secrets and pod patch that an entry's `relay_*` fields ([`RelayConfig`]) override.
//!
//! A file with a `relay` section is an object holding the entries under `forwards`:
//!
//! ```json
//! {
//!   "relay": {"env": {"HTTPS_PROXY": "http://proxy.corp:3128"},
//!             "image": "registry.corp.example/kforward-relay:0.1.0"},
//!   "forwards": [{"workload_type": "proxy", "remote_address": "db.internal", "remote_port": 5432}]
//! }
//! ```
//!
//! A plain array of entries (kftray's export) is the same file without a `relay` section.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{ConfigError, FieldError};
use super::read::{json_kind, render};
use super::relay_entry::RelayConfig;
use crate::relay::RelayOptions;

/// The fields a `relay` section may have.
const FIELDS: [&str; 5] = ["env", "image", "pull_policy", "pull_secrets", "pod_patch"];

/// The section's names of the relay pod settings, the entries' names of the same, and the
/// names errors give them.
const POD_FIELDS: [(&str, &str, &str); 4] = [
    ("image", "relay_image", "relay.image"),
    ("pull_policy", "relay_pull_policy", "relay.pull_policy"),
    ("pull_secrets", "relay_pull_secrets", "relay.pull_secrets"),
    ("pod_patch", "relay_pod_patch", "relay.pod_patch"),
];

/// The `relay` section of a config file.
///
/// # Example
///
/// ```
/// use kforward_core::config::load_config_document;
/// use kforward_core::relay::{PullPolicy, RelayOptions};
///
/// let doc = load_config_document(r#"{
///     "relay": {"env": {"HTTPS_PROXY": "http://proxy.corp:3128"},
///               "image": "registry.corp.example/kforward-relay:0.1.0", "pull_policy": "Always"},
///     "forwards": [
///         {"workload_type": "proxy", "remote_address": "db.internal", "remote_port": 5432},
///         {"workload_type": "proxy", "remote_address": "mq.internal", "remote_port": 5672,
///          "relay_pull_policy": "IfNotPresent"}
///     ]
/// }"#)?;
/// assert_eq!(doc.relay.env["HTTPS_PROXY"], "http://proxy.corp:3128");
/// assert_eq!(doc.forwards.len(), 2);
/// // The section first, then the entry's own fields.
/// let mut relay = RelayOptions::default();
/// doc.relay.apply_to(&mut relay)?;
/// doc.forwards[1].relay.apply_to(&mut relay)?;
/// assert_eq!(relay.image, "registry.corp.example/kforward-relay:0.1.0");
/// assert_eq!(relay.image_pull_policy, PullPolicy::IfNotPresent);
/// assert_eq!(relay.env["HTTPS_PROXY"], "http://proxy.corp:3128");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelaySection {
    /// `env`: environment variables of the relay pods, such as `HTTPS_PROXY` and `NO_PROXY`
    /// for a cluster whose pods reach the outside only through a proxy (as `--relay-env`).
    pub env: BTreeMap<String, String>,
    /// `image`, `pull_policy`, `pull_secrets` and `pod_patch`: the relay pod of every entry,
    /// as an entry's `relay_image`, `relay_pull_policy`, `relay_pull_secrets` and
    /// `relay_pod_patch` (which override them) say for that entry alone.
    pub pod: RelayConfig,
}

impl RelaySection {
    /// Sets what the section says on `opts`: its variables replace the same ones in
    /// `opts.env`, and its pod settings replace what [`RelayConfig::apply_to`] replaces.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming each bad field and its value (as the entries' names).
    pub fn apply_to(&self, opts: &mut RelayOptions) -> Result<(), ConfigError> {
        self.pod.apply_to(opts)?;
        opts.env
            .extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    /// Reads a `relay` section, reporting every bad field with its value.
    pub(super) fn read(value: Value) -> Result<Self, Vec<FieldError>> {
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(
                "relay",
                render(&value),
                format!(
                    "is {}, not an object such as {{\"env\": {{\"HTTPS_PROXY\": \"http://proxy:3128\"}}}}",
                    json_kind(&value)
                ),
            )]);
        };
        let mut errors = Vec::new();
        let mut section = RelaySection::default();
        let mut pod = Map::new();
        for (key, value) in map {
            if let Some((_, entry_name, _)) = POD_FIELDS.iter().find(|(name, ..)| *name == key) {
                pod.insert((*entry_name).to_owned(), value);
                continue;
            }
            match key.as_str() {
                "env" => match read_env(value) {
                    Ok(env) => section.env = env,
                    Err(mut e) => errors.append(&mut e),
                },
                _ => errors.push(FieldError::new(
                    "relay",
                    "",
                    format!(
                        "has an unknown field {key:?} (known: {})",
                        FIELDS.join(", ")
                    ),
                )),
            }
        }
        let (config, _, mut pod_errors) = RelayConfig::read_fields(pod);
        config.check(&mut pod_errors);
        for mut e in pod_errors {
            if let Some((.., shown)) = POD_FIELDS
                .iter()
                .find(|(_, entry_name, _)| *entry_name == e.field)
            {
                e.field = shown;
            }
            errors.push(e);
        }
        section.pod = config;
        if errors.is_empty() {
            Ok(section)
        } else {
            Err(errors)
        }
    }
}

/// Reads `relay.env`: an object of strings, each variable checked as relay pods will use it.
fn read_env(value: Value) -> Result<BTreeMap<String, String>, Vec<FieldError>> {
    let Value::Object(map) = value else {
        return Err(vec![FieldError::new(
            "relay.env",
            render(&value),
            format!("is {}, not an object of strings", json_kind(&value)),
        )]);
    };
    let mut errors = Vec::new();
    let mut env = BTreeMap::new();
    for (name, value) in map {
        let Value::String(text) = value else {
            errors.push(FieldError::new(
                "relay.env",
                format!("{name}={}", render(&value)),
                format!("is {}, not a string", json_kind(&value)),
            ));
            continue;
        };
        // Each variable on its own first, so that the error names the one at fault.
        let one = BTreeMap::from([(name.clone(), text.clone())]);
        match crate::relay::check_relay_env(&one) {
            Ok(()) => {
                env.insert(name, text);
            }
            Err(message) => errors.push(FieldError::new(
                "relay.env",
                format!("{name}={text}"),
                format!("cannot be used: {message}"),
            )),
        }
    }
    if errors.is_empty()
        && let Err(message) = crate::relay::check_relay_env(&env)
    {
        errors.push(FieldError::new("relay.env", "", message));
    }
    if errors.is_empty() {
        Ok(env)
    } else {
        Err(errors)
    }
}

/// A config document taken apart: the entries (an array, or one entry object in the plain
/// form), the `relay` section, and any other top-level fields of the sectioned form.
pub(super) struct Parts {
    pub(super) forwards: Value,
    pub(super) relay: Option<Value>,
    pub(super) unknown: Vec<String>,
    /// Whether the entries came from `forwards` (which must then be an array).
    pub(super) sectioned: bool,
}

/// Splits a config document into its entries and its `relay` section: an object with
/// `forwards` or `relay` is the sectioned form; anything else is the entries themselves.
pub(super) fn split_document(document: Value) -> Parts {
    match document {
        Value::Object(mut map) if map.contains_key("forwards") || map.contains_key("relay") => {
            let forwards = map
                .remove("forwards")
                .unwrap_or_else(|| Value::Array(Vec::new()));
            let relay = map.remove("relay");
            let unknown = Map::into_iter(map).map(|(k, _)| k).collect();
            Parts {
                forwards,
                relay,
                unknown,
                sectioned: true,
            }
        }
        other => Parts {
            forwards: other,
            relay: None,
            unknown: Vec::new(),
            sectioned: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigFileError, load_config_document, load_configs};
    use crate::relay::{PullPolicy, RelayOptions};

    fn relay_errors(json: &str) -> Vec<String> {
        match load_config_document(json) {
            Err(ConfigFileError::InvalidRelay { errors, .. }) => {
                errors.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected InvalidRelay for {json}, got {other:?}"),
        }
    }

    #[test]
    fn a_relay_section_sits_beside_the_entries() {
        let doc = load_config_document(
            r#"{"relay": {"env": {"HTTPS_PROXY": "http://u:p%40ss@proxy.corp:3128", "NO_PROXY": ".corp,10.0.0.0/8"}},
                "forwards": [{"service": "web", "remote_port": 80}, {"service": "db", "remote_port": 5432}]}"#,
        )
        .expect("loads");
        assert_eq!(doc.forwards.len(), 2);
        assert_eq!(doc.relay.env.len(), 2);
        assert_eq!(doc.relay.env["NO_PROXY"], ".corp,10.0.0.0/8");
        // The entries alone, as before; a section without entries is a file without forwards.
        let plain =
            load_config_document(r#"[{"service": "web", "remote_port": 80}]"#).expect("an array");
        assert!(plain.relay.env.is_empty());
        assert_eq!(plain.forwards.len(), 1);
        let only = load_config_document(r#"{"relay": {}}"#).expect("an empty section");
        assert!(only.forwards.is_empty() && only.relay.env.is_empty());
        // load_configs reads the same file, without the section.
        let configs = load_configs(
            r#"{"relay": {"env": {}}, "forwards": [{"service": "web", "remote_port": 80}]}"#,
        )
        .expect("loads");
        assert_eq!(configs.len(), 1);
        // A single entry object is still one entry.
        let one = load_config_document(r#"{"service": "web", "remote_port": 80}"#).expect("one");
        assert_eq!(one.forwards.len(), 1);
    }

    #[test]
    fn each_bad_value_names_its_field_and_value() {
        let errors = relay_errors(
            r#"{"relay": {"env": {"HTTPS_PROXY": "socks5://p:1080", "PORT": 8080, "KFORWARD_RELAY_TOKEN": "x", "1BAD": "y"}}}"#,
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(
            has(r#"field "relay.env": value "HTTPS_PROXY=socks5://p:1080" cannot be used"#),
            "{errors:?}"
        );
        assert!(
            has(r#"value "PORT=8080" is a number, not a string"#),
            "{errors:?}"
        );
        assert!(has("set by kforward itself"), "{errors:?}");
        assert!(has("\"1BAD\" is not a valid name"), "{errors:?}");
        let errors = relay_errors(r#"{"relay": {"env": ["HTTPS_PROXY=http://p:3128"]}}"#);
        assert!(
            errors[0].contains("is an array, not an object of strings"),
            "{errors:?}"
        );
        let errors = relay_errors(r#"{"relay": {"images": "x", "env": {}}}"#);
        assert_eq!(
            errors,
            [
                r#"field "relay": has an unknown field "images" (known: env, image, pull_policy, pull_secrets, pod_patch)"#
            ]
        );
        let errors = relay_errors(r#"{"relay": "http://p:3128", "forwards": []}"#);
        assert!(
            errors[0].starts_with(r#"field "relay": value "http://p:3128" is a string"#),
            "{errors:?}"
        );
        let err = load_config_document(
            r#"{"relay": {"env": {"HTTPS_PROXY": "http://proxy.corp:3128:x"}}}"#,
        )
        .expect_err("a bad URL");
        assert!(err.to_string().starts_with("config: the relay section is invalid: field \"relay.env\": value \"HTTPS_PROXY=http://proxy.corp:3128:x\""), "{err}");
    }

    #[test]
    fn unknown_top_level_fields_are_named() {
        let err = load_config_document(r#"{"forwards": [], "relays": {}}"#).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            r#"config: unknown top-level field(s) "relays" (a config file has "forwards" and "relay")"#
        );
        let err = load_config_document(r#"{"forwards": {"service": "web"}}"#).expect_err("no list");
        assert!(matches!(err, ConfigFileError::NotAList { .. }), "{err}");
    }
    #[test]
    fn the_section_sets_every_entrys_relay_pod_and_entries_override_it() {
        let doc = load_config_document(
            r#"{"relay": {"image": "mirror.local/kforward-relay:1", "pull_policy": "Never",
                          "pull_secrets": ["corp"], "pod_patch": {"metadata": {"labels": {"team": "a"}}},
                          "env": {"HTTPS_PROXY": "http://proxy.corp:3128"}},
                "forwards": [{"service": "dns", "protocol": "udp", "remote_port": 53},
                             {"service": "ntp", "protocol": "udp", "remote_port": 123,
                              "relay_image": "mirror.local/kforward-relay:2", "relay_pull_secrets": ["other"]}]}"#,
        )
        .expect("loads");
        assert_eq!(doc.relay.pod.pull_policy, Some(PullPolicy::Never));
        let of = |i: usize| {
            let mut opts = RelayOptions::default();
            doc.relay.apply_to(&mut opts).expect("valid section");
            doc.forwards[i]
                .relay
                .apply_to(&mut opts)
                .expect("valid entry");
            opts
        };
        let (first, second) = (of(0), of(1));
        assert_eq!(first.image, "mirror.local/kforward-relay:1");
        assert_eq!(first.pull_secrets, ["corp"]);
        assert_eq!(second.image, "mirror.local/kforward-relay:2");
        assert_eq!(second.pull_secrets, ["other"]);
        for opts in [&first, &second] {
            assert_eq!(opts.image_pull_policy, PullPolicy::Never);
            assert_eq!(opts.env["HTTPS_PROXY"], "http://proxy.corp:3128");
            let pod = opts.pod_preview().expect("pod");
            assert_eq!(pod.metadata.labels.expect("labels")["team"], "a");
        }
        assert_ne!(first, second, "other settings, other relay pods");

        let errors = relay_errors(
            r#"{"relay": {"image": "a b", "pull_policy": "sometimes", "pull_secrets": [1],
                          "pod_patch": "{}"}, "forwards": []}"#,
        );
        for part in [
            r#"field "relay.image": value "a b" is not an image reference"#,
            r#"field "relay.pull_policy": value "sometimes" is not an image pull policy"#,
            r#"field "relay.pull_secrets": value "[1]" is not a list of strings"#,
            r#"field "relay.pod_patch": value "{}" is a string, not an object"#,
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(part)),
                "{part}\nin: {errors:?}"
            );
        }
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
