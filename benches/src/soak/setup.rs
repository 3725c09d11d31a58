//! The soak's cluster objects and the `kforward run` file of its 20 forwards.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kforward_testkit::{Cluster, ECHO_IMAGE, UDP_ECHO_IMAGE};
use serde_json::{Value, json};

/// The namespace every soak object lives in.
pub const NAMESPACE: &str = "soak";
/// The external host the `proxy` forward reaches through the relay pod.
pub const EXTERNAL_HOST: &str = "soak.example.internal";
/// Apps whose pods the chaos loop kills.
pub const KILLABLE_APPS: &[&str] = &["echo-a", "echo-b", "echo-c", "db", "udp"];
/// The relay pods' label.
pub const RELAY_SELECTOR: &str = "app.kubernetes.io/name=kforward-relay";

/// What a forward carries, and so what traffic the harness sends through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    /// Long-lived TCP echo streams, checksummed; a killed pod of any of `apps` (or a cut
    /// stream) may end them.
    Echo {
        /// The `app` labels of the pods behind the forward.
        apps: Vec<&'static str>,
    },
    /// UDP echo datagrams.
    Udp,
    /// Short TCP connections to the external host, each read to its end.
    Hello,
}

/// One forward of the run file.
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    /// Its alias (the `forward` of kforward's events).
    pub alias: String,
    /// What goes through it.
    pub traffic: Traffic,
    /// The run file entry.
    pub entry: Value,
}

/// Creates the soak's workloads and waits until they are ready: three echo deployments of
/// three replicas behind services, an echo StatefulSet of three (its pods are forwarded by
/// name: a killed one comes back under the same name), a UDP echo deployment, and an
/// external host. Returns the external host's address.
///
/// # Errors
///
/// When an object cannot be created or does not turn ready in time.
pub async fn create(cluster: &Cluster) -> anyhow::Result<SocketAddr> {
    cluster.create_namespace(NAMESPACE)?;
    for app in ["echo-a", "echo-b", "echo-c"] {
        let d = kforward_testkit::deployment(app, ECHO_IMAGE, 3, &[("echo", 7000, "TCP")]);
        cluster.create_deployment(NAMESPACE, &d)?;
        let s =
            kforward_testkit::service(app, app, &[("echo", 7000, IntOrString::Int(7000), "TCP")]);
        cluster.create_service(NAMESPACE, &s)?;
    }
    let db = kforward_testkit::statefulset("db", ECHO_IMAGE, 3, "db", &[("db", 5432, "TCP")]);
    cluster.create_statefulset(NAMESPACE, &db)?;
    cluster.create_service(
        NAMESPACE,
        &kforward_testkit::headless_service("db", "db", &[("db", 5432)]),
    )?;
    let udp = kforward_testkit::deployment("udp", UDP_ECHO_IMAGE, 3, &[("dns", 5353, "UDP")]);
    cluster.create_deployment(NAMESPACE, &udp)?;
    cluster.create_service(
        NAMESPACE,
        &kforward_testkit::service(
            "udp",
            "udp",
            &[("dns", 5353, IntOrString::Int(5353), "UDP")],
        ),
    )?;
    let external = cluster.add_external_host(EXTERNAL_HOST, 80, None).await?;
    let limit = Duration::from_secs(60);
    for app in ["echo-a", "echo-b", "echo-c", "udp"] {
        cluster.wait_deployment_ready(NAMESPACE, app, limit).await?;
    }
    cluster
        .wait_statefulset_ready(NAMESPACE, "db", limit)
        .await?;
    cluster.settle(limit).await?;
    Ok(external)
}

/// The 20 forwards: twelve to echo services, deployments, a pod selector and a
/// StatefulSet, three to the
/// StatefulSet's pods by name, two UDP ones, one `proxy` to the external host and two
/// `proxy` ones to echo services by their cluster DNS names (through the relay pod).
pub fn forwards(external: SocketAddr) -> Vec<ForwardPlan> {
    let mut out = Vec::new();
    let mut add = |alias: String, traffic: Traffic, mut entry: Value| {
        entry["alias"] = json!(alias);
        entry["namespace"] = json!(NAMESPACE);
        entry["local_port"] = json!(0);
        entry["local_address"] = json!("127.0.0.1");
        out.push(ForwardPlan {
            alias,
            traffic,
            entry,
        });
    };
    let echo = |app: &'static str| Traffic::Echo { apps: vec![app] };
    for app in ["echo-a", "echo-b", "echo-c"] {
        for i in 1..=3 {
            add(
                format!("{app}-{i}"),
                echo(app),
                json!({"service": app, "remote_port": 7000}),
            );
        }
    }
    for i in 0..3 {
        add(
            format!("db-{i}"),
            echo("db"),
            json!({"workload_type": "pod", "service": format!("db-{i}"), "target": "",
                   "remote_port": 5432}),
        );
    }
    add(
        "selector-echo-b".into(),
        echo("echo-b"),
        json!({"workload_type": "pod", "service": "", "target": "app=echo-b", "remote_port": 7000}),
    );
    add(
        "deploy-echo-a".into(),
        echo("echo-a"),
        json!({"workload_type": "deployment", "service": "echo-a", "remote_port": 7000}),
    );
    add(
        "sts-db".into(),
        echo("db"),
        json!({"workload_type": "statefulset", "service": "db", "remote_port": 5432}),
    );
    for i in 1..=2 {
        add(
            format!("udp-{i}"),
            Traffic::Udp,
            json!({"service": "udp", "remote_port": 5353, "protocol": "udp"}),
        );
    }
    add(
        "external".into(),
        Traffic::Hello,
        json!({"workload_type": "proxy", "remote_address": EXTERNAL_HOST,
               "remote_port": external.port()}),
    );
    for app in ["echo-b", "echo-c"] {
        add(
            format!("relay-{app}"),
            Traffic::Echo {
                apps: vec![app, "relay"],
            },
            json!({"workload_type": "proxy",
                   "remote_address": format!("{app}.{NAMESPACE}.svc.cluster.local"),
                   "remote_port": 7000}),
        );
    }
    out
}

/// Writes the run file for `forwards`, every entry reading `kubeconfig`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_run_file(
    path: &Path,
    forwards: &[ForwardPlan],
    kubeconfig: &Path,
) -> anyhow::Result<()> {
    let entries: Vec<Value> = forwards
        .iter()
        .map(|f| {
            let mut e = f.entry.clone();
            e["kubeconfig"] = json!(kubeconfig.display().to_string());
            e
        })
        .collect();
    std::fs::write(path, serde_json::to_vec_pretty(&entries)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_forwards_with_unique_aliases() {
        let f = forwards("127.0.0.1:80".parse().expect("addr"));
        assert_eq!(f.len(), 20);
        let mut aliases: Vec<_> = f.iter().map(|f| f.alias.clone()).collect();
        aliases.sort();
        aliases.dedup();
        assert_eq!(aliases.len(), 20);
    }
}
