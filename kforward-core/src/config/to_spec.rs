//! What a config entry means as a [`ForwardSpec`], field by field, as kftray reads it.

use std::path::PathBuf;

use super::entry::{ForwardConfig, SOCKS_PORT};
use super::error::ConfigError;
use crate::spec::{ForwardSpec, PortMapping, Target, non_empty};

/// Turns a config file entry into a spec, with kftray's meaning of each field:
///
/// - `workload_type: "service"`: [`Target::Service`] named by `service`;
/// - `workload_type: "pod"`: [`Target::PodSelector`] from `target` if set, else
///   [`Target::Pod`] named by `service`;
/// - `workload_type: "proxy"`: [`Target::Remote`] to `remote_address`;
/// - `workload_type: "socks"`: [`Target::Socks`], a forward proxy on `local_port` (1080
///   when missing) with `auth`, `direct`, `no_relay` and `cluster_domain`;
/// - `workload_type: "deployment"`, `"statefulset"` or `"replicaset"` (kforward's, beyond
///   kftray's): [`Target::Deployment`], [`Target::StatefulSet`] or [`Target::ReplicaSet`]
///   named by `service`;
/// - one port mapping, `local_port` to `remote_port`; a missing `local_port` means the same
///   port as `remote_port` (as kubectl), 0 picks a free port;
/// - `local_address` missing means `127.0.0.1`, `localhost` means `127.0.0.1` and `::1`;
/// - empty `context`, `alias` and `kubeconfig` count as unset, and so does kftray's
///   `kubeconfig: "default"`.
///
/// # Errors
///
/// Every problem [`ForwardConfig::validate`] finds, as one [`ConfigError`].
///
/// # Example
///
/// ```
/// use kforward_core::config::ForwardConfig;
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target, WorkloadType};
///
/// let config = ForwardConfig {
///     workload_type: WorkloadType::Pod,
///     service: Some("web-0".into()),
///     target: Some("app=web".into()),
///     remote_port: Some(8080),
///     ..ForwardConfig::default()
/// };
/// let spec = ForwardSpec::try_from(&config)?;
/// assert_eq!(spec.target.to_string(), "pod?app=web");
/// assert_eq!(spec.ports, [PortMapping::new(8080, 8080)]);
/// assert_eq!(spec.namespace.as_deref(), Some("default"));
/// # Ok::<(), kforward_core::config::ConfigError>(())
/// ```
///
/// [`Target::Service`]: crate::spec::Target::Service
/// [`Target::PodSelector`]: crate::spec::Target::PodSelector
/// [`Target::Pod`]: crate::spec::Target::Pod
/// [`Target::Remote`]: crate::spec::Target::Remote
/// [`Target::Socks`]: crate::spec::Target::Socks
/// [`Target::Deployment`]: crate::spec::Target::Deployment
/// [`Target::StatefulSet`]: crate::spec::Target::StatefulSet
/// [`Target::ReplicaSet`]: crate::spec::Target::ReplicaSet
impl TryFrom<&ForwardConfig> for ForwardSpec {
    type Error = ConfigError;

