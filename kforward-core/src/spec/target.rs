//! What a forward reaches: a pod (by name or selector), a service, a workload (deployment,
//! statefulset, replicaset) or any host (proxy).

use std::fmt;
use std::str::FromStr;

use super::SpecError;
use super::name::{check_dns1123_label, check_dns1123_subdomain, check_host};
use super::selector::LabelSelector;
use super::socks::SocksSettings;

/// The resource kinds [`Target::parse_kubectl`] accepts, for error messages.
pub(crate) const ACCEPTED_KINDS: &str = "pod (po, pods), svc (service, services), \
     deploy (deployment, deployments, deployment.apps), sts (statefulset, statefulsets, \
     statefulset.apps), rs (replicaset, replicasets, replicaset.apps) and proxy";

/// What a forward connects to, inside one namespace.
///
/// [`Display`](fmt::Display) gives the canonical form: `pod/NAME`, `pod?SELECTOR` (a pod
/// chosen by label selector, e.g. `pod?app=web,tier=api`), `svc/NAME`, `deploy/NAME`,
/// `sts/NAME`, `rs/NAME` and `proxy/HOST`. Every canonical form parses back with [`Target::parse_kubectl`].
///
/// # Example
///
/// ```
/// use kforward_core::spec::{LabelSelector, Target};
///
/// assert_eq!(Target::parse_kubectl("service/web")?, Target::Service { name: "web".into() });
/// assert_eq!(Target::parse_kubectl("web-0")?.to_string(), "pod/web-0");
///
/// let by_label = Target::PodSelector { selector: LabelSelector::parse("app=web")? };
/// assert_eq!(by_label.to_string(), "pod?app=web");
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// One pod, by name.
    Pod {
        /// The pod name (a DNS-1123 subdomain).
        name: String,
    },
    /// A ready pod chosen by label selector (kftray's `workload_type: "pod"` with `target`).
    PodSelector {
        /// The selector pods must match.
        selector: LabelSelector,
    },
    /// A ready pod behind a service; a named target port is resolved in that pod.
    Service {
        /// The service name (a DNS-1123 label).
        name: String,
    },
    /// A ready pod of a deployment.
    Deployment {
        /// The deployment name (a DNS-1123 subdomain).
        name: String,
    },
    /// One ready pod of a statefulset, the one `kubectl port-forward sts/NAME` picks, kept
    /// while it stays ready: a statefulset's pods are not interchangeable (a database's
    /// primary and replicas), so connections do not spread over them.
    StatefulSet {
        /// The statefulset name (a DNS-1123 subdomain).
        name: String,
    },
    /// A ready pod of a replicaset.
    ReplicaSet {
        /// The replicaset name (a DNS-1123 subdomain).
        name: String,
    },
    /// A remote address: any host the cluster can reach (a service DNS name, an external
    /// host, an IP), reached through the in-cluster relay. Written `proxy/HOST`, after
    /// kftray's `workload_type: "proxy"` and `kforward proxy`.
    Remote {
        /// The host name or IP address, without scheme or port.
        host: String,
    },
    /// A forward proxy into the cluster on the spec's one local port: each client names
    /// its own destination. Written `socks` (it has no kubectl form: `kforward socks` and
    /// `workload_type: "socks"` make it).
    Socks(SocksSettings),
}

/// The kinds of `KIND/NAME` with a name.
#[derive(Clone, Copy)]
enum Kind {
    Pod,
    Service,
    Deployment,
    StatefulSet,
    ReplicaSet,
    Remote,
}

impl Kind {
    fn from_word(word: &str) -> Option<Kind> {
        let word = word.to_ascii_lowercase();
        Some(match word.as_str() {
            "pod" | "pods" | "po" => Kind::Pod,
            "svc" | "service" | "services" => Kind::Service,
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps" => {
                Kind::Deployment
            }
            // kubectl's resource names and short names for them (`kubectl api-resources`).
            "sts" | "statefulset" | "statefulsets" | "statefulset.apps" | "statefulsets.apps" => {
                Kind::StatefulSet
            }
            "rs" | "replicaset" | "replicasets" | "replicaset.apps" | "replicasets.apps" => {
                Kind::ReplicaSet
            }
            "proxy" => Kind::Remote,
            _ => return None,
        })
    }
}

