//! Forward definitions as stored in config files, compatible with kftray's JSON export.
//!
//! A config file is a JSON array of [`ForwardConfig`] objects (a single object is accepted
//! too). Field names follow kftray, so its exports load unchanged; fields this crate does not
//! know are kept in [`ForwardConfig::extra`] and written back. [`load_configs`] reports every
//! bad entry at once, each with its index, alias and field.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::proxy_protocol::{Accept, Version};
use crate::spec::name::{check_dns1123_label, check_dns1123_subdomain, check_host};
use crate::spec::{
    DEFAULT_ADDRESS, ForwardSpec, LabelSelector, Protocol, SpecError, Target, WorkloadType,
    parse_addresses,
};

/// The namespace of an entry that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The known fields, in the order errors are reported and fields are written.
const FIELDS: [&str; 14] = [
    "service",
    "namespace",
    "local_port",
    "remote_port",
    "context",
    "workload_type",
    "protocol",
    "remote_address",
    "local_address",
    "alias",
    "kubeconfig",
    "target",
    "proxy_protocol",
    "accept_proxy_protocol",
];

const LOCAL_PORT_PROBLEM: &str = "is not a port (0-65535, where 0 picks a free port)";
const REMOTE_PORT_PROBLEM: &str = "is not a port (1-65535)";

/// One forward as written in a config file, with kftray's field names.
///
/// Reading is lenient where kftray files vary: `null` is the same as a missing field, ports
/// may be JSON numbers or numeric strings, `protocol` and `workload_type` are
/// case-insensitive, and unknown fields (`id`, `domain_enabled`, `http_logs_enabled`, ...)
/// are kept in [`extra`](Self::extra). Deserializing fails only on a wrong JSON type or an
/// unknown protocol, workload type or PROXY protocol setting; call
/// [`validate`](Self::validate) for the rest, or use
/// [`load_configs`], which does both. Writing leaves out unset optional fields.
///
/// # Example
///
/// ```
/// use kforward_core::config::ForwardConfig;
/// use kforward_core::spec::{Protocol, WorkloadType};
///
/// let config: ForwardConfig = serde_json::from_str(r#"{
///     "id": 7, "service": "web", "namespace": "shop", "local_port": "8080",
///     "remote_port": 80, "protocol": "TCP", "workload_type": null, "alias": null
/// }"#)?;
/// assert_eq!(config.local_port, Some(8080));
/// assert_eq!(config.protocol, Protocol::Tcp);
/// assert_eq!(config.workload_type, WorkloadType::Service);
/// assert_eq!(config.extra["id"], 7);
/// assert!(config.validate().is_ok());
/// assert_eq!(config.label(), "svc/web:80");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardConfig {
    /// The service name; for `workload_type: "pod"`, the pod name (unless `target` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The namespace; `"default"` when missing.
    pub namespace: String,
    /// The local port; missing means the same as `remote_port`, 0 picks a free port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// The port on the target (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// The kubeconfig context; missing means the current context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// What `service`, `target` and `remote_address` name.
    pub workload_type: WorkloadType,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// For `workload_type: "proxy"`, the host reached from inside the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// The local address to listen on (an IP or `localhost`); missing means `127.0.0.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// A display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The kubeconfig file; missing, empty or `"default"` means the default lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// For `workload_type: "pod"`, a label selector choosing the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The PROXY protocol header (`"v1"` or `"v2"`) to send toward the target, so that it
    /// sees the local client's address (TCP only); missing means none.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_text")]
    pub proxy_protocol: Option<Version>,
    /// Whether local clients send a PROXY protocol header first: `"strict"` (they must) or
    /// `"optional"` (TCP only); missing means they do not.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_text")]
    pub accept_proxy_protocol: Option<Accept>,
    /// Fields this crate does not use, kept so that a file round-trips. Keys here must not
    /// repeat a known field's name, or the written object would have it twice.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for ForwardConfig {
    /// An entry with every optional field unset, namespace `default`, service workload, TCP.
    fn default() -> Self {
        ForwardConfig {
            service: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            local_port: None,
            remote_port: None,
            context: None,
            workload_type: WorkloadType::default(),
            protocol: Protocol::default(),
            remote_address: None,
            local_address: None,
            alias: None,
            kubeconfig: None,
            target: None,
            proxy_protocol: None,
            accept_proxy_protocol: None,
            extra: BTreeMap::new(),
        }
    }
}

/// Writes a setting as its text (`"v1"`, `"strict"`).
fn as_text<T: fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

/// What [`ForwardConfig::check`] proves about a valid entry.
pub(crate) struct Checked {
    /// The resolved target.
    pub(crate) target: Target,
    /// The remote port, 1 to 65535.
    pub(crate) remote_port: u16,
    /// The local addresses.
    pub(crate) addresses: Vec<IpAddr>,
}

