//! Reading a config entry out of JSON, as leniently as kftray's files need: `null` for
//! unset, ports as numbers or numeric strings, keywords in any case, unknown fields kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::entry::{DEFAULT_NAMESPACE, ForwardConfig};
use super::error::{ConfigError, FieldError};
use super::relay_entry::RelayConfig;

const LOCAL_PORT_PROBLEM: &str = "is not a port (0-65535, where 0 picks a free port)";
pub(super) const REMOTE_PORT_PROBLEM: &str = "is not a port (1-65535)";

impl ForwardConfig {
    /// Reads the known fields out of a JSON object, leaving the rest in `extra`. Fields of
    /// the wrong type are reported and left at their defaults.
    pub(super) fn read_fields(map: Map<String, Value>) -> (Self, Vec<FieldError>) {
        let mut fields = FieldReader {
            map,
            errors: Vec::new(),
        };
        let config = ForwardConfig {
            service: fields.string("service"),
            namespace: fields
                .string("namespace")
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            local_port: fields.port("local_port", LOCAL_PORT_PROBLEM),
            remote_port: fields.port("remote_port", REMOTE_PORT_PROBLEM),
            context: fields.string("context"),
            workload_type: fields.keyword(
                "workload_type",
                "is not a workload type (expected \"service\", \"pod\", \"proxy\", \"deployment\", \"statefulset\", \"replicaset\" or \"socks\")",
            ),
            protocol: fields.keyword(
                "protocol",
                "is not a protocol (expected \"tcp\" or \"udp\")",
            ),
            remote_address: fields.string("remote_address"),
            local_address: fields.string("local_address"),
            alias: fields.string("alias"),
            kubeconfig: fields.string("kubeconfig"),
            target: fields.string("target"),
            proxy_protocol: fields.setting(
                "proxy_protocol",
                "is not a PROXY protocol version (expected \"v1\" or \"v2\")",
            ),
            accept_proxy_protocol: fields.setting(
                "accept_proxy_protocol",
                "is not an accept-proxy-protocol mode (expected \"strict\" or \"optional\")",
            ),
            relay: fields.relay(),
            auth: fields.string("auth"),
            direct: fields.string("direct"),
            no_relay: fields.flag("no_relay"),
            cluster_domain: fields.string("cluster_domain"),
            extra: BTreeMap::new(),
        };
        let FieldReader { map, errors } = fields;
        let extra = map.into_iter().collect();
        (ForwardConfig { extra, ..config }, errors)
    }
}

impl RelayConfig {
    /// Reads the `relay_*` fields out of a JSON object, returning what is left of it. Fields
    /// of the wrong type are reported and left unset.
    pub(super) fn read_fields(
        map: Map<String, Value>,
    ) -> (Self, Map<String, Value>, Vec<FieldError>) {
        let mut fields = FieldReader {
            map,
            errors: Vec::new(),
        };
        let relay = fields.relay();
        (relay, fields.map, fields.errors)
    }
}

impl<'de> Deserialize<'de> for ForwardConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        let (config, errors) = ForwardConfig::read_fields(map);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(serde::de::Error::custom(ConfigError::new(errors)))
        }
    }
}

/// Takes known fields out of a JSON object, converting leniently and recording type errors.
struct FieldReader {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl FieldReader {
    fn relay(&mut self) -> RelayConfig {
        RelayConfig {
            image: self.string("relay_image"),
            pull_policy: self.setting(
                "relay_pull_policy",
                "is not an image pull policy (expected \"Always\", \"IfNotPresent\" or \"Never\")",
            ),
            pull_secrets: self.strings("relay_pull_secrets"),
            pod_patch: self.object("relay_pod_patch"),
        }
    }

    fn wrong(&mut self, field: &'static str, value: &Value, problem: impl Into<String>) {
        self.errors
            .push(FieldError::new(field, render(value), problem));
    }

    fn string(&mut self, field: &'static str) -> Option<String> {
        match self.map.remove(field)? {
            Value::Null => None,
            Value::String(text) => Some(text),
            other => {
                let problem = format!("is {}, not a string", json_kind(&other));
                self.wrong(field, &other, problem);
                None
            }
        }
    }

    /// A list of strings; one string is a list of one, missing or `null` is empty.
    fn strings(&mut self, field: &'static str) -> Vec<String> {
        let Some(value) = self.map.remove(field) else {
            return Vec::new();
        };
        match value {
            Value::Null => Vec::new(),
            Value::String(text) if text.trim().is_empty() => Vec::new(),
            Value::String(text) => vec![text],
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            other => {
                let problem = match &other {
                    Value::Array(_) => "is not a list of strings".to_owned(),
                    kind => format!("is {}, not a list of strings", json_kind(kind)),
                };
                self.wrong(field, &other, problem);
                Vec::new()
            }
        }
    }

