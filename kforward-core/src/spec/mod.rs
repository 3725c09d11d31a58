//! The typed form of what to forward, shared by the command line and config files.
//!
//! Text from users (kubectl-style arguments, config fields) becomes [`Target`],
//! [`PortMapping`], [`LabelSelector`] and addresses here, and together a [`ForwardSpec`].
//! Parsing is pure and checks names against the Kubernetes rules, so mistakes surface
//! before any request, with the value and the accepted forms in the message.

mod address;
pub(crate) mod name;
mod port;
mod protocol;
mod selector;
mod socks;
mod target;
mod workload;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use address::{DEFAULT_ADDRESS, parse_addresses};
pub use port::{PortMapping, RemotePort};
pub use protocol::Protocol;
pub use selector::{LabelSelector, Requirement};
pub use socks::{SocksSettings, check_exposure};
pub use target::Target;
pub use workload::WorkloadType;

use crate::proxy_protocol::{Accept, Version};

/// Why text could not be turned into a spec value.
///
/// Every variant carries the offending value; its message also says what is accepted.
///
/// # Example
///
/// ```
/// use kforward_core::spec::{SpecError, Target};
///
/// let err = Target::parse_kubectl("job/x").unwrap_err();
/// assert!(matches!(err, SpecError::UnknownKind { ref kind, .. } if kind == "job"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The target text is empty.
    #[error(
        "target is empty (expected pod/NAME, svc/NAME, deploy/NAME, sts/NAME, rs/NAME, or NAME for a pod)"
    )]
    EmptyTarget,
    /// `KIND/` with nothing after the slash.
    #[error("target {input:?} has no name after \"{kind}/\" (expected {kind}/NAME)")]
    EmptyName {
        /// The kind as written.
        kind: String,
        /// The whole target text.
        input: String,
    },
    /// A resource kind this tool cannot forward to.
    #[error("unknown resource type {kind:?} in target {input:?} (accepted: {accepted})", accepted = target::ACCEPTED_KINDS)]
    UnknownKind {
        /// The kind as written.
        kind: String,
        /// The whole target text.
        input: String,
    },
    /// A pod, service or workload name that breaks the Kubernetes naming rules.
    #[error("invalid {kind} name {name:?}: {problem}")]
    InvalidName {
        /// `pod`, `service`, `deployment`, `statefulset` or `replicaset`.
        kind: &'static str,
        /// The name as written.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A proxy host that is not a host name or IP address.
    #[error("invalid proxy host {host:?}: {problem}")]
    InvalidHost {
        /// The host as written.
        host: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A label selector with a syntax error or an invalid key or value.
    #[error("invalid label selector {selector:?}: {problem}")]
    InvalidSelector {
        /// The selector text.
        selector: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A remote port that is neither a port number nor a valid port name.
    #[error("invalid remote port {value:?}: {problem}")]
    InvalidPort {
        /// The port as written.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A kubectl port argument in none of the accepted forms.
    #[error(
        "invalid port {value:?}: {problem} (accepted forms: LOCAL:REMOTE, REMOTE, :REMOTE or 0:REMOTE, \
         where REMOTE is a port number or name and local port 0 picks a free port)"
    )]
    InvalidPortMapping {
        /// The argument as written.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An item of an address list that is not an IP address or `localhost`.
    #[error("{}", address_message(list, item, problem))]
    InvalidAddress {
        /// The whole list.
        list: String,
        /// The bad item; empty when the list or an item is empty.
        item: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A protocol other than TCP or UDP.
    #[error("unknown protocol {value:?} (expected \"tcp\" or \"udp\")")]
    UnknownProtocol {
        /// The protocol as written.
        value: String,
    },
    /// A PROXY protocol setting on a UDP forward.
    #[error(
        "{setting} works for TCP forwards only: a PROXY header starts a TCP stream, and a UDP \
         forward carries datagrams"
    )]
    ProxyProtocolOverUdp {
        /// The setting, as the user wrote it (`--proxy-protocol`, `proxy_protocol`, ...).
        setting: &'static str,
    },
    /// A forward proxy on an address beyond this machine without credentials.
    #[error(
        "refusing to listen on {addr} without credentials: anyone who can reach that address could use \
         the proxy to reach the cluster with your permissions; set --auth USER:PASS (or \
         KFORWARD_PROXY_AUTH, or \"auth\" in a config entry), or listen on a loopback address such as 127.0.0.1"
    )]
    ExposedProxy {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// A forward proxy setting that does not fit.
    #[error("forward proxy: {setting} {problem}")]
    SocksSetting {
        /// The setting, as the user wrote it (`local_address`, `--proxy-protocol`, ...).
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A workload type other than service, pod, proxy, deployment, statefulset, replicaset
    /// or socks.
    #[error(
        "unknown workload type {value:?} (expected \"service\", \"pod\", \"proxy\", \"deployment\", \"statefulset\", \"replicaset\" or \"socks\")"
    )]
    UnknownWorkloadType {
        /// The workload type as written.
        value: String,
    },
}