impl ForwardConfig {
    /// Checks the entry against the rules of its workload type, collecting every problem.
    ///
    /// - `namespace` must be a DNS-1123 label;
    /// - `service` workloads need `service` (a DNS-1123 label); `pod` workloads need a label
    ///   selector in `target` or a pod name (a DNS-1123 subdomain) in `service`; `proxy`
    ///   workloads need `remote_address` (a host name or IP, without scheme or port);
    /// - every workload needs `remote_port` (1-65535);
    /// - `local_address`, if set, is an IP address or `localhost` (or a comma list of them).
    ///
    /// Empty strings count as unset. UDP is allowed with every workload type.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] with one [`FieldError`] per problem, in field order.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::ForwardConfig;
    ///
    /// let config = ForwardConfig { service: Some("web".into()), remote_port: Some(0), ..Default::default() };
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.to_string(), r#"field "remote_port": value "0" is not a port (1-65535)"#);
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map(|_| ())
    }

    /// Like [`validate`](Self::validate), and returns what the checks resolved.
    pub(crate) fn check(&self) -> Result<Checked, ConfigError> {
        let mut errors = Vec::new();
        if let Err(p) = check_dns1123_label(&self.namespace) {
            errors.push(FieldError::new(
                "namespace",
                &self.namespace,
                format!("is not a valid namespace name: it {p}"),
            ));
        }
        let target = self.check_target(&mut errors);
        let workload = self.workload_type;
        let remote_port = match self.remote_port {
            None => {
                errors.push(FieldError::missing(
                    "remote_port",
                    format!("workload_type \"{workload}\" needs the port on the target"),
                ));
                None
            }
            Some(0) => {
                errors.push(FieldError::new("remote_port", "0", REMOTE_PORT_PROBLEM));
                None
            }
            Some(port) => Some(port),
        };
        let addresses = match non_empty(self.local_address.as_deref()) {
            None => Some(vec![DEFAULT_ADDRESS]),
            Some(list) => match parse_addresses(list) {
                Ok(addresses) => Some(addresses),
                Err(e) => {
                    errors.push(FieldError::new("local_address", list, address_problem(e)));
                    None
                }
            },
        };
        if self.protocol == Protocol::Udp {
            for (field, set) in [
                ("proxy_protocol", self.proxy_protocol.map(|v| v.to_string())),
                (
                    "accept_proxy_protocol",
                    self.accept_proxy_protocol.map(|a| a.to_string()),
                ),
            ] {
                if let Some(value) = set {
                    errors.push(FieldError::new(
                        field,
                        value,
                        "works for TCP forwards only (a PROXY header starts a TCP stream), and this entry is UDP",
                    ));
                }
            }
        }
        match (target, remote_port, addresses) {
            (Some(target), Some(remote_port), Some(addresses)) if errors.is_empty() => {
                Ok(Checked {
                    target,
                    remote_port,
                    addresses,
                })
            }
            _ => Err(ConfigError::new(errors)),
        }
    }

    /// The target named by `workload_type` and its fields, or `None` after pushing errors.
    fn check_target(&self, errors: &mut Vec<FieldError>) -> Option<Target> {
        let mut named =
            |field: &'static str, name: &str, what: &str, check: fn(&str) -> Result<(), String>| {
                match check(name) {
                    Ok(()) => Some(name.to_owned()),
                    Err(p) => {
                        errors.push(FieldError::new(
                            field,
                            name,
                            format!("is not a valid {what}: it {p}"),
                        ));
                        None
                    }
                }
            };
        match self.workload_type {
            WorkloadType::Service => match non_empty(self.service.as_deref()) {
                Some(name) => named("service", name, "service name", check_dns1123_label)
                    .map(|name| Target::Service { name }),
                None => {
                    errors.push(FieldError::missing(
                        "service",
                        "workload_type \"service\" needs the service name",
                    ));
                    None
                }
            },
            WorkloadType::Pod => {
                if let Some(selector) = non_empty(self.target.as_deref()) {
                    match LabelSelector::parse(selector) {
                        Ok(selector) => Some(Target::PodSelector { selector }),
                        Err(e) => {
                            let problem = match e {
                                SpecError::InvalidSelector { problem, .. } => problem,
                                other => other.to_string(),
                            };
                            errors.push(FieldError::new(
                                "target",
                                selector,
                                format!("is not a valid label selector: {problem}"),
                            ));
                            None
                        }
                    }
                } else if let Some(name) = non_empty(self.service.as_deref()) {
                    named("service", name, "pod name", check_dns1123_subdomain)
                        .map(|name| Target::Pod { name })
                } else {
                    errors.push(FieldError::missing(
                        "service",
                        "workload_type \"pod\" needs a pod name in \"service\" or a label selector in \"target\"",
                    ));
                    None
                }
            }
            WorkloadType::Proxy => match non_empty(self.remote_address.as_deref()) {
                Some(host) => named("remote_address", host, "host", check_host)
                    .map(|host| Target::Remote { host }),
                None => {
                    errors.push(FieldError::missing(
                        "remote_address",
                        "workload_type \"proxy\" needs the host to reach from the cluster",
                    ));
                    None
                }
            },
        }
    }

    /// A short name for status lines: the alias if set, else the target and remote port,
    /// such as `svc/web:80`, `pod/web-0:8080`, `pod?app=web:8080` or `proxy/db:5432`,
    /// with `/udp` appended for UDP. Unset parts show as `?`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::ForwardConfig;
    /// use kforward_core::spec::{Protocol, WorkloadType};
    ///
    /// let mut config = ForwardConfig {
    ///     workload_type: WorkloadType::Proxy,
    ///     remote_address: Some("db.internal".into()),
    ///     remote_port: Some(5432),
    ///     ..Default::default()
    /// };
    /// assert_eq!(config.label(), "proxy/db.internal:5432");
    /// config.protocol = Protocol::Udp;
    /// assert_eq!(config.label(), "proxy/db.internal:5432/udp");
    /// config.alias = Some("db".into());
    /// assert_eq!(config.label(), "db");
    /// ```
    pub fn label(&self) -> String {
        if let Some(alias) = non_empty(self.alias.as_deref()) {
            return alias.to_owned();
        }
        let or_unknown =
            |field: &Option<String>| non_empty(field.as_deref()).unwrap_or("?").to_owned();
        let what = match self.workload_type {
            WorkloadType::Service => format!("svc/{}", or_unknown(&self.service)),
            WorkloadType::Pod => match non_empty(self.target.as_deref()) {
                Some(selector) => format!("pod?{selector}"),
                None => format!("pod/{}", or_unknown(&self.service)),
            },
            WorkloadType::Proxy => {
                let host = or_unknown(&self.remote_address);
                if host.contains(':') {
                    format!("proxy/[{host}]")
                } else {
                    format!("proxy/{host}")
                }
            }
        };
        let port = self
            .remote_port
            .map_or_else(|| "?".to_owned(), |p| p.to_string());
        match self.protocol {
            Protocol::Tcp => format!("{what}:{port}"),
            Protocol::Udp => format!("{what}:{port}/udp"),
        }
    }

    /// The [`ForwardSpec`] this entry describes; the same as `ForwardSpec::try_from(self)`.
    ///
    /// # Errors
    ///
    /// Every problem [`validate`](Self::validate) finds.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::ForwardConfig;
    ///
    /// let config = ForwardConfig { service: Some("web".into()), remote_port: Some(80), ..Default::default() };
    /// assert_eq!(config.to_spec()?.label(), "svc/web 80:80");
    /// # Ok::<(), kforward_core::config::ConfigError>(())
    /// ```
    pub fn to_spec(&self) -> Result<ForwardSpec, ConfigError> {
        ForwardSpec::try_from(self)
    }

    /// Reads the known fields out of a JSON object, leaving the rest in `extra`. Fields of
    /// the wrong type are reported and left at their defaults.
    fn read_fields(map: Map<String, Value>) -> (Self, Vec<FieldError>) {
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
                "is not a workload type (expected \"service\", \"pod\" or \"proxy\")",
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
            extra: BTreeMap::new(),
        };
        let FieldReader { map, errors } = fields;
        let extra = map.into_iter().collect();
        (ForwardConfig { extra, ..config }, errors)
    }

    /// Reads and validates one entry of a config file, reporting every problem: type errors
    /// first found while reading, then the rules of [`validate`](Self::validate) for the
    /// other fields. A bad `workload_type` stops there, since the rules depend on it.
    fn from_entry(map: Map<String, Value>) -> Result<Self, ConfigError> {
        let (config, mut errors) = ForwardConfig::read_fields(map);
        if errors.is_empty() {
            return config.validate().map(|()| config);
        }
        if !errors.iter().any(|e| e.field == "workload_type")
            && let Err(more) = config.validate()
        {
            let unread: Vec<&str> = errors.iter().map(|e| e.field).collect();
            errors.extend(
                more.errors
                    .into_iter()
                    .filter(|e| !unread.contains(&e.field)),
            );
        }
        Err(ConfigError::new(errors))
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
fn render(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// "a number", "an array", ... for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The problem phrase for a bad `local_address`.
fn address_problem(error: SpecError) -> String {
    match error {
        SpecError::InvalidAddress {
            list,
            item,
            problem,
        } => {
            if item.is_empty() || item == list.trim() {
                problem
            } else {
                format!("has item {item:?}, which {problem}")
            }
        }
        other => other.to_string(),
    }
}

/// The text of an optional field, if it is set and not blank (kftray saves empty inputs as
/// `""`).
pub(crate) fn non_empty(field: Option<&str>) -> Option<&str> {
    field.filter(|text| !text.trim().is_empty())
}

/// One problem with one field of a config entry.
///
/// Its message names the field and the value: `field "remote_port": value "0" is not a port
/// (1-65535)`. An empty value (a missing field) is left out: `field "service": is missing; ...`.
///
/// # Example
///
/// ```
/// use kforward_core::config::FieldError;
///
/// let err = FieldError::new("local_address", "nowhere", "is not an IP address or \"localhost\"");
/// assert_eq!(
///     err.to_string(),
///     r#"field "local_address": value "nowhere" is not an IP address or "localhost""#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// The field's name, as in the file.
    pub field: &'static str,
    /// The value as written (strings without quotes, other values as JSON); empty if missing.
    pub value: String,
    /// What is wrong, phrased to follow the value ("is not a port (1-65535)").
    pub problem: String,
}

impl FieldError {
    /// A problem with `value` in `field`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::FieldError;
    ///
    /// let err = FieldError::new("remote_port", "0", "is not a port (1-65535)");
    /// assert_eq!(err.field, "remote_port");
    /// ```
    pub fn new(field: &'static str, value: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            value: value.into(),
            problem: problem.into(),
        }
    }

    fn missing(field: &'static str, why: impl fmt::Display) -> Self {
        FieldError::new(field, "", format!("is missing; {why}"))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "field {:?}: {}", self.field, self.problem)
        } else {
            write!(
                f,
                "field {:?}: value {:?} {}",
                self.field, self.value, self.problem
            )
        }
    }
}