impl Target {
    /// Parses a target the way `kubectl port-forward` takes it: `pod/NAME`, `pods/NAME`,
    /// `po/NAME` or a bare `NAME` (a pod); `svc/NAME`, `service/NAME`, `services/NAME`;
    /// `deploy/NAME`, `deployment/NAME`, `deployments/NAME`, `deployment.apps/NAME`;
    /// `sts/NAME`, `statefulset/NAME`, `statefulsets/NAME`, `statefulset.apps/NAME`;
    /// `rs/NAME`, `replicaset/NAME`, `replicasets/NAME`, `replicaset.apps/NAME`.
    /// Also accepts this type's own canonical forms `pod?SELECTOR` and `proxy/HOST`.
    /// Kinds are case-insensitive; names are checked against the Kubernetes rules.
    ///
    /// # Errors
    ///
    /// [`SpecError::EmptyTarget`], [`SpecError::UnknownKind`] (listing the accepted kinds),
    /// [`SpecError::EmptyName`], [`SpecError::InvalidName`], [`SpecError::InvalidHost`] or
    /// [`SpecError::InvalidSelector`].
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::Target;
    ///
    /// assert_eq!(Target::parse_kubectl("deploy/api")?, Target::Deployment { name: "api".into() });
    /// assert_eq!(Target::parse_kubectl("statefulset/db")?, Target::StatefulSet { name: "db".into() });
    /// assert_eq!(Target::parse_kubectl("proxy/db.internal")?.to_string(), "proxy/db.internal");
    /// let err = Target::parse_kubectl("job/x").unwrap_err();
    /// assert!(err.to_string().contains("svc (service, services)"));
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn parse_kubectl(input: &str) -> Result<Self, SpecError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(SpecError::EmptyTarget);
        }
        if let Some((kind, selector)) = text.split_once('?')
            && !kind.contains('/')
        {
            return match Kind::from_word(kind) {
                Some(Kind::Pod) => Ok(Target::PodSelector {
                    selector: LabelSelector::parse(selector)?,
                }),
                _ => Err(SpecError::UnknownKind {
                    kind: kind.to_owned(),
                    input: input.to_owned(),
                }),
            };
        }
        let Some((kind_word, name)) = text.split_once('/') else {
            return Target::named(Kind::Pod, text);
        };
        let kind = Kind::from_word(kind_word).ok_or_else(|| SpecError::UnknownKind {
            kind: kind_word.to_owned(),
            input: input.to_owned(),
        })?;
        if name.is_empty() {
            return Err(SpecError::EmptyName {
                kind: kind_word.to_owned(),
                input: input.to_owned(),
            });
        }
        Target::named(kind, name)
    }

    fn named(kind: Kind, name: &str) -> Result<Self, SpecError> {
        let invalid = |kind: &'static str| {
            move |problem| SpecError::InvalidName {
                kind,
                name: name.to_owned(),
                problem,
            }
        };
        Ok(match kind {
            Kind::Pod => {
                check_dns1123_subdomain(name).map_err(invalid("pod"))?;
                Target::Pod {
                    name: name.to_owned(),
                }
            }
            Kind::Service => {
                check_dns1123_label(name).map_err(invalid("service"))?;
                Target::Service {
                    name: name.to_owned(),
                }
            }
            Kind::Deployment => {
                check_dns1123_subdomain(name).map_err(invalid("deployment"))?;
                Target::Deployment {
                    name: name.to_owned(),
                }
            }
            Kind::StatefulSet => {
                check_dns1123_subdomain(name).map_err(invalid("statefulset"))?;
                Target::StatefulSet {
                    name: name.to_owned(),
                }
            }
            Kind::ReplicaSet => {
                check_dns1123_subdomain(name).map_err(invalid("replicaset"))?;
                Target::ReplicaSet {
                    name: name.to_owned(),
                }
            }
            Kind::Remote => {
                check_host(name).map_err(|problem| SpecError::InvalidHost {
                    host: name.to_owned(),
                    problem,
                })?;
                Target::Remote {
                    host: name.to_owned(),
                }
            }
        })
    }

    /// The short kind of the canonical form: `pod`, `svc`, `deploy`, `sts`, `rs`, `proxy` or
    /// `socks`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::Target;
    ///
    /// assert_eq!(Target::parse_kubectl("services/web")?.kind(), "svc");
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Pod { .. } | Target::PodSelector { .. } => "pod",
            Target::Service { .. } => "svc",
            Target::Deployment { .. } => "deploy",
            Target::StatefulSet { .. } => "sts",
            Target::ReplicaSet { .. } => "rs",
            Target::Remote { .. } => "proxy",
            Target::Socks(_) => "socks",
        }
    }

    /// Whether this target is a remote address, reached through the in-cluster relay
    /// whatever the protocol (UDP forwards use the relay for every target).
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::Target;
    ///
    /// assert!(Target::Remote { host: "db".into() }.is_remote());
    /// assert!(!Target::Pod { name: "web-0".into() }.is_remote());
    /// ```
    pub fn is_remote(&self) -> bool {
        matches!(self, Target::Remote { .. })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::PodSelector { selector } => write!(f, "pod?{selector}"),
            Target::Pod { name }
            | Target::Service { name }
            | Target::Deployment { name }
            | Target::StatefulSet { name }
            | Target::ReplicaSet { name } => write!(f, "{}/{name}", self.kind()),
            Target::Remote { host } => write!(f, "proxy/{host}"),
            Target::Socks(_) => f.write_str("socks"),
        }
    }
}

