//! The rules a config entry follows, per workload type. Every broken rule is collected, each
//! naming its field and value, so one pass over a file reports every mistake.

use std::net::IpAddr;

use super::entry::ForwardConfig;
use super::error::{ConfigError, FieldError};
use super::read::REMOTE_PORT_PROBLEM;
use crate::forward_proxy::ProxyAuth;
use crate::spec::name::{check_dns1123_label, check_dns1123_subdomain, check_host};
use crate::spec::{
    DEFAULT_ADDRESS, LabelSelector, Protocol, SocksSettings, SpecError, Target, WorkloadType,
    non_empty, parse_addresses,
};

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
    ///   `deployment`, `statefulset` and `replicaset` workloads need the object's name (a
    ///   DNS-1123 subdomain) in `service`;
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
            // A forward proxy's clients name their ports.
            None if workload == WorkloadType::Socks => Some(0),
            Some(port) if workload == WorkloadType::Socks => {
                errors.push(FieldError::new(
                    "remote_port",
                    port.to_string(),
                    "does not apply to workload_type \"socks\": each client names its destination and port",
                ));
                None
            }
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
        if let (Some(Target::Socks(settings)), Some(addresses)) = (&target, &addresses) {
            self.check_socks(settings, addresses, &mut errors);
        }
        if self.protocol == Protocol::Udp && workload != WorkloadType::Socks {
            self.refuse_proxy_protocol(
                "works for TCP forwards only (a PROXY header starts a TCP stream), and this entry is UDP",
                &mut errors,
            );
        }
        self.relay.check(&mut errors);
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

    /// Reports each PROXY protocol setting the entry has, with `problem`.
    fn refuse_proxy_protocol(&self, problem: &str, errors: &mut Vec<FieldError>) {
        for (field, set) in [
            ("proxy_protocol", self.proxy_protocol.map(|v| v.to_string())),
            (
                "accept_proxy_protocol",
                self.accept_proxy_protocol.map(|a| a.to_string()),
            ),
        ] {
            if let Some(value) = set {
                errors.push(FieldError::new(field, value, problem));
            }
        }
    }

    /// What a forward proxy entry cannot have: UDP, PROXY protocol settings, several
    /// addresses, or an address beyond loopback without `auth`.
    fn check_socks(
        &self,
        settings: &SocksSettings,
        addresses: &[IpAddr],
        errors: &mut Vec<FieldError>,
    ) {
        if self.protocol == Protocol::Udp {
            errors.push(FieldError::new(
                "protocol",
                "udp",
                "does not apply to workload_type \"socks\": it listens on TCP, and SOCKS5 clients send UDP through UDP ASSOCIATE",
            ));
        }
        self.refuse_proxy_protocol("does not apply to workload_type \"socks\"", errors);
        let list = non_empty(self.local_address.as_deref()).unwrap_or("127.0.0.1");
        match addresses {
            [ip] if !ip.is_loopback() && settings.auth.is_none() => {
                errors.push(FieldError::new(
                    "local_address",
                    list,
                    "is beyond this machine, and a forward proxy there needs \"auth\": anyone who can reach it could use your cluster permissions",
                ));
            }
            [_] => {}
            _ => errors.push(FieldError::new(
                "local_address",
                list,
                "must be one address for workload_type \"socks\" (it listens on one port)",
            )),
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
            WorkloadType::Socks => {
                let auth = match non_empty(self.auth.as_deref()) {
                    None => None,
                    Some(text) => match text.parse::<ProxyAuth>() {
                        Ok(a) => Some(a),
                        Err(problem) => {
                            // The value is a password: it stays out of the message.
                            errors.push(FieldError::new(
                                "auth",
                                "(hidden)",
                                format!("is not valid: {problem}"),
                            ));
                            return None;
                        }
                    },
                };
                let defaults = SocksSettings::default();
                Some(Target::Socks(SocksSettings {
                    auth,
                    direct: self.direct.clone().unwrap_or_default(),
                    relay: !self.no_relay.unwrap_or(false),
                    cluster_domain: non_empty(self.cluster_domain.as_deref())
                        .map_or(defaults.cluster_domain, str::to_owned),
                }))
            }
            WorkloadType::Deployment | WorkloadType::StatefulSet | WorkloadType::ReplicaSet => {
                let workload = self.workload_type;
                let Some(name) = non_empty(self.service.as_deref()) else {
                    errors.push(FieldError::missing(
                        "service",
                        format!("workload_type \"{workload}\" needs the {workload}'s name"),
                    ));
                    return None;
                };
                let what = format!("{workload} name");
                let name = named("service", name, &what, check_dns1123_subdomain)?;
                Some(match workload {
                    WorkloadType::Deployment => Target::Deployment { name },
                    WorkloadType::StatefulSet => Target::StatefulSet { name },
                    _ => Target::ReplicaSet { name },
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::fields;

    fn problems(json: &str) -> Vec<FieldError> {
        let config: ForwardConfig =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        config.validate().expect_err("invalid").errors
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
    fn socks_workload_makes_a_forward_proxy_and_names_each_bad_field() {
        let config: ForwardConfig = serde_json::from_str(
            r#"{"workload_type": "socks", "namespace": "demo", "local_port": 0,
                "local_address": "0.0.0.0", "auth": "dev:s3cret", "direct": ".corp.example",
                "no_relay": "true", "cluster_domain": "corp.local"}"#,
        )
        .expect("json");
        let spec = config.to_spec().expect("valid");
        let Target::Socks(settings) = &spec.target else {
            panic!("not a forward proxy: {spec:?}");
        };
        assert_eq!(settings.auth.as_ref().map(|a| a.username()), Some("dev"));
        assert_eq!(settings.direct, ".corp.example");
        assert!(!settings.relay);
        assert_eq!(settings.cluster_domain, "corp.local");
        assert_eq!(spec.label(), "socks 0.0.0.0:0");
        assert_eq!(spec.check(), Ok(()));
        let bare: ForwardConfig =
            serde_json::from_str(r#"{"workload_type": "SOCKS"}"#).expect("json");
        assert_eq!(bare.label(), "socks:1080");
        assert_eq!(
            bare.to_spec().expect("valid").label(),
            "socks 127.0.0.1:1080"
        );

        let errors = problems(
            r#"{"workload_type": "socks", "remote_port": 80, "protocol": "udp",
                "local_address": "0.0.0.0", "proxy_protocol": "v2"}"#,
        );
        assert_eq!(
            fields(&errors),
            ["remote_port", "protocol", "local_address", "proxy_protocol"]
        );
        assert!(
            errors[2].problem.contains("needs \"auth\""),
            "{}",
            errors[2]
        );
        let errors = problems(r#"{"workload_type": "socks", "auth": "nopassword"}"#);
        assert_eq!(fields(&errors), ["auth"]);
        assert!(
            !errors[0].to_string().contains("nopassword"),
            "{}",
            errors[0]
        );
        let err =
            serde_json::from_str::<ForwardConfig>(r#"{"workload_type": "socks", "no_relay": 3}"#)
                .expect_err("not a boolean");
        assert!(
            err.to_string()
                .contains("field \"no_relay\": value \"3\" is not a boolean"),
            "{err}"
        );
    }
}