    /// A JSON object, kept as it is; missing or `null` is unset.
    fn object(&mut self, field: &'static str) -> Option<Value> {
        match self.map.remove(field)? {
            Value::Null => None,
            object @ Value::Object(_) => Some(object),
            other => {
                let problem = format!("is {}, not an object", json_kind(&other));
                self.wrong(field, &other, problem);
                None
            }
        }
    }

    /// A port given as a number or a numeric string; an empty string is unset.
    fn port(&mut self, field: &'static str, problem: &str) -> Option<u16> {
        let value = self.map.remove(field)?;
        let port = match &value {
            Value::Null => return None,
            Value::String(text) if text.trim().is_empty() => return None,
            Value::String(text) => text.trim().parse::<u16>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
        };
        if port.is_none() {
            self.wrong(field, &value, problem);
        }
        port
    }

    /// An optional case-insensitive keyword; missing, `null` or empty is unset.
    fn setting<T: std::str::FromStr>(&mut self, field: &'static str, problem: &str) -> Option<T> {
        let value = self.map.remove(field)?;
        match &value {
            Value::Null => return None,
            Value::String(text) if text.trim().is_empty() => return None,
            Value::String(text) => {
                if let Ok(parsed) = text.trim().parse() {
                    return Some(parsed);
                }
            }
            _ => {}
        }
        self.wrong(field, &value, problem);
        None
    }

    /// A boolean, or `"true"`/`"false"` in any case; missing or `null` is unset.
    fn flag(&mut self, field: &'static str) -> Option<bool> {
        let value = self.map.remove(field)?;
        match &value {
            Value::Null => return None,
            Value::Bool(b) => return Some(*b),
            Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => return Some(true),
                "false" => return Some(false),
                _ => {}
            },
            _ => {}
        }
        self.wrong(field, &value, "is not a boolean (expected true or false)");
        None
    }

    /// A case-insensitive keyword; missing or `null` is the default.
    fn keyword<T: std::str::FromStr + Default>(&mut self, field: &'static str, problem: &str) -> T {
        let Some(value) = self.map.remove(field) else {
            return T::default();
        };
        match &value {
            Value::Null => return T::default(),
            Value::String(text) => {
                if let Ok(parsed) = text.parse() {
                    return parsed;
                }
            }
            _ => {}
        }
        self.wrong(field, &value, problem);
        T::default()
    }
}

/// A JSON value as shown in messages: strings without quotes, the rest as JSON.
pub(super) fn render(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// "a number", "an array", ... for messages.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_accept_numbers_and_numeric_strings() {
        for (json, want) in [
            ("8080", Some(8080)),
            ("\"8080\"", Some(8080)),
            ("\" 8080 \"", Some(8080)),
            ("0", Some(0)),
            ("65535", Some(65535)),
            ("null", None),
            ("\"\"", None),
        ] {
            let config: ForwardConfig =
                serde_json::from_str(&format!("{{\"local_port\": {json}}}"))
                    .unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(config.local_port, want, "{json}");
        }
        for json in ["65536", "-1", "80.5", "\"eighty\"", "true", "[80]"] {
            let err =
                serde_json::from_str::<ForwardConfig>(&format!("{{\"remote_port\": {json}}}"))
                    .expect_err(json)
                    .to_string();
            assert!(
                err.contains("field \"remote_port\"") && err.contains("is not a port (1-65535)"),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn missing_and_null_fields_take_defaults() {
        let config: ForwardConfig = serde_json::from_str(
            r#"{"namespace": null, "workload_type": null, "protocol": null, "context": null}"#,
        )
        .expect("nulls");
        assert_eq!(config, ForwardConfig::default());
        let config: ForwardConfig = serde_json::from_str("{}").expect("empty");
        assert_eq!(config, ForwardConfig::default());
    }

    #[test]
    fn deserialize_rejects_non_objects_and_wrong_types() {
        assert!(serde_json::from_str::<ForwardConfig>("[]").is_err());
        let err = serde_json::from_str::<ForwardConfig>(
            r#"{"namespace": 1, "alias": [], "workload_type": 3}"#,
        )
        .expect_err("types")
        .to_string();
        assert!(
            err.contains("field \"namespace\": value \"1\" is a number, not a string"),
            "{err}"
        );
        assert!(
            err.contains("field \"alias\": value \"[]\" is an array, not a string"),
            "{err}"
        );
        assert!(
            err.contains("field \"workload_type\": value \"3\" is not a workload type"),
            "{err}"
        );
    }
}
