//! A `kforward` that owns relay pods dies by `kill -9` (no clean-up runs): `kforward gc`
//! leaves its pods alone while their heartbeat is fresh and removes them once it is stale,
//! and a relay pod nobody removes exits by itself at its idle timeout. Short staleness and
//! idle timeouts (`--stale-after`, `--relay-idle-exit`) stand for the defaults (2 and 10
//! minutes); the times are printed for the README.

use std::time::{Duration, Instant};

use kforward_testkit::{Cluster, DEMO_EXTERNAL_HOST};

use crate::{Running, WAIT, http_get, kforward, run_to_end};

const RELAYS: &str = "app.kubernetes.io/name=kforward-relay";

/// Relay pods of demo not being deleted, with their phase.
fn relays(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .pods("demo", Some(RELAYS))
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), phase)
        })
        .collect()
}

/// Starts `kforward run` with one `proxy` forward to the demo's external host (so it owns
/// a relay pod) and `extra` flags, checks that it carries a request, and returns it with
/// its relay pod's name.
async fn owner(cluster: &Cluster, extra: &[&str]) -> (Running, String) {
    let ext = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("external host");
    let file_text = serde_json::json!([{
        "alias": "ext", "workload_type": "proxy", "remote_address": DEMO_EXTERNAL_HOST,
        "namespace": "demo", "local_port": 0, "remote_port": ext.port(),
        "local_address": "127.0.0.1",
        "kubeconfig": cluster.kubeconfig_path().display().to_string(),
    }])
    .to_string();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("relay.json");
    std::fs::write(&file, file_text).expect("write");
    let r = Running::spawn({
        let mut c = kforward();
        c.args(["run", "-o", "json"])
            .args(extra)
            .arg("-f")
            .arg(&file);
        c
    });
    let ready = tokio::task::block_in_place(|| r.ready_addrs(1));
    let reply = http_get(&ready["ext"]).await;
    assert!(reply.contains("hello from"), "{reply}");
    let pods = relays(cluster);
    assert_eq!(pods.len(), 1, "{pods:?}");
    (r, pods[0].0.clone())
}

fn gc(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut c = kforward();
    c.args(["gc", "-n", "demo"])
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path());
    tokio::task::block_in_place(|| run_to_end(c))
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_pods_of_a_killed_kforward_go_by_gc_once_stale_and_exit_when_idle() {
    let cluster = Cluster::demo().await.expect("cluster");

    // Default idle timeout (10 min): only gc removes the pod.
    let (mut r, pod) = owner(&cluster, &[]).await;
    r.signal("-KILL");
    let _ = tokio::task::block_in_place(|| r.child.wait());
    let killed = Instant::now();
    let (code, out, err) = gc(&cluster, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "a fresh heartbeat is kept: {out}");
    assert!(err.contains("no stale relay pods"), "{err}");
    assert_eq!(relays(&cluster), [(pod.clone(), "Running".to_string())]);
    // A heartbeat older than 1 s is stale here: gc removes the pod within a second or two
    // of the kill (the owner's last heartbeat was its creation, just before).
    let deadline = killed + WAIT;
    let removed = loop {
        let (code, out, err) = gc(&cluster, &["--stale-after", "1s"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("shorter than the sessions' heartbeat"),
            "{err}"
        );
        if out.trim() == format!("pod/demo/{pod} deleted") {
            break killed.elapsed();
        }
        assert!(out.is_empty(), "{out}");
        assert!(Instant::now() < deadline, "gc never removed {pod}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(relays(&cluster).is_empty(), "{:?}", relays(&cluster));
    eprintln!(
        "kill -9 to gc removing the relay pod (--stale-after 1s): {:.1} s",
        removed.as_secs_f64()
    );

    // A 2 s idle timeout: the relay exits by itself once the killed owner's streams are
    // gone, its pod completes, and gc (default staleness) removes the completed pod.
    let (mut r, pod) = owner(&cluster, &["--relay-idle-exit", "2s"]).await;
    r.signal("-KILL");
    let _ = tokio::task::block_in_place(|| r.child.wait());
    let killed = Instant::now();
    cluster
        .wait_for("the relay to exit by itself", WAIT, |c| {
            relays(c) == [(pod.clone(), "Succeeded".to_string())]
        })
        .await
        .expect("the idle relay exits");
    eprintln!(
        "kill -9 to the relay exiting by itself (--relay-idle-exit 2s): {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    let (code, out, err) = gc(&cluster, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("pod/demo/{pod} deleted"), "{err}");
    assert!(relays(&cluster).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_idle_timeout_is_refused_with_the_flag_named() {
    let (code, out, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args([
            "proxy",
            "--relay-idle-exit",
            "0s",
            "-n",
            "demo",
            "db.example.com:5432",
        ]);
        run_to_end(c)
    });
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("--relay-idle-exit 0"), "{err}");
}