    fn try_from(config: &ForwardConfig) -> Result<Self, Self::Error> {
        let checked = config.check()?;
        let local = match checked.target {
            Target::Socks(_) => config.local_port.unwrap_or(SOCKS_PORT),
            _ => config.local_port.unwrap_or(checked.remote_port),
        };
        Ok(ForwardSpec {
            target: checked.target,
            namespace: Some(config.namespace.clone()),
            ports: vec![PortMapping::new(local, checked.remote_port)],
            addresses: checked.addresses,
            protocol: config.protocol,
            context: non_empty(config.context.as_deref()).map(str::to_owned),
            kubeconfig: non_empty(config.kubeconfig.as_deref())
                .filter(|path| *path != "default")
                .map(PathBuf::from),
            alias: non_empty(config.alias.as_deref()).map(str::to_owned),
            proxy_protocol: config.proxy_protocol,
            accept_proxy_protocol: config.accept_proxy_protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::fixture::KFTRAY_EXPORT;
    use crate::config::load_configs;
    use crate::proxy_protocol::{Accept, Version};
    use crate::spec::{DEFAULT_ADDRESS, Protocol, Target};

    fn config(json: &str) -> ForwardConfig {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn spec(json: &str) -> ForwardSpec {
        ForwardSpec::try_from(&config(json)).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn service_config_becomes_service_target() {
        let spec = spec(
            r#"{"service":"web","namespace":"shop","local_port":8080,"remote_port":80,
                "context":"kind-dev","alias":"shop-web","kubeconfig":"/home/me/.kube/dev"}"#,
        );
        assert_eq!(
            spec,
            ForwardSpec {
                target: Target::Service { name: "web".into() },
                namespace: Some("shop".into()),
                ports: vec![PortMapping::new(8080, 80)],
                addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                protocol: Protocol::Tcp,
                context: Some("kind-dev".into()),
                kubeconfig: Some(PathBuf::from("/home/me/.kube/dev")),
                alias: Some("shop-web".into()),
                proxy_protocol: None,
                accept_proxy_protocol: None,
            }
        );
    }

    #[test]
    fn pod_config_prefers_the_selector_over_the_name() {
        let by_selector = spec(
            r#"{"workload_type":"pod","service":"web-0","target":"app=web,tier!=db","remote_port":80}"#,
        );
        assert_eq!(by_selector.target.to_string(), "pod?app=web,tier!=db");
        let by_name =
            spec(r#"{"workload_type":"pod","service":"web-0","target":"","remote_port":80}"#);
        assert_eq!(
            by_name.target,
            Target::Pod {
                name: "web-0".into()
            }
        );
    }

    #[test]
    fn workload_configs_name_their_object_in_service() {
        for (workload, target) in [
            ("statefulset", "sts/db"),
            ("StatefulSet", "sts/db"),
            ("replicaset", "rs/db"),
            ("deployment", "deploy/db"),
        ] {
            let json = format!(
                r#"{{"workload_type":"{workload}","service":"db","namespace":"data","remote_port":5432}}"#
            );
            assert_eq!(spec(&json).target.to_string(), target, "{json}");
        }
        let err = ForwardSpec::try_from(&config(
            r#"{"workload_type":"statefulset","service":"","remote_port":5432}"#,
        ))
        .expect_err("no name");
        assert_eq!(
            err.to_string(),
            r#"field "service": is missing; workload_type "statefulset" needs the statefulset's name"#
        );
        let err = ForwardSpec::try_from(&config(
            r#"{"workload_type":"replicaset","service":"Web_1","remote_port":80}"#,
        ))
        .expect_err("a bad name");
        assert!(
            err.to_string().starts_with(
                r#"field "service": value "Web_1" is not a valid replicaset name: it "#
            ),
            "{err}"
        );
    }

    #[test]
    fn proxy_config_becomes_proxy_target_with_same_local_port() {
        let spec = spec(
            r#"{"workload_type":"proxy","service":null,"remote_address":"db.example.com","remote_port":5432}"#,
        );
        assert_eq!(
            spec.target,
            Target::Remote {
                host: "db.example.com".into()
            }
        );
        assert_eq!(spec.ports, [PortMapping::new(5432, 5432)]);
    }

    #[test]
    fn proxy_protocol_settings_come_from_the_config_and_need_tcp() {
        let tcp = spec(
            r#"{"service":"web","remote_port":80,"proxy_protocol":"V2","accept_proxy_protocol":"strict"}"#,
        );
        assert_eq!(tcp.proxy_protocol, Some(Version::V2));
        assert_eq!(tcp.accept_proxy_protocol, Some(Accept::Strict));
        assert_eq!(tcp.check(), Ok(()));
        let err = ForwardSpec::try_from(&config(
            r#"{"service":"dns","remote_port":53,"protocol":"udp","proxy_protocol":"v1"}"#,
        ))
        .expect_err("UDP");
        assert_eq!(
            err.to_string(),
            "field \"proxy_protocol\": value \"v1\" works for TCP forwards only (a PROXY header \
             starts a TCP stream), and this entry is UDP"
        );
        let err = serde_json::from_str::<ForwardConfig>(
            r#"{"service":"web","remote_port":80,"proxy_protocol":"v3"}"#,
        )
        .expect_err("v3 is refused");
        assert!(
            err.to_string().starts_with(
                "field \"proxy_protocol\": value \"v3\" is not a PROXY protocol version"
            ),
            "{err}"
        );
        let written = serde_json::to_value(config(
            r#"{"service":"web","remote_port":80,"proxy_protocol":"v1"}"#,
        ))
        .expect("serializes");
        assert_eq!(written["proxy_protocol"], "v1");
    }

    #[test]
    fn local_port_zero_picks_a_free_port() {
        let spec = spec(r#"{"service":"web","local_port":0,"remote_port":80}"#);
        assert!(spec.ports[0].picks_free_port());
    }

    #[test]
    fn local_address_and_udp() {
        let udp = spec(
            r#"{"service":"dns","remote_port":53,"local_address":"localhost","protocol":"UDP"}"#,
        );
        assert_eq!(
            udp.addresses,
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
        assert_eq!(udp.protocol, Protocol::Udp);
        assert_eq!(udp.label(), "svc/dns 53:53/udp");
        let loopback = spec(r#"{"service":"web","remote_port":80,"local_address":"127.0.0.9"}"#);
        assert_eq!(
            loopback.addresses,
            [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))]
        );
    }

    #[test]
    fn empty_and_default_settings_count_as_unset() {
        let spec = spec(
            r#"{"service":"web","remote_port":80,"context":"","alias":"","kubeconfig":"default","local_address":""}"#,
        );
        assert_eq!(spec.context, None);
        assert_eq!(spec.alias, None);
        assert_eq!(spec.kubeconfig, None);
        assert_eq!(spec.addresses, [DEFAULT_ADDRESS]);
        assert_eq!(spec.label(), "svc/web 80:80");
    }

    #[test]
    fn invalid_config_reports_every_problem() {
        let err = ForwardSpec::try_from(&config(
            r#"{"service":"Web","namespace":"-x","remote_port":0,"local_address":"nowhere"}"#,
        ))
        .expect_err("invalid");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["service", "namespace", "remote_port", "local_address"]
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
}
