//! One forward as written in a config file: [`ForwardConfig`], with kftray's field names.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::error::ConfigError;
use super::relay_entry::RelayConfig;
use crate::proxy_protocol::{Accept, Version};
use crate::spec::{ForwardSpec, Protocol, WorkloadType, non_empty};

/// The local port of a `socks` entry that names none, as SOCKS proxies use.
pub const SOCKS_PORT: u16 = 1080;

/// The namespace of an entry that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One forward as written in a config file, with kftray's field names.
///
/// Reading is lenient where kftray files vary: `null` is the same as a missing field, ports
/// may be JSON numbers or numeric strings, `protocol` and `workload_type` are
/// case-insensitive, and unknown fields (`id`, `domain_enabled`, `http_logs_enabled`, ...)
/// are kept in [`extra`](Self::extra). Deserializing fails only on a wrong JSON type or an
/// unknown protocol, workload type or PROXY protocol setting; call
/// [`validate`](Self::validate) for the rest, or use [`load_configs`](super::load_configs),
/// which does both. Writing leaves out unset optional fields.
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
    /// How the relay pod of a UDP or `proxy` entry is made (`relay_image`,
    /// `relay_pull_policy`, `relay_pull_secrets`, `relay_pod_patch`).
    #[serde(flatten)]
    pub relay: RelayConfig,
    /// For `workload_type: "socks"`, the `USER:PASS` clients must give (required beyond
    /// loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// For `workload_type: "socks"`, destinations to connect to from this machine
    /// (`NO_PROXY` syntax).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<String>,
    /// For `workload_type: "socks"`, refuse what would need the relay pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_relay: Option<bool>,
    /// For `workload_type: "socks"`, the cluster's DNS domain (`cluster.local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
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
            relay: RelayConfig::default(),
            auth: None,
            direct: None,
            no_relay: None,
            cluster_domain: None,
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

impl ForwardConfig {
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
        if self.workload_type == WorkloadType::Socks {
            let port = self.local_port.unwrap_or(SOCKS_PORT);
            return format!("socks:{port}");
        }
        let what = match self.workload_type {
            WorkloadType::Service => format!("svc/{}", or_unknown(&self.service)),
            WorkloadType::Pod => match non_empty(self.target.as_deref()) {
                Some(selector) => format!("pod?{selector}"),
                None => format!("pod/{}", or_unknown(&self.service)),
            },
            WorkloadType::Deployment => format!("deploy/{}", or_unknown(&self.service)),
            WorkloadType::StatefulSet => format!("sts/{}", or_unknown(&self.service)),
            WorkloadType::ReplicaSet => format!("rs/{}", or_unknown(&self.service)),
            WorkloadType::Proxy => {
                let host = or_unknown(&self.remote_address);
                if host.contains(':') {
                    format!("proxy/[{host}]")
                } else {
                    format!("proxy/{host}")
                }
            }
            WorkloadType::Socks => "socks".to_owned(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