/// Every problem with one config entry; the message joins them with `; `.
///
/// # Example
///
/// ```
/// use kforward_core::config::ForwardConfig;
/// use kforward_core::spec::WorkloadType;
///
/// let config = ForwardConfig { workload_type: WorkloadType::Proxy, ..Default::default() };
/// let err = config.validate().unwrap_err();
/// let fields: Vec<_> = err.errors.iter().map(|e| e.field).collect();
/// assert_eq!(fields, ["remote_port", "remote_address"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in field order; never empty when returned by this crate.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// Collects problems, ordering them by field as written in a kftray file.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::{ConfigError, FieldError};
    ///
    /// let err = ConfigError::new(vec![
    ///     FieldError::new("remote_port", "0", "is not a port (1-65535)"),
    ///     FieldError::new("service", "Web", "is not a valid service name"),
    /// ]);
    /// assert_eq!(err.errors[0].field, "service");
    /// ```
    pub fn new(mut errors: Vec<FieldError>) -> Self {
        let rank = |field: &str| {
            FIELDS
                .iter()
                .position(|f| *f == field)
                .unwrap_or(FIELDS.len())
        };
        errors.sort_by_key(|e| rank(e.field));
        ConfigError { errors }
    }
}

impl From<FieldError> for ConfigError {
    fn from(error: FieldError) -> Self {
        ConfigError {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// What is wrong with one entry of a config file.
///
/// # Example
///
/// ```
/// use kforward_core::config::EntryProblem;
///
/// let problem = EntryProblem::NotAnObject { found: "a number" };
/// assert!(matches!(problem, EntryProblem::NotAnObject { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// The entry is not a JSON object.
    NotAnObject {
        /// What it is instead ("a number", "an array", ...).
        found: &'static str,
    },
    /// One or more fields are wrong.
    Fields(ConfigError),
}

/// A bad entry of a config file: where it is, its alias, and what is wrong.
///
/// Its message has one line per problem, each starting with the entry:
/// `entry 2 (alias "db"): field "remote_port": value "0" is not a port (1-65535)`.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigError, EntryError, EntryProblem, FieldError};
///
/// let err = EntryError {
///     index: 2,
///     alias: Some("db".into()),
///     problem: EntryProblem::Fields(FieldError::new("remote_port", "0", "is not a port (1-65535)").into()),
/// };
/// assert_eq!(
///     err.to_string(),
///     r#"entry 2 (alias "db"): field "remote_port": value "0" is not a port (1-65535)"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct EntryError {
    /// The entry's position in the file's array, from 0.
    pub index: usize,
    /// The entry's `alias`, if it has a non-empty string one.
    pub alias: Option<String>,
    /// What is wrong.
    pub problem: EntryProblem,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entry = format!("entry {}", self.index);
        if let Some(alias) = &self.alias {
            write!(entry, " (alias {alias:?})")?;
        }
        match &self.problem {
            EntryProblem::NotAnObject { found } => {
                write!(f, "{entry}: is {found}, not a JSON object")
            }
            EntryProblem::Fields(config) => {
                for (i, error) in config.errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{entry}: {error}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a config file could not be loaded.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigFileError, load_configs};
///
/// let err = load_configs("[{\"service\": \"web\",]").unwrap_err();
/// assert!(matches!(err, ConfigFileError::Syntax { line: 1, column: 20, .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {:?}", path.display().to_string())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("{}invalid JSON at line {line}, column {column}: {message}", prefix(path.as_deref()))]
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1 (0 at the end of the text).
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The JSON is neither an array of entries nor a single entry object.
    #[error("{}expected a JSON array of forwards (or one forward object), found {found}", prefix(path.as_deref()))]
    NotAList {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// What the JSON is instead.
        found: &'static str,
    },
    /// Some entries are invalid; all of them are listed.
    #[error("{}{}", prefix(path.as_deref()), entries_message(*total, entries))]
    InvalidEntries {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// How many entries the file has.
        total: usize,
        /// Every bad entry, in file order.
        entries: Vec<EntryError>,
    },
}

fn prefix(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {:?}: ", path.display().to_string()),
        None => "config: ".to_owned(),
    }
}

fn entries_message(total: usize, entries: &[EntryError]) -> String {
    let verb = if entries.len() == 1 { "is" } else { "are" };
    let noun = if total == 1 { "entry" } else { "entries" };
    let mut message = format!("{} of {total} {noun} {verb} invalid:", entries.len());
    for entry in entries {
        for line in entry.to_string().lines() {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    message
}

/// Parses a config file's text: a JSON array of forward objects, or one object.
///
/// Each entry is read and validated on its own, so every bad entry is reported at once,
/// with its index, alias and fields. A leading byte order mark is ignored.
///
/// # Errors
///
/// [`ConfigFileError::Syntax`] with the line and column of a JSON syntax error,
/// [`ConfigFileError::NotAList`] for other top-level JSON, and
/// [`ConfigFileError::InvalidEntries`] listing every bad entry.
///
/// # Example
///
/// ```
/// use kforward_core::config::load_configs;
///
/// let configs = load_configs(r#"[
///     {"alias": "web", "service": "web", "namespace": "shop", "remote_port": 80, "local_port": 8080},
///     {"workload_type": "proxy", "remote_address": "db.internal", "remote_port": 5432}
/// ]"#)?;
/// assert_eq!(configs.len(), 2);
///
/// let err = load_configs(r#"[{"alias": "db", "service": "pg", "remote_port": 0}, {"service": "web"}]"#)
///     .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "config: 2 of 2 entries are invalid:\n  \
///      entry 0 (alias \"db\"): field \"remote_port\": value \"0\" is not a port (1-65535)\n  \
///      entry 1: field \"remote_port\": is missing; workload_type \"service\" needs the port on the target"
/// );
/// # Ok::<(), kforward_core::config::ConfigFileError>(())
/// ```
pub fn load_configs(json: &str) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    load(json, None, &EntryDefaults::default())
}

/// Reads and parses a config file, as [`load_configs`] does; errors name the file.
///
/// The file is read synchronously; config files are small.
///
/// # Errors
///
/// [`ConfigFileError::Read`] naming the path if it cannot be read (the I/O error is its
/// `source`), and every error of [`load_configs`], with the path.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigFileError, load_config_file};
///
/// let path = std::env::temp_dir().join(format!("kforward-doc-{}.json", std::process::id()));
/// std::fs::write(&path, r#"[{"service": "web", "remote_port": 80}]"#)?;
/// assert_eq!(load_config_file(&path)?.len(), 1);
/// std::fs::remove_file(&path)?;
///
/// let err = load_config_file(&path).unwrap_err();
/// assert!(matches!(err, ConfigFileError::Read { .. }));
/// assert!(err.to_string().contains(&path.display().to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_config_file(path: impl AsRef<Path>) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    load_config_file_with(path, &EntryDefaults::default())
}

/// Values for the entries of a config file that leave them unset (`kforward run`'s
/// `-n`, `--context` and `--kubeconfig`). A missing or `null` field is unset; so are an
/// empty `context` and an empty or `"default"` `kubeconfig`, as kftray writes them.
///
/// # Example
///
/// ```
/// use kforward_core::config::{EntryDefaults, load_config_file_with};
///
/// let path = std::env::temp_dir().join(format!("kforward-defaults-{}.json", std::process::id()));
/// std::fs::write(&path, r#"[{"service": "web", "remote_port": 80},
///                           {"service": "db", "namespace": "data", "remote_port": 5432}]"#)?;
/// let defaults = EntryDefaults { namespace: Some("shop".into()), ..Default::default() };
/// let configs = load_config_file_with(&path, &defaults)?;
/// assert_eq!(configs[0].namespace, "shop");
/// assert_eq!(configs[1].namespace, "data");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryDefaults {
    /// For entries without `namespace`.
    pub namespace: Option<String>,
    /// For entries without `context`.
    pub context: Option<String>,
    /// For entries without `kubeconfig`.
    pub kubeconfig: Option<String>,
}

