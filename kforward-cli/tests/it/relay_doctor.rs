//! `kforward doctor`, and relay pods that a real cluster would refuse or could not pull,
//! through the binary.

use std::path::PathBuf;
use std::process::Command;

use kforward_testkit::{Cluster, DEMO_EXTERNAL_HOST};

use crate::{Running, WAIT, http_get, kforward, run_to_end};

const MIRRORED: &str = "registry.corp.example:5000/tools/kforward-relay:0.1.0";
const RELAYS: &str = "app.kubernetes.io/name=kforward-relay";

fn doctor(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut c = kforward();
    c.arg("doctor")
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path());
    run_to_end(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_json_is_one_object_with_every_check_and_exit_0() {
    let cluster = Cluster::demo().await.expect("cluster");
    let (code, out, err) = tokio::task::block_in_place(|| doctor(&cluster, &["-o", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().expect("checks");
    for c in checks {
        assert!(
            c["name"].is_string() && c["ok"] == true && c["detail"].is_string(),
            "{c}"
        );
    }
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for want in [
        "api-server",
        "credentials",
        "server-version",
        "access: create pods/portforward",
        "access: list endpointslices.discovery.k8s.io",
        "access: create pods",
        "port-forward transports",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_denied_permissions_and_what_they_disable_and_exits_1() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.deny("create", "pods/portforward");
    cluster.deny("create", "pods");
    let (code, out, err) = tokio::task::block_in_place(|| doctor(&cluster, &[]));
    assert_eq!(code, 1, "{out}\n{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_string()
    };
    let pf = line("access: create pods/portforward");
    assert!(pf.contains("FAIL") && pf.contains("every forward"), "{pf}");
    let create = line("access: create pods");
    assert!(
        create.contains("WARN") && create.contains("UDP forwards and proxy forwards"),
        "{create}"
    );
    assert!(
        err.contains("error: 1 check failed: access: create pods/portforward"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_the_url_of_a_paused_api_server() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.pause();
    let (code, out, err) =
        tokio::task::block_in_place(|| doctor(&cluster, &["--request-timeout", "1s"]));
    cluster.resume();
    assert_eq!(code, 1, "{out}\n{err}");
    let api = out
        .lines()
        .find(|l| l.starts_with("api-server "))
        .expect("api-server line");
    assert!(
        api.contains("FAIL") && api.contains(&cluster.server_url()),
        "{api}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_relay_in_an_air_gapped_cluster_names_the_image() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.air_gap();
    let (code, out, err) =
        tokio::task::block_in_place(|| doctor(&cluster, &["--relay", "-o", "json"]));
    assert_eq!(code, 1, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let relay = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "relay"))
        .expect("relay check");
    assert_eq!(relay["ok"], false);
    let detail = relay["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&kforward_core::relay::default_image()) && detail.contains("--relay-image"),
        "{detail}"
    );
    // With a mirrored image the node has, the relay runs.
    cluster.preload_image(MIRRORED);
    let (code, out, err) =
        tokio::task::block_in_place(|| doctor(&cluster, &["--relay", "--relay-image", MIRRORED]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("relay ") && l.contains("was ready after")),
        "{out}"
    );
}

fn proxy(cluster: &Cluster, extra: &[&str]) -> Command {
    let ext = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("external host");
    let mut c = kforward();
    c.args([
        "proxy",
        &format!("{DEMO_EXTERNAL_HOST}:{}", ext.port()),
        "0",
        "-n",
        "demo",
    ])
    .args(["--address", "127.0.0.1", "-o", "json"])
    .args(extra)
    .arg("--kubeconfig")
    .arg(cluster.kubeconfig_path());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_air_gapped_fails_naming_the_image_and_works_with_a_mirrored_one() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.air_gap();
    // Bounded by `run_to_end`; kforward-core's relay_pods tests hold it to 10 s.
    let (code, _, err) = tokio::task::block_in_place(|| run_to_end(proxy(&cluster, &[])));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&kforward_core::relay::default_image()) && err.contains("--relay-image"),
        "{err}"
    );
    cluster.preload_image(MIRRORED);
    let mut cmd = proxy(&cluster, &[]);
    cmd.env("KFORWARD_RELAY_IMAGE", MIRRORED);
    let p = Running::spawn(cmd);
    let line = tokio::task::block_in_place(|| p.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let reply = http_get(v["local_addr"].as_str().expect("addr")).await;
    assert!(
        reply.contains("hello from private.example.internal"),
        "{reply}"
    );
    let pods = cluster.pods("demo", Some(RELAYS));
    let image = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone());
    assert_eq!(
        image.as_deref(),
        Some(MIRRORED),
        "KFORWARD_RELAY_IMAGE picked the image"
    );
}

/// The real kubectl, or `None` (after a note) outside CI.
fn kubectl() -> Option<PathBuf> {
    let found = match std::env::var("KUBECTL") {
        Ok(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/tools/install-kubectl");
            Command::new(&script)
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))
                .and_then(|o| {
                    let out = String::from_utf8_lossy(&o.stdout).to_string();
                    o.status
                        .success()
                        .then(|| PathBuf::from(out.lines().last().unwrap_or("").trim()))
                        .ok_or_else(|| String::from_utf8_lossy(&o.stderr).to_string())
                })
        }
    };
    match found {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("CI").is_some() => panic!("kubectl is required on CI: {e}"),
        Err(e) => {
            eprintln!("note: skipping a kubectl check, no kubectl: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_patch_and_pull_secret_show_up_on_the_relay_pod_in_kubectl() {
    let cluster = Cluster::demo().await.expect("cluster");
    let Some(kubectl) = tokio::task::block_in_place(kubectl) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let patch = dir.path().join("relay-patch.json");
    std::fs::write(
        &patch,
        r#"{
          "metadata": {"annotations": {"team": "platform"}},
          "spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tools", "effect": "NoSchedule"}],
            "containers": [{"name": "relay", "resources": {"limits": {"memory": "64Mi"}}}]
          }
        }"#,
    )
    .expect("write patch");
    let p = Running::spawn(proxy(
        &cluster,
        &[
            "--relay-pull-secret",
            "corp-registry",
            "--relay-pod-patch",
            patch.to_str().expect("utf-8 path"),
        ],
    ));
    let line = tokio::task::block_in_place(|| p.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert!(
        http_get(v["local_addr"].as_str().expect("addr"))
            .await
            .contains("hello from")
    );
    let mut get = Command::new(&kubectl);
    get.arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["get", "pods", "-n", "demo", "-l", RELAYS, "-o", "json"]);
    let (code, out, err) = tokio::task::block_in_place(|| run_to_end(get));
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl json");
    let pod = &list["items"][0];
    assert_eq!(
        pod["spec"]["imagePullSecrets"][0]["name"], "corp-registry",
        "{pod}"
    );
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["value"], "tools");
    assert_eq!(pod["metadata"]["annotations"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    let relay = &pod["spec"]["containers"][0];
    assert_eq!(relay["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(relay["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        relay["securityContext"]["allowPrivilegeEscalation"], false,
        "restricted stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_takes_relay_settings_from_entries_and_flags_and_gives_each_its_own_pods() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.air_gap();
    cluster.preload_image(MIRRORED);
    let kc = cluster.kubeconfig_path().display().to_string();
    let port = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("external host")
        .port();
    let entry = |alias: &str| {
        serde_json::json!({"alias": alias, "workload_type": "proxy",
            "remote_address": DEMO_EXTERNAL_HOST, "namespace": "demo", "local_port": 0,
            "remote_port": port, "local_address": "127.0.0.1", "kubeconfig": kc})
    };
    let mut own = entry("own");
    for (field, value) in [
        ("relay_image", serde_json::json!(MIRRORED)),
        ("relay_pull_policy", serde_json::json!("Never")),
        ("relay_pull_secrets", serde_json::json!(["corp-registry"])),
        (
            "relay_pod_patch",
            serde_json::json!({"metadata": {"annotations": {"team": "platform"}}}),
        ),
    ] {
        own[field] = value;
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("relays.json");
    std::fs::write(&file, serde_json::json!([own, entry("flags")]).to_string()).expect("write");
    let run = |extra: &[&str]| {
        let mut c = kforward();
        c.args(["run", "-o", "json", "-f"]).arg(&file).args(extra);
        c
    };

    // Without --relay-image, the entry that names no image gets the default one, which an
    // air-gapped cluster cannot pull: named, with the fields and flag that change it.
    let r = Running::spawn(run(&[]));
    let default = kforward_core::relay::default_image();
    let failed = tokio::task::block_in_place(|| r.line_with(&default));
    assert!(
        failed.contains("\"forward\":\"flags\"") && failed.contains("--relay-image"),
        "{failed}"
    );
    r.signal("-INT");
    let _ = tokio::task::block_in_place(|| r.wait());
    let relays = |c: &Cluster| c.pods("demo", Some(RELAYS)).len();
    cluster
        .wait_for("the first run's relay pods to go", WAIT, |c| relays(c) == 0)
        .await
        .expect("relay pods deleted after SIGINT");

    // With the flag, both run: the entry's own settings on one relay pod, the flag's on
    // another.
    let r = Running::spawn(run(&["--relay-image", MIRRORED]));
    let mut ready = std::collections::BTreeMap::new();
    while ready.len() < 2 {
        let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        ready.insert(
            v["forward"].as_str().expect("forward").to_string(),
            v["local_addr"].as_str().expect("addr").to_string(),
        );
    }
    for addr in ready.values() {
        let reply = http_get(addr).await;
        assert!(
            reply.contains("hello from private.example.internal"),
            "{reply}"
        );
    }
    let pods = cluster.pods("demo", Some(RELAYS));
    assert_eq!(pods.len(), 2, "one relay pod per relay settings");
    let own_pod = pods
        .iter()
        .find(|p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get("team").map(String::as_str) == Some("platform"))
        })
        .expect("the entry's patch is on one pod");
    let spec = own_pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.image_pull_secrets.as_ref().expect("secrets")[0].name,
        "corp-registry"
    );
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Never")
    );
    for p in &pods {
        let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone());
        assert_eq!(image.as_deref(), Some(MIRRORED));
    }
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}