fn address_message(list: &str, item: &str, problem: &str) -> String {
    if item.is_empty() {
        format!("invalid address list {list:?}: {problem}")
    } else {
        format!("invalid address {item:?} in {list:?}: {problem}")
    }
}

/// Everything needed to start one forward: what to reach, where, and on which local ports.
///
/// Build one from command line arguments with [`ForwardSpec::new`] and the `with_*`
/// methods, or from a config file entry with `ForwardSpec::try_from(&config)` (see
/// [`ForwardConfig`](crate::config::ForwardConfig)).
/// `namespace`, `context` and `kubeconfig` left as `None` mean the kubeconfig's defaults.
///
/// # Example
///
/// ```
/// use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target, parse_addresses};
///
/// let spec = ForwardSpec::new(
///     Target::parse_kubectl("svc/dns")?,
///     [PortMapping::parse_kubectl("5353:53")?],
/// )
/// .with_namespace("kube-system")
/// .with_protocol(Protocol::Udp)
/// .with_addresses(parse_addresses("localhost")?);
/// assert_eq!(spec.label(), "svc/dns 5353:53/udp");
/// assert_eq!(spec.addresses.len(), 2);
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// What to reach.
    pub target: Target,
    /// The namespace of the target; `None` is the context's namespace.
    pub namespace: Option<String>,
    /// The ports to forward, at least one for a useful forward.
    pub ports: Vec<PortMapping>,
    /// The local addresses to listen on, each with every port.
    pub addresses: Vec<IpAddr>,
    /// TCP, or UDP (carried through the relay).
    pub protocol: Protocol,
    /// The kubeconfig context; `None` is the current context.
    pub context: Option<String>,
    /// The kubeconfig file; `None` is the default lookup (`KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// A display name, used instead of the target and ports.
    pub alias: Option<String>,
    /// The PROXY protocol header to send toward the target before the client's bytes, so
    /// that it sees the local client's address (TCP only).
    pub proxy_protocol: Option<Version>,
    /// Whether local clients send a PROXY protocol header first, and whether they must
    /// (TCP only).
    pub accept_proxy_protocol: Option<Accept>,
}

