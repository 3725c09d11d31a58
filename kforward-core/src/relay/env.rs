//! The environment of relay pods: the variables the user gives them (`--relay-env`, the
//! config file's `relay.env`, the C ABI's `relay_env`), checked, with a default `NO_PROXY`
//! when they set an egress proxy without one.
//!
//! A relay whose pod has `HTTPS_PROXY` reaches TCP destinations through it
//! (`kforward_relay::egress`). Without `NO_PROXY` that would send cluster-internal
//! destinations to the proxy too, which cannot reach them; so, as the usual advice for pods
//! behind a proxy goes, kforward keeps loopback, cluster names (`.svc`, the cluster domain)
//! and the cluster's service and pod ranges direct. The ranges are read from the cluster
//! when it lets us: `ServiceCIDR` objects (Kubernetes 1.33 and later) and the nodes'
//! `podCIDRs`; a cluster that refuses either is served without it (names still match).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Node};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kforward_relay::egress::{Egress, NO_PROXY_VARS, PROXY_VARS};
use kube::api::{Api, ListParams};
use tracing::debug;

use crate::client::KubeContext;

/// The cluster domain most clusters use; names under it are the cluster's own.
const CLUSTER_DOMAIN: &str = "cluster.local";

/// Variables kforward sets on relay pods itself, which `--relay-env` may not replace.
const RESERVED: [&str; 3] = [
    "KFORWARD_RELAY_TOKEN",
    "KFORWARD_RELAY_PORT",
    kforward_relay::server::IDLE_EXIT_ENV,
];

/// Checks variables given for relay pods: names that are valid environment variable names
/// and not kforward's own, and an egress proxy the relay can use (`http://`).
///
/// # Errors
///
/// A message naming the variable and what is wrong.
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use kforward_core::relay::check_relay_env;
/// let ok = BTreeMap::from([("HTTPS_PROXY".to_string(), "http://proxy.corp:3128".to_string())]);
/// assert!(check_relay_env(&ok).is_ok());
/// let socks = BTreeMap::from([("HTTPS_PROXY".to_string(), "socks5://proxy.corp:1080".to_string())]);
/// assert!(check_relay_env(&socks).unwrap_err().contains("http://"));
/// ```
pub fn check_relay_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for name in env.keys() {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            return Err(format!(
                "relay environment variable {name:?} is not a valid name (letters, digits, '_', '-' and '.', not starting with a digit)"
            ));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "relay environment variable {name} is set by kforward itself and cannot be given"
            ));
        }
    }
    Egress::from_env(|k| env.get(k).cloned())
        .map(|_| ())
        .map_err(|e| format!("relay environment: {e}"))
}

/// Whether `env` gives the relay an egress proxy.
fn has_proxy(env: &BTreeMap<String, String>) -> bool {
    PROXY_VARS
        .iter()
        .any(|v| env.get(*v).is_some_and(|s| !s.trim().is_empty()))
}

/// The `NO_PROXY` kforward gives relay pods that have a proxy and no `NO_PROXY`: loopback,
/// cluster names, and `ranges` (the cluster's service and pod CIDRs).
///
/// # Example
///
/// ```
/// let v = kforward_core::relay::default_relay_no_proxy(&["10.96.0.0/12".to_string()]);
/// assert_eq!(v, "localhost,127.0.0.1,::1,.svc,.cluster.local,10.96.0.0/12");
/// ```
pub fn default_relay_no_proxy(ranges: &[String]) -> String {
    let mut rules: Vec<String> = ["localhost", "127.0.0.1", "::1", ".svc"]
        .iter()
        .map(ToString::to_string)
        .collect();
    rules.push(format!(".{CLUSTER_DOMAIN}"));
    rules.extend(ranges.iter().cloned());
    rules.join(",")
}

/// The service and pod ranges of the cluster, as far as it lets us read them.
async fn cluster_ranges(ctx: &KubeContext) -> Vec<String> {
    let mut ranges = Vec::new();
    let cidrs: Api<ServiceCIDR> = Api::all(ctx.client().clone());
    match cidrs.list(&ListParams::default()).await {
        Ok(list) => ranges.extend(
            list.items
                .into_iter()
                .filter_map(|c| c.spec)
                .flat_map(|s| s.cidrs.unwrap_or_default()),
        ),
        Err(e) => debug!(error = %e, "no ServiceCIDRs for the relay's NO_PROXY"),
    }
    let nodes: Api<Node> = Api::all(ctx.client().clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => ranges.extend(list.items.into_iter().filter_map(|n| n.spec).flat_map(|s| {
            s.pod_cidrs
                .or(s.pod_cidr.map(|c| vec![c]))
                .unwrap_or_default()
        })),
        Err(e) => debug!(error = %e, "no node pod ranges for the relay's NO_PROXY"),
    }
    ranges.sort();
    ranges.dedup();
    ranges
}

/// The environment variables for a relay pod from `env`: as given, plus the default
/// `NO_PROXY` when they set a proxy without one.
pub(crate) async fn relay_pod_env(
    ctx: &KubeContext,
    env: &BTreeMap<String, String>,
) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .collect();
    let has_no_proxy = NO_PROXY_VARS.iter().any(|v| env.contains_key(*v));
    if has_proxy(env) && !has_no_proxy {
        let value = default_relay_no_proxy(&cluster_ranges(ctx).await);
        debug!(no_proxy = %value, "relay pods keep these destinations off the egress proxy");
        vars.push(EnvVar {
            name: "NO_PROXY".into(),
            value: Some(value),
            ..Default::default()
        });
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_names_kforwards_own_and_unusable_proxies_are_refused() {
        assert!(check_relay_env(&env(&[("NO_PROXY", ".corp"), ("FOO_1", "x")])).is_ok());
        for (bad, why) in [
            (env(&[("1X", "v")]), "not a valid name"),
            (env(&[("A B", "v")]), "not a valid name"),
            (env(&[("KFORWARD_RELAY_TOKEN", "v")]), "set by kforward"),
            (env(&[("https_proxy", "https://p:443")]), "https proxy"),
            (env(&[("HTTPS_PROXY", "ftp://u:pw@p")]), "ftp"),
        ] {
            let e = check_relay_env(&bad).expect_err("refused");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }
}