impl EntryDefaults {
    /// Sets the unset fields of one entry.
    fn apply(&self, map: &mut Map<String, Value>) {
        let fields = [
            ("namespace", &self.namespace),
            ("context", &self.context),
            ("kubeconfig", &self.kubeconfig),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let unset = match map.get(field) {
                None | Some(Value::Null) => true,
                Some(Value::String(text)) => match field {
                    "context" => text.trim().is_empty(),
                    "kubeconfig" => text.trim().is_empty() || text == "default",
                    _ => false,
                },
                Some(_) => false,
            };
            if unset {
                map.insert(field.to_owned(), Value::String(value.clone()));
            }
        }
    }
}

/// Reads and parses a config file as [`load_config_file`] does, filling what entries
/// leave unset from `defaults` first.
///
/// # Errors
///
/// As [`load_config_file`].
pub fn load_config_file_with(
    path: impl AsRef<Path>,
    defaults: &EntryDefaults,
) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    load(&text, Some(path), defaults)
}

fn load(
    json: &str,
    path: Option<&Path>,
    defaults: &EntryDefaults,
) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    let path_buf = || path.map(Path::to_path_buf);
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    let document: Value = serde_json::from_str(json).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let message = full
            .strip_suffix(&format!(" at line {line} column {column}"))
            .unwrap_or(&full)
            .to_owned();
        ConfigFileError::Syntax {
            path: path_buf(),
            line,
            column,
            message,
        }
    })?;
    let items = match document {
        Value::Array(items) => items,
        Value::Object(map) => vec![Value::Object(map)],
        other => {
            return Err(ConfigFileError::NotAList {
                path: path_buf(),
                found: json_kind(&other),
            });
        }
    };
    let total = items.len();
    let mut configs = Vec::with_capacity(total);
    let mut entries = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut map) = item else {
            entries.push(EntryError {
                index,
                alias: None,
                problem: EntryProblem::NotAnObject {
                    found: json_kind(&item),
                },
            });
            continue;
        };
        let alias = map
            .get("alias")
            .and_then(Value::as_str)
            .filter(|alias| !alias.trim().is_empty())
            .map(str::to_owned);
        defaults.apply(&mut map);
        match ForwardConfig::from_entry(map) {
            Ok(config) => configs.push(config),
            Err(errors) => entries.push(EntryError {
                index,
                alias,
                problem: EntryProblem::Fields(errors),
            }),
        }
    }
    if entries.is_empty() {
        Ok(configs)
    } else {
        Err(ConfigFileError::InvalidEntries {
            path: path_buf(),
            total,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kftray export as its UI writes it: ids, nulls, empty strings, extra settings.
    const KFTRAY_EXPORT: &str = r#"[
  {
    "id": 1,
    "service": "argocd-server",
    "namespace": "argocd",
    "local_port": 8443,
    "remote_port": 443,
    "context": "kind-kftray",
    "workload_type": "service",
    "protocol": "tcp",
    "remote_address": "",
    "local_address": "127.0.0.1",
    "auto_loopback_address": false,
    "alias": "argocd",
    "domain_enabled": false,
    "kubeconfig": "default",
    "target": "",
    "http_logs_enabled": false,
    "http_logs_max_file_size": 10485760,
    "http_logs_retention_days": 7
  },
  {
    "id": 2,
    "service": null,
    "namespace": "default",
    "local_port": 5432,
    "remote_port": 5432,
    "context": "kind-kftray",
    "workload_type": "proxy",
    "protocol": "TCP",
    "remote_address": "postgres.prod.internal",
    "local_address": null,
    "auto_loopback_address": true,
    "alias": "pg",
    "domain_enabled": true,
    "kubeconfig": null,
    "target": null,
    "http_logs_enabled": null
  },
  {
    "id": 3,
    "service": "nginx-7d9c-abcde",
    "namespace": "web",
    "local_port": "8080",
    "remote_port": "80",
    "context": "kind-kftray",
    "workload_type": "pod",
    "protocol": "tcp",
    "alias": null,
    "target": "app.kubernetes.io/name=nginx,tier in (frontend)"
  },
  {
    "service": "kube-dns",
    "namespace": "kube-system",
    "local_port": 5353,
    "remote_port": 53,
    "context": "kind-kftray",
    "workload_type": null,
    "protocol": "udp",
    "alias": "dns",
    "kubeconfig": "/home/dev/.kube/kind"
  },
  {
    "service": "redis-0",
    "namespace": "cache",
    "local_port": 0,
    "remote_port": 6379,
    "workload_type": "Pod",
    "protocol": "tcp",
    "local_address": "127.0.0.2"
  }
]"#;

    fn entry_errors(err: ConfigFileError) -> Vec<EntryError> {
        match err {
            ConfigFileError::InvalidEntries { entries, .. } => entries,
            other => panic!("expected InvalidEntries, got {other}"),
        }
    }

    fn problems(json: &str) -> Vec<FieldError> {
        let config: ForwardConfig =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        config.validate().expect_err("invalid").errors
    }

    fn fields(errors: &[FieldError]) -> Vec<&'static str> {
        errors.iter().map(|e| e.field).collect()
    }

    #[test]
    fn kftray_export_loads_unchanged() {
        let configs = load_configs(KFTRAY_EXPORT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs.len(), 5);

        let argocd = &configs[0];
        assert_eq!(argocd.service.as_deref(), Some("argocd-server"));
        assert_eq!(argocd.namespace, "argocd");
        assert_eq!(
            (argocd.local_port, argocd.remote_port),
            (Some(8443), Some(443))
        );
        assert_eq!(argocd.workload_type, WorkloadType::Service);
        assert_eq!(argocd.remote_address.as_deref(), Some(""));
        assert_eq!(argocd.extra["id"], 1);
        assert_eq!(argocd.extra["http_logs_max_file_size"], 10_485_760);
        assert_eq!(argocd.extra["domain_enabled"], false);
        assert_eq!(argocd.extra.len(), 6);

        let pg = &configs[1];
        assert_eq!(pg.workload_type, WorkloadType::Proxy);
        assert_eq!(pg.protocol, Protocol::Tcp);
        assert_eq!(pg.service, None);
        assert_eq!(pg.extra["http_logs_enabled"], Value::Null);
        assert_eq!(pg.extra["auto_loopback_address"], true);

        let nginx = &configs[2];
        assert_eq!(
            (nginx.local_port, nginx.remote_port),
            (Some(8080), Some(80))
        );

        let dns = &configs[3];
        assert_eq!(dns.workload_type, WorkloadType::Service);
        assert_eq!(dns.protocol, Protocol::Udp);
        assert!(dns.extra.is_empty());

        assert_eq!(configs[4].workload_type, WorkloadType::Pod);

        let labels: Vec<String> = configs.iter().map(ForwardConfig::label).collect();
        assert_eq!(
            labels,
            [
                "argocd",
                "pg",
                "pod?app.kubernetes.io/name=nginx,tier in (frontend):80",
                "dns",
                "pod/redis-0:6379"
            ]
        );
    }

    #[test]
    fn kftray_export_converts_to_specs() {
        let configs = load_configs(KFTRAY_EXPORT).unwrap_or_else(|e| panic!("{e}"));
        let specs: Vec<ForwardSpec> = configs
            .iter()
            .map(|c| c.to_spec().unwrap_or_else(|e| panic!("{}: {e}", c.label())))
            .collect();
        let summary: Vec<String> = specs
            .iter()
            .map(|s| format!("{} {} {:?}", s.target, s.ports[0], s.addresses))
            .collect();
        assert_eq!(
            summary,
            [
                "svc/argocd-server 8443:443 [127.0.0.1]",
                "proxy/postgres.prod.internal 5432:5432 [127.0.0.1]",
                "pod?app.kubernetes.io/name=nginx,tier in (frontend) 8080:80 [127.0.0.1]",
                "svc/kube-dns 5353:53 [127.0.0.1]",
                "pod/redis-0 0:6379 [127.0.0.2]",
            ]
        );
        assert_eq!(specs[0].kubeconfig, None, "kftray's \"default\" kubeconfig");
        assert_eq!(
            specs[3].kubeconfig,
            Some(PathBuf::from("/home/dev/.kube/kind"))
        );
        assert_eq!(specs[0].context.as_deref(), Some("kind-kftray"));
        assert_eq!(specs[4].context, None);
    }

    #[test]
    fn export_round_trips_with_extra_fields() {
        let configs = load_configs(KFTRAY_EXPORT).unwrap_or_else(|e| panic!("{e}"));
        let written = serde_json::to_string_pretty(&configs).expect("serialize");
        assert_eq!(
            load_configs(&written).unwrap_or_else(|e| panic!("{e}")),
            configs
        );

        let value: Value = serde_json::from_str(&written).expect("json");
        let first = &value[0];
        assert_eq!(first["id"], 1);
        assert_eq!(first["http_logs_retention_days"], 7);
        assert_eq!(first["protocol"], "tcp");
        assert_eq!(first["workload_type"], "service");
        assert_eq!(value[1]["protocol"], "tcp", "written in lowercase");
        assert_eq!(
            value[2]["local_port"], 8080,
            "numeric strings are written as numbers"
        );
        assert!(
            value[1].get("service").is_none(),
            "unset fields are left out"
        );
        assert_eq!(
            value[1]["http_logs_enabled"],
            Value::Null,
            "unknown nulls are kept"
        );
    }

    #[test]
    fn three_bad_entries_are_all_reported() {
        let json = r#"[
            {"alias": "ok", "service": "web", "remote_port": 80},
            {"alias": "api", "service": "API", "remote_port": 8080},
            {"service": "web", "namespace": "shop", "local_port": 70000, "remote_port": 80},
            {"alias": "db", "workload_type": "proxy", "remote_address": "postgres://db", "remote_port": 0},
            {"alias": "fine", "workload_type": "proxy", "remote_address": "10.0.0.5", "remote_port": 22}
        ]"#;
        let err = load_configs(json).expect_err("three bad entries");
        assert_eq!(
            err.to_string(),
            "config: 3 of 5 entries are invalid:\n  \
             entry 1 (alias \"api\"): field \"service\": value \"API\" is not a valid service name: it contains 'A' (names are lowercase); use lowercase letters, digits and '-'\n  \
             entry 2: field \"local_port\": value \"70000\" is not a port (0-65535, where 0 picks a free port)\n  \
             entry 3 (alias \"db\"): field \"remote_port\": value \"0\" is not a port (1-65535)\n  \
             entry 3 (alias \"db\"): field \"remote_address\": value \"postgres://db\" is not a valid host: it has a URL scheme; give only the host name or IP address (e.g. \"db.example.com\")"
        );
        let entries = entry_errors(err);
        let summary: Vec<(usize, Option<&str>, Vec<&str>)> = entries
            .iter()
            .map(|e| match &e.problem {
                EntryProblem::Fields(c) => (e.index, e.alias.as_deref(), fields(&c.errors)),
                EntryProblem::NotAnObject { .. } => panic!("not an object"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, Some("api"), vec!["service"]),
                (2, None, vec!["local_port"]),
                (3, Some("db"), vec!["remote_port", "remote_address"]),
            ]
        );
    }

    #[test]
    fn type_errors_and_rule_errors_of_one_entry_are_combined() {
        let err = load_configs(
            r#"[{"alias": "x", "service": 5, "namespace": "Shop", "remote_port": "http", "protocol": "sctp", "local_address": "lan"}]"#,
        )
        .expect_err("bad");
        let entries = entry_errors(err);
        let EntryProblem::Fields(config) = &entries[0].problem else {
            panic!("expected field errors");
        };
        assert_eq!(
            fields(&config.errors),
            [
                "service",
                "namespace",
                "remote_port",
                "protocol",
                "local_address"
            ]
        );
        assert_eq!(
            config.errors[0].to_string(),
            "field \"service\": value \"5\" is a number, not a string"
        );
        assert_eq!(
            config.errors[2].to_string(),
            "field \"remote_port\": value \"http\" is not a port (1-65535)"
        );
        assert_eq!(
            config.errors[3].to_string(),
            "field \"protocol\": value \"sctp\" is not a protocol (expected \"tcp\" or \"udp\")"
        );
    }

    #[test]
    fn bad_workload_type_skips_the_rules_that_depend_on_it() {
        let entries = entry_errors(
            load_configs(r#"{"workload_type": "job", "remote_port": 0}"#).expect_err("bad"),
        );
        let EntryProblem::Fields(config) = &entries[0].problem else {
            panic!("expected field errors");
        };
        assert_eq!(fields(&config.errors), ["workload_type"]);
        assert!(
            config.errors[0]
                .problem
                .contains("\"service\", \"pod\" or \"proxy\"")
        );
    }

    #[test]
    fn non_object_entries_are_reported() {
        let entries = entry_errors(
            load_configs(r#"[42, {"service": "web", "remote_port": 80}, []]"#).expect_err("bad"),
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].to_string(),
            "entry 0: is a number, not a JSON object"
        );
        assert_eq!(entries[1].index, 2);
        assert_eq!(
            entries[1].problem,
            EntryProblem::NotAnObject { found: "an array" }
        );
    }

    #[test]
    fn syntax_errors_report_line_and_column() {
        let err = load_configs("[\n  {\"service\": \"web\"\n  \"remote_port\": 80}\n]")
            .expect_err("syntax");
        let ConfigFileError::Syntax {
            line,
            column,
            message,
            path,
        } = &err
        else {
            panic!("expected Syntax, got {err}");
        };
        assert_eq!((*line, *column), (3, 3));
        assert_eq!(message, "expected `,` or `}`");
        assert_eq!(path, &None);
        assert_eq!(
            err.to_string(),
            "config: invalid JSON at line 3, column 3: expected `,` or `}`"
        );
        assert!(matches!(
            load_configs(""),
            Err(ConfigFileError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn top_level_must_be_array_or_object() {
        let err = load_configs("\"svc/web\"").expect_err("string");
        assert!(matches!(
            err,
            ConfigFileError::NotAList {
                found: "a string",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "config: expected a JSON array of forwards (or one forward object), found a string"
        );
        assert_eq!(load_configs("[]").map(|c| c.len()).ok(), Some(0));
    }

    #[test]
    fn single_object_and_byte_order_mark_are_accepted() {
        let configs = load_configs("\u{feff}{\"service\": \"web\", \"remote_port\": 80}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].namespace, "default");
        let err = load_configs(r#"{"alias": "solo", "service": "web"}"#).expect_err("no port");
        assert!(err.to_string().starts_with("config: 1 of 1 entry is invalid:\n  entry 0 (alias \"solo\"): field \"remote_port\": is missing"), "{err}");
    }

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

    #[test]
    fn service_workload_rules() {
        let errors = problems(r#"{"remote_port": 80}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"service\": is missing; workload_type \"service\" needs the service name"
        );
        let errors = problems(r#"{"service": "  ", "remote_port": 80}"#);
        assert_eq!(fields(&errors), ["service"], "blank counts as missing");
        let errors = problems(r#"{"service": "web.shop", "remote_port": 80}"#);
        assert!(
            errors[0].problem.contains("'.'"),
            "services are labels: {}",
            errors[0]
        );
        let errors = problems(&format!(
            r#"{{"service": "{}", "remote_port": 80}}"#,
            "a".repeat(64)
        ));
        assert!(errors[0].problem.contains("64 characters"), "{}", errors[0]);
        let errors = problems(r#"{"service": "web"}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"remote_port\": is missing; workload_type \"service\" needs the port on the target"
        );
    }

    #[test]
    fn pod_workload_rules() {
        let ok = |json: &str| {
            let config: ForwardConfig = serde_json::from_str(json).expect("json");
            config.validate().unwrap_or_else(|e| panic!("{json}: {e}"));
        };
        ok(r#"{"workload_type": "pod", "service": "web-0.web", "remote_port": 80}"#);
        ok(r#"{"workload_type": "pod", "target": "app=web", "remote_port": 80}"#);
        ok(
            r#"{"workload_type": "pod", "service": "Ignored Name", "target": "app=web", "remote_port": 80}"#,
        );
        let errors = problems(r#"{"workload_type": "pod", "remote_port": 80}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"service\": is missing; workload_type \"pod\" needs a pod name in \"service\" or a label selector in \"target\""
        );
        let errors =
            problems(r#"{"workload_type": "pod", "target": "app in web", "remote_port": 80}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"target\": value \"app in web\" is not a valid label selector: expected '(' after \"in\", found \"web\""
        );
        let errors = problems(r#"{"workload_type": "pod", "service": "Web_0", "remote_port": 80}"#);
        assert!(
            errors[0].problem.starts_with("is not a valid pod name"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn proxy_workload_rules() {
        let errors =
            problems(r#"{"workload_type": "proxy", "service": "ignored", "remote_port": 5432}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"remote_address\": is missing; workload_type \"proxy\" needs the host to reach from the cluster"
        );
        for (host, needle) in [
            ("db:5432", "HOST:PORT"),
            ("db host", "whitespace"),
            ("https://db", "scheme"),
        ] {
            let errors = problems(&format!(
                r#"{{"workload_type": "proxy", "remote_address": "{host}", "remote_port": 1}}"#
            ));
            assert_eq!(fields(&errors), ["remote_address"]);
            assert!(errors[0].problem.contains(needle), "{host}: {}", errors[0]);
        }
        let udp: ForwardConfig = serde_json::from_str(
            r#"{"workload_type": "proxy", "protocol": "udp", "remote_address": "10.96.0.10", "remote_port": 53}"#,
        )
        .expect("json");
        assert_eq!(udp.validate(), Ok(()));
    }

    #[test]
    fn namespace_and_local_address_rules() {
        let errors = problems(r#"{"service": "web", "namespace": "", "remote_port": 80}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"namespace\": is not a valid namespace name: it is empty"
        );
        let errors = problems(r#"{"service": "web", "namespace": "Team_A", "remote_port": 80}"#);
        assert!(errors[0].to_string().starts_with(
            "field \"namespace\": value \"Team_A\" is not a valid namespace name: it contains 'T'"
        ));
        let errors =
            problems(r#"{"service": "web", "remote_port": 80, "local_address": "my-laptop"}"#);
        assert_eq!(
            errors[0].to_string(),
            "field \"local_address\": value \"my-laptop\" is not an IP address or \"localhost\""
        );
        let errors =
            problems(r#"{"service": "web", "remote_port": 80, "local_address": "127.0.0.1,lan"}"#);
        assert_eq!(
            errors[0].problem,
            "has item \"lan\", which is not an IP address or \"localhost\""
        );
        for address in [
            "localhost",
            "::1",
            "127.0.0.5",
            "0.0.0.0",
            "",
            "127.0.0.1,::1",
        ] {
            let config = ForwardConfig {
                service: Some("web".into()),
                remote_port: Some(80),
                local_address: Some(address.into()),
                ..ForwardConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{address}");
        }
    }

    #[test]
    fn every_problem_of_an_entry_is_collected_in_field_order() {
        let errors = problems(
            r#"{"local_address": "x", "remote_port": 0, "namespace": "-", "service": "-"}"#,
        );
        assert_eq!(
            fields(&errors),
            ["service", "namespace", "remote_port", "local_address"]
        );
        let err = ConfigError::new(errors);
        assert_eq!(err.to_string().matches("; field ").count(), 3);
    }

    #[test]
    fn labels_show_what_is_forwarded() {
        let config = |json: &str| -> ForwardConfig { serde_json::from_str(json).expect("json") };
        for (json, label) in [
            (r#"{"service": "web", "remote_port": 80}"#, "svc/web:80"),
            (
                r#"{"service": "web", "remote_port": 80, "alias": " "}"#,
                "svc/web:80",
            ),
            (
                r#"{"service": "web", "remote_port": 80, "alias": "shop"}"#,
                "shop",
            ),
            (
                r#"{"workload_type": "pod", "service": "web-0", "remote_port": 8080}"#,
                "pod/web-0:8080",
            ),
            (
                r#"{"workload_type": "pod", "target": "app=web", "remote_port": 8080}"#,
                "pod?app=web:8080",
            ),
            (
                r#"{"workload_type": "proxy", "remote_address": "fd00::1", "remote_port": 53, "protocol": "udp"}"#,
                "proxy/[fd00::1]:53/udp",
            ),
            (r#"{}"#, "svc/?:?"),
        ] {
            assert_eq!(config(json).label(), label, "{json}");
        }
    }

    #[test]
    fn config_files_are_read_and_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("kforward-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.json");
        std::fs::write(&good, KFTRAY_EXPORT).expect("write");
        assert_eq!(load_config_file(&good).map(|c| c.len()).ok(), Some(5));

        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"[{"alias": "db", "service": "db"}]"#).expect("write");
        let text = load_config_file(&bad).expect_err("bad").to_string();
        assert!(
            text.starts_with(&format!(
                "config file {:?}: 1 of 1 entry is invalid:",
                bad.display().to_string()
            )),
            "{text}"
        );

        let broken = dir.join("broken.json");
        std::fs::write(&broken, "[{]").expect("write");
        let err = load_config_file(&broken).expect_err("syntax");
        assert!(
            matches!(&err, ConfigFileError::Syntax { path: Some(p), line: 1, column: 3, .. } if p == &broken),
            "{err}"
        );

        let missing = dir.join("missing.json");
        let err = load_config_file(&missing).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read config file {:?}",
                missing.display().to_string()
            )
        );
        let source = std::error::Error::source(&err).expect("io source");
        assert!(
            source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