impl FromStr for Target {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse_kubectl(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Target {
        Target::parse_kubectl(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn accepts_every_kubectl_spelling() {
        let pod = Target::Pod {
            name: "web-0".into(),
        };
        let svc = Target::Service { name: "web".into() };
        let deploy = Target::Deployment { name: "api".into() };
        let sts = Target::StatefulSet { name: "db".into() };
        let rs = Target::ReplicaSet {
            name: "api-5d4f8c7b9".into(),
        };
        for (text, want) in [
            ("web-0", &pod),
            ("pod/web-0", &pod),
            ("pods/web-0", &pod),
            ("po/web-0", &pod),
            ("Pod/web-0", &pod),
            (" pod/web-0 ", &pod),
            ("svc/web", &svc),
            ("service/web", &svc),
            ("services/web", &svc),
            ("SVC/web", &svc),
            ("deploy/api", &deploy),
            ("deployment/api", &deploy),
            ("deployments/api", &deploy),
            ("deployment.apps/api", &deploy),
            ("sts/db", &sts),
            ("statefulset/db", &sts),
            ("statefulsets/db", &sts),
            ("statefulset.apps/db", &sts),
            ("StatefulSet/db", &sts),
            ("rs/api-5d4f8c7b9", &rs),
            ("replicaset/api-5d4f8c7b9", &rs),
            ("replicasets/api-5d4f8c7b9", &rs),
            ("replicaset.apps/api-5d4f8c7b9", &rs),
        ] {
            assert_eq!(&parse(text), want, "{text}");
        }
    }

    #[test]
    fn canonical_forms_round_trip() {
        for (text, canonical) in [
            ("pods/web-0", "pod/web-0"),
            ("web-0.ns", "pod/web-0.ns"),
            ("service/web", "svc/web"),
            ("deployment/api", "deploy/api"),
            ("statefulset/db", "sts/db"),
            ("replicasets.apps/api-1", "rs/api-1"),
            ("proxy/db.example.com", "proxy/db.example.com"),
            ("proxy/10.0.0.7", "proxy/10.0.0.7"),
            ("proxy/fd00::7", "proxy/fd00::7"),
            ("pod?app=web, tier in (a,b)", "pod?app=web,tier in (a,b)"),
            ("pods?app=web", "pod?app=web"),
        ] {
            let target = parse(text);
            assert_eq!(target.to_string(), canonical, "{text}");
            assert_eq!(parse(canonical), target, "{canonical}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(parse("web-0").kind(), "pod");
        assert_eq!(parse("pod?app=web").kind(), "pod");
        assert_eq!(parse("svc/web").kind(), "svc");
        assert_eq!(parse("deploy/web").kind(), "deploy");
        assert_eq!(parse("statefulset/db").kind(), "sts");
        assert_eq!(parse("replicaset/web-1").kind(), "rs");
        assert_eq!(parse("proxy/web").kind(), "proxy");
    }

    #[test]
    fn empty_input_and_empty_names() {
        assert_eq!(Target::parse_kubectl("  "), Err(SpecError::EmptyTarget));
        let err = Target::parse_kubectl("svc/").expect_err("empty name");
        assert_eq!(
            err,
            SpecError::EmptyName {
                kind: "svc".into(),
                input: "svc/".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "target \"svc/\" has no name after \"svc/\" (expected svc/NAME)"
        );
        assert!(
            Target::parse_kubectl("")
                .expect_err("empty")
                .to_string()
                .contains("pod/NAME")
        );
    }

    #[test]
    fn unknown_kind_lists_the_accepted_kinds() {
        let err = Target::parse_kubectl("job/db").expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("\"job\""), "{text}");
        assert!(text.contains(ACCEPTED_KINDS), "{text}");
        assert!(matches!(
            Target::parse_kubectl("svc?app=web"),
            Err(SpecError::UnknownKind { .. })
        ));
    }

    #[test]
    fn invalid_names_say_why() {
        let err = Target::parse_kubectl("svc/Web").expect_err("uppercase");
        assert!(
            matches!(&err, SpecError::InvalidName { kind: "service", name, .. } if name == "Web")
        );
        assert!(
            err.to_string()
                .starts_with("invalid service name \"Web\": contains 'W'"),
            "{err}"
        );
        // Service names are labels (no dots); pods and deployments are subdomains.
        assert!(Target::parse_kubectl("svc/web.ns").is_err());
        assert!(Target::parse_kubectl("deploy/web.v2").is_ok());
        assert!(Target::parse_kubectl("sts/Db").is_err());
        assert!(Target::parse_kubectl("rs/").is_err());
        assert!(Target::parse_kubectl("pod/a/b").is_err());
        let long_label = format!("svc/{}", "a".repeat(64));
        assert!(Target::parse_kubectl(&long_label).is_err());
        let long_pod = format!("pod/{}", "a".repeat(200));
        assert!(Target::parse_kubectl(&long_pod).is_ok());
    }

    #[test]
    fn proxy_hosts_are_checked() {
        let err = Target::parse_kubectl("proxy/http://db").expect_err("scheme");
        assert!(matches!(err, SpecError::InvalidHost { .. }));
        assert!(err.to_string().contains("scheme"), "{err}");
        assert!(Target::parse_kubectl("proxy/db:5432").is_err());
    }

    #[test]
    fn bad_selectors_are_reported() {
        assert!(matches!(
            Target::parse_kubectl("pod?app in web"),
            Err(SpecError::InvalidSelector { .. })
        ));
        assert!(matches!(
            Target::parse_kubectl("pod?"),
            Err(SpecError::InvalidSelector { .. })
        ));
    }
}