impl ForwardSpec {
    /// A TCP spec for `target` and `ports`, listening on [`DEFAULT_ADDRESS`] (`127.0.0.1`),
    /// with every other setting at its default.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Pod { name: "web-0".into() }, [PortMapping::new(8080, 80)]);
    /// assert_eq!(spec.protocol, Protocol::Tcp);
    /// assert_eq!(spec.addresses, ["127.0.0.1".parse::<std::net::IpAddr>()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn new(target: Target, ports: impl IntoIterator<Item = PortMapping>) -> Self {
        ForwardSpec {
            target,
            namespace: None,
            ports: ports.into_iter().collect(),
            addresses: vec![DEFAULT_ADDRESS],
            protocol: Protocol::Tcp,
            context: None,
            kubeconfig: None,
            alias: None,
            proxy_protocol: None,
            accept_proxy_protocol: None,
        }
    }

    /// Sets the namespace.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(80, 80)])
    ///     .with_namespace("shop");
    /// assert_eq!(spec.namespace.as_deref(), Some("shop"));
    /// ```
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the local addresses to listen on.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target, parse_addresses};
    ///
    /// let spec = ForwardSpec::new(Target::Pod { name: "web-0".into() }, [PortMapping::new(80, 80)])
    ///     .with_addresses(parse_addresses("127.0.0.2")?);
    /// assert_eq!(spec.addresses.len(), 1);
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    #[must_use]
    pub fn with_addresses(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.addresses = addresses.into_iter().collect();
        self
    }

    /// Sets the protocol.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Pod { name: "dns-0".into() }, [PortMapping::new(53, 53)])
    ///     .with_protocol(Protocol::Udp);
    /// assert_eq!(spec.protocol, Protocol::Udp);
    /// ```
    #[must_use]
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the kubeconfig context.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Pod { name: "web-0".into() }, [PortMapping::new(80, 80)])
    ///     .with_context("staging");
    /// assert_eq!(spec.context.as_deref(), Some("staging"));
    /// ```
    #[must_use]
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Sets the kubeconfig file.
    ///
    /// # Example
    ///
    /// ```
    /// use std::path::Path;
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Pod { name: "web-0".into() }, [PortMapping::new(80, 80)])
    ///     .with_kubeconfig("/tmp/kubeconfig");
    /// assert_eq!(spec.kubeconfig.as_deref(), Some(Path::new("/tmp/kubeconfig")));
    /// ```
    #[must_use]
    pub fn with_kubeconfig(mut self, kubeconfig: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(kubeconfig.into());
        self
    }

    /// Sets the display name.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Service { name: "pg".into() }, [PortMapping::new(5432, 5432)])
    ///     .with_alias("db");
    /// assert_eq!(spec.label(), "db");
    /// ```
    #[must_use]
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// Sends a PROXY protocol header of `version` toward the target.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::proxy_protocol::Version;
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)])
    ///     .with_proxy_protocol(Version::V2);
    /// assert_eq!(spec.proxy_protocol, Some(Version::V2));
    /// ```
    #[must_use]
    pub fn with_proxy_protocol(mut self, version: Version) -> Self {
        self.proxy_protocol = Some(version);
        self
    }

    /// Reads (and removes) a PROXY protocol header from each local client.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::proxy_protocol::Accept;
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Service { name: "web".into() }, [PortMapping::new(0, 80)])
    ///     .with_accept_proxy_protocol(Accept::Strict);
    /// assert_eq!(spec.accept_proxy_protocol, Some(Accept::Strict));
    /// ```
    #[must_use]
    pub fn with_accept_proxy_protocol(mut self, mode: Accept) -> Self {
        self.accept_proxy_protocol = Some(mode);
        self
    }

    /// Checks that the settings go together: PROXY protocol settings need TCP.
    ///
    /// # Errors
    ///
    /// [`SpecError::ProxyProtocolOverUdp`].
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::proxy_protocol::Version;
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target};
    ///
    /// let spec = ForwardSpec::new(Target::Service { name: "dns".into() }, [PortMapping::new(0, 53)])
    ///     .with_protocol(Protocol::Udp)
    ///     .with_proxy_protocol(Version::V1);
    /// assert!(spec.check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), SpecError> {
        if let Target::Socks(settings) = &self.target {
            return self.check_socks(settings);
        }
        if self.protocol == Protocol::Udp {
            if self.proxy_protocol.is_some() {
                return Err(SpecError::ProxyProtocolOverUdp {
                    setting: "--proxy-protocol (proxy_protocol)",
                });
            }
            if self.accept_proxy_protocol.is_some() {
                return Err(SpecError::ProxyProtocolOverUdp {
                    setting: "--accept-proxy-protocol (accept_proxy_protocol)",
                });
            }
        }
        Ok(())
    }

    /// A forward proxy on `listen` (port 0 picks a free one) with `settings`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, SocksSettings};
    ///
    /// let spec = ForwardSpec::socks(SocksSettings::default(), "127.0.0.1:1080".parse()?);
    /// assert_eq!(spec.label(), "socks 127.0.0.1:1080");
    /// assert_eq!(spec.check(), Ok(()));
    /// let open = ForwardSpec::socks(SocksSettings::default(), "0.0.0.0:1080".parse()?);
    /// assert!(open.check().is_err(), "beyond loopback only with credentials");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn socks(settings: SocksSettings, listen: SocketAddr) -> Self {
        ForwardSpec::new(
            Target::Socks(settings),
            [PortMapping::new(listen.port(), 0)],
        )
        .with_addresses([listen.ip()])
    }

    /// The one local address of a forward proxy spec (its first address and port).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        let ip = self.addresses.first()?;
        let port = self.ports.first()?;
        Some(SocketAddr::new(*ip, port.local))
    }

    /// A forward proxy listens on one address and port, over TCP, with no PROXY protocol
    /// settings, and beyond loopback only with credentials.
    fn check_socks(&self, settings: &SocksSettings) -> Result<(), SpecError> {
        let bad = |setting, problem: &str| SpecError::SocksSetting {
            setting,
            problem: problem.to_string(),
        };
        if self.addresses.len() != 1 {
            return Err(bad(
                "local_address (--listen)",
                "must be one address: the proxy listens on one port",
            ));
        }
        if self.ports.len() != 1 {
            return Err(bad(
                "local_port (--listen)",
                "must be one port: the clients name their destinations",
            ));
        }
        if self.protocol != Protocol::Tcp {
            return Err(bad(
                "protocol",
                "must be tcp: UDP goes through SOCKS5 UDP ASSOCIATE",
            ));
        }
        if self.proxy_protocol.is_some() || self.accept_proxy_protocol.is_some() {
            return Err(bad(
                "proxy_protocol (--proxy-protocol)",
                "does not apply: each client names its own destination",
            ));
        }
        match self.listen_addr() {
            Some(addr) => check_exposure(addr, settings.auth.is_some()),
            None => Ok(()),
        }
    }

    /// A short name for status lines and logs: the alias if set, else the target and its
    /// ports (`svc/web 8080:80`), with `/udp` after UDP ports.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
    ///
    /// let spec = ForwardSpec::new(
    ///     Target::Service { name: "web".into() },
    ///     [PortMapping::new(8080, 80), PortMapping::new(0, 443)],
    /// );
    /// assert_eq!(spec.label(), "svc/web 8080:80 0:443");
    /// ```
    pub fn label(&self) -> String {
        if let Some(alias) = non_empty(self.alias.as_deref()) {
            return alias.to_owned();
        }
        if let (Target::Socks(_), Some(addr)) = (&self.target, self.listen_addr()) {
            return format!("socks {addr}");
        }
        let mut label = self.target.to_string();
        for port in &self.ports {
            label.push(' ');
            label.push_str(&port.to_string());
            if self.protocol == Protocol::Udp {
                label.push_str("/udp");
            }
        }
        label
    }
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The text of an optional field, if it is set and not blank (kftray saves empty inputs as
/// `""`).
pub(crate) fn non_empty(field: Option<&str>) -> Option<&str> {
    field.filter(|text| !text.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_display() {
        let spec = ForwardSpec::new(
            Target::Deployment { name: "api".into() },
            [PortMapping::new(0, 8080)],
        )
        .with_context("prod")
        .with_kubeconfig("/k")
        .with_namespace("ns");
        assert_eq!(spec.to_string(), "deploy/api 0:8080");
        assert_eq!(spec.clone().with_alias("api").to_string(), "api");
    }
}
