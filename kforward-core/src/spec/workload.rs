//! The kind of thing a kftray-style config forwards to: a service, a pod, a workload
//! (deployment, statefulset, replicaset), any address (proxy), or whatever each client
//! names (socks, a forward proxy).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SpecError;

/// kftray's `workload_type`: what the `service`/`target`/`remote_address` fields of a config
/// name. kftray's own values are `service`, `pod` and `proxy`; `deployment`, `statefulset` and
/// `replicaset` are kforward's, for the other targets `kubectl port-forward` takes (the name
/// goes in `service`, as a pod's does).
///
/// Written in lowercase, read case-insensitively; the default is [`WorkloadType::Service`].
///
/// # Example
///
/// ```
/// use kforward_core::spec::WorkloadType;
///
/// assert_eq!("proxy".parse::<WorkloadType>()?, WorkloadType::Proxy);
/// assert_eq!(WorkloadType::default(), WorkloadType::Service);
/// assert_eq!(serde_json::to_string(&WorkloadType::Pod)?, r#""pod""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadType {
    /// `service` names a Service; traffic goes to one of its ready pods (the default).
    #[default]
    Service,
    /// `target` is a pod label selector, or else `service` names a pod.
    Pod,
    /// `remote_address` is a host reached from inside the cluster, through the relay.
    Proxy,
    /// `service` names a Deployment; traffic goes to one of its ready pods.
    Deployment,
    /// `service` names a StatefulSet; traffic goes to the ready pod `kubectl port-forward`
    /// would take, kept while it stays ready.
    StatefulSet,
    /// `service` names a ReplicaSet; traffic goes to one of its ready pods.
    ReplicaSet,
    /// A forward proxy into the cluster on `local_address`:`local_port` (SOCKS5, SOCKS4a,
    /// HTTP): each client names its destination; `auth`, `direct`, `no_relay` and
    /// `cluster_domain` set it up.
    Socks,
}

impl WorkloadType {
    /// Every workload type, in the order error messages list them.
    pub(crate) const ALL: [WorkloadType; 7] = [
        WorkloadType::Service,
        WorkloadType::Pod,
        WorkloadType::Proxy,
        WorkloadType::Deployment,
        WorkloadType::StatefulSet,
        WorkloadType::ReplicaSet,
        WorkloadType::Socks,
    ];

    /// The lowercase name, as written in config files.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::WorkloadType;
    ///
    /// assert_eq!(WorkloadType::Proxy.as_str(), "proxy");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadType::Service => "service",
            WorkloadType::Pod => "pod",
            WorkloadType::Proxy => "proxy",
            WorkloadType::Deployment => "deployment",
            WorkloadType::StatefulSet => "statefulset",
            WorkloadType::ReplicaSet => "replicaset",
            WorkloadType::Socks => "socks",
        }
    }
}

impl fmt::Display for WorkloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkloadType {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        WorkloadType::ALL
            .into_iter()
            .find(|w| s.eq_ignore_ascii_case(w.as_str()))
            .ok_or_else(|| SpecError::UnknownWorkloadType {
                value: s.to_owned(),
            })
    }
}

impl Serialize for WorkloadType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkloadType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_case_insensitively() {
        for (text, want) in [
            ("service", WorkloadType::Service),
            ("Service", WorkloadType::Service),
            ("pod", WorkloadType::Pod),
            ("POD", WorkloadType::Pod),
            ("proxy", WorkloadType::Proxy),
            ("StatefulSet", WorkloadType::StatefulSet),
            ("replicaset", WorkloadType::ReplicaSet),
            ("deployment", WorkloadType::Deployment),
            ("SOCKS", WorkloadType::Socks),
        ] {
            assert_eq!(text.parse::<WorkloadType>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_unknown_kinds_listing_the_choices() {
        let text = "job".parse::<WorkloadType>().expect_err("job").to_string();
        for word in [
            "\"job\"",
            "service",
            "pod",
            "proxy",
            "deployment",
            "statefulset",
            "replicaset",
        ] {
            assert!(text.contains(word), "{text}");
        }
    }

    #[test]
    fn serde_round_trip() {
        for w in WorkloadType::ALL {
            let json = serde_json::to_string(&w).expect("serialize");
            assert_eq!(json, format!("\"{w}\""));
            assert_eq!(
                serde_json::from_str::<WorkloadType>(&json).expect("parse"),
                w
            );
        }
    }
}
