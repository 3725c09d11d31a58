//! The `kforward` binary end to end: real processes, real sockets, the testkit cluster.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod proxy;
mod workloads;

const WAIT: Duration = Duration::from_secs(30);

mod relay_crash;
mod relay_doctor;
mod soak;

fn kforward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kforward"));
    c.env_remove("KUBECONFIG").env("NO_COLOR", "1");
    c
}

/// A child whose stdout lines arrive on a channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kforward starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The first stdout line containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} in time: {e}"),
            }
        }
    }

    /// The local address of each of the first `n` forwards to say `ready` (`-o json`), by
    /// forward name.
    fn ready_addrs(&self, n: usize) -> std::collections::BTreeMap<String, String> {
        let mut ready = std::collections::BTreeMap::new();
        while ready.len() < n {
            let line = self.line_with("\"event\":\"ready\"");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            ready.insert(
                v["forward"].as_str().expect("forward").to_string(),
                v["local_addr"].as_str().expect("addr").to_string(),
            );
        }
        ready
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "signal delivered");
    }

    /// Waits for the exit status, bounded.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status, err);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kforward did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(addr: &str) -> String {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("reply in time")
}

/// `GET http://HOST/` through the forward proxy at `proxy`, in absolute form.
async fn http_get_via(proxy: &str, host: &str) -> String {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        let req =
            format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("reply in time")
}

/// Runs `cmd` to its end with its output captured, bounded by [`WAIT`].
fn output_within(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(WAIT)
        .expect("exits in time")
        .expect("output")
}

fn run_to_end(mut cmd: Command) -> (i32, String, String) {
    let out = output_within(&mut cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_and_stops_on_ctrl_c() {
    let r = Running::spawn({
        let mut c = kforward();
        c.arg("demo");
        c
    });
    let line = tokio::task::block_in_place(|| r.line_with("curl http://"));
    let url = line
        .split("http://")
        .nth(1)
        .expect("url")
        .trim_end_matches('/')
        .to_string();
    let reply = http_get(&url).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("\r\n\r\nweb-"),
        "{reply}"
    );
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}

/// `kforward forward svc/web :80 -n demo --address 127.0.0.1 -o json` on `cluster`.
fn forward_web_json(cluster: &Cluster) -> Command {
    forward_json(cluster, "svc/web", ":80")
}

/// `kforward forward TARGET PORT -n demo --address 127.0.0.1 -o json` on `cluster`.
fn forward_json(cluster: &Cluster, target: &str, port: &str) -> Command {
    let mut c = kforward();
    c.args([
        "forward",
        target,
        port,
        "-n",
        "demo",
        "--address",
        "127.0.0.1",
        "-o",
        "json",
        "--kubeconfig",
    ])
    .arg(cluster.kubeconfig_path());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_json_reports_the_chosen_port_and_carries_traffic() {
    let cluster = Cluster::demo().await.expect("cluster");
    let r = Running::spawn(forward_web_json(&cluster));
    let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["target"], "svc/web");
    assert_eq!(v["pod_port"], 8080);
    let addr = v["local_addr"].as_str().expect("local_addr").to_string();
    assert!(http_get(&addr).await.contains("\r\n\r\nweb-"));
    let opened = tokio::task::block_in_place(|| r.line_with("connection_opened"));
    assert!(opened.contains("\"pod\":\"web-"), "{opened}");
    r.signal("-TERM");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_client_stacks_carry_traffic_and_the_environment_picks_one() {
    let cluster = Cluster::demo().await.expect("cluster");
    for (env, stack) in [(None, "kforward's"), (Some("stock"), "kube's stock")] {
        let mut c = forward_web_json(&cluster);
        c.env("RUST_LOG", "kforward_core::client=debug");
        match env {
            Some(v) => c.env("KFORWARD_KUBE_CLIENT", v),
            None => c.env_remove("KFORWARD_KUBE_CLIENT"),
        };
        let r = Running::spawn(c);
        let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let addr = v["local_addr"].as_str().expect("local_addr").to_string();
        // Several connections one after another: with kforward's stack the later ones
        // take the spare connection made while the earlier ones ran.
        for _ in 0..5 {
            assert!(http_get(&addr).await.contains("\r\n\r\nweb-"), "{stack}");
        }
        r.signal("-TERM");
        let (status, err) = tokio::task::block_in_place(|| r.wait());
        assert!(status.success(), "{status:?}");
        assert!(
            err.contains(&format!("stack=\"{stack}\"")),
            "{stack}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_text_prints_kubectl_lines_for_both_loopbacks() {
    let cluster = Cluster::demo().await.expect("cluster");
    let r = Running::spawn({
        let mut c = kforward();
        c.args([
            "forward",
            "deploy/web",
            "0:http",
            "-n",
            "demo",
            "--kubeconfig",
        ])
        .arg(cluster.kubeconfig_path());
        c
    });
    let first = tokio::task::block_in_place(|| r.line_with("Forwarding from"));
    assert!(
        first.starts_with("Forwarding from 127.0.0.1:") && first.ends_with(" -> 8080"),
        "{first}"
    );
    let second = tokio::task::block_in_place(|| r.line_with("Forwarding from"));
    assert!(
        second.starts_with("Forwarding from [::1]:") && second.ends_with(" -> 8080"),
        "{second}"
    );
    let port = first
        .split(':')
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .expect("port")
        .to_string();
    assert!(
        second.contains(&format!("]:{port} ")),
        "same port on both: {first} / {second}"
    );
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_exit_1_with_actionable_messages() {
    let cluster = Cluster::demo().await.expect("cluster");
    let kc = cluster.kubeconfig_path().to_path_buf();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, _, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args([
            "forward",
            "svc/web",
            &format!("{port}:80"),
            "-n",
            "demo",
            "--address",
            "127.0.0.1",
            "--kubeconfig",
        ])
        .arg(&kc);
        run_to_end(c)
    });
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "local port 127.0.0.1:{port} is already in use (try 0:80 to pick a free one)"
        )),
        "{err}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args([
            "forward",
            "svc/web",
            "80",
            "--context",
            "nope",
            "--kubeconfig",
        ])
        .arg(&kc);
        run_to_end(c)
    });
    assert_eq!(code, 1);
    assert!(
        err.contains("context \"nope\" does not exist in the kubeconfig (contexts there: "),
        "{err}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args(["forward", "rs/web", "80"]);
        run_to_end(c)
    });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rs/web"), "{err}");
}

#[test]
fn completions_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_to_end({
            let mut c = kforward();
            c.args(["completions", shell]);
            c
        });
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("kforward") && out.contains("forward"),
            "{shell}: {out}"
        );
    }
}

/// A kftray export file, with the extra fields kftray writes.
fn kftray_export(kubeconfig: &std::path::Path, context: &str) -> String {
    let kc = kubeconfig.display();
    format!(
        r#"[
  {{"id": 1, "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80,
    "context": "{context}", "workload_type": "service", "protocol": "tcp", "remote_address": "",
    "local_address": "127.0.0.1", "alias": "web", "domain_enabled": false, "kubeconfig": "{kc}",
    "target": "", "http_logs_enabled": false, "http_logs_max_file_size": 10485760}},
  {{"id": 2, "service": "echo", "namespace": "demo", "local_port": 0, "remote_port": 7000,
    "context": "{context}", "workload_type": "service", "protocol": "tcp", "alias": "echo",
    "domain_enabled": true, "kubeconfig": "{kc}", "http_logs_enabled": true}},
  {{"id": 3, "service": null, "namespace": "demo", "local_port": 0, "remote_port": 8080,
    "context": "{context}", "workload_type": "pod", "protocol": "tcp", "alias": "web-pod",
    "target": "app=web", "kubeconfig": "{kc}", "domain_enabled": false}}
]"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn run_loads_a_kftray_export_and_starts_every_entry() {
    let cluster = Cluster::demo().await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("configs.json");
    std::fs::write(
        &file,
        kftray_export(cluster.kubeconfig_path(), cluster.name()),
    )
    .expect("write");
    let r = Running::spawn({
        let mut c = kforward();
        c.args(["run", "-o", "json", "-f"]).arg(&file);
        c
    });
    let ready = tokio::task::block_in_place(|| r.ready_addrs(3));
    assert_eq!(
        ready.keys().cloned().collect::<Vec<_>>(),
        vec!["echo", "web", "web-pod"]
    );
    assert!(http_get(&ready["web"]).await.contains("\r\n\r\nweb-"));
    assert!(http_get(&ready["web-pod"]).await.contains("\r\n\r\nweb-"));
    let mut s = tokio::net::TcpStream::connect(&ready["echo"])
        .await
        .expect("connect");
    s.write_all(b"hi").await.expect("write");
    let mut b = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .expect("in time")
        .expect("read");
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reports_every_bad_entry_before_starting_anything() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"[
  {"alias": "ok", "service": "web", "namespace": "demo", "remote_port": 80},
  {"alias": "db", "service": "db", "namespace": "demo", "remote_port": 0},
  {"alias": "x", "namespace": "Demo!", "workload_type": "proxy", "remote_port": 5432}
]"#,
    )
    .expect("write");
    let (code, out, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args(["run", "-f"]).arg(&file);
        run_to_end(c)
    });
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("entry 1 (alias \"db\")") && err.contains("remote_port"),
        "{err}"
    );
    assert!(
        err.contains("entry 2 (alias \"x\")") && err.contains("namespace"),
        "{err}"
    );
    assert!(err.contains("remote_address"), "{err}");
    assert!(!out.contains("ready"), "nothing started: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_on_a_terminal_draws_a_live_table() {
    let cluster = Cluster::demo().await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("configs.json");
    std::fs::write(
        &file,
        kftray_export(cluster.kubeconfig_path(), cluster.name()),
    )
    .expect("write");
    // `script` (util-linux) gives kforward a pseudo-terminal, as a user's shell would.
    let cmd = format!(
        "NO_COLOR=1 {} run -f {}",
        env!("CARGO_BIN_EXE_kforward"),
        file.display()
    );
    let r = Running::spawn({
        let mut c = Command::new("script");
        c.args(["-qfec", &cmd, "/dev/null"]);
        c
    });
    tokio::task::block_in_place(|| r.line_with("ALIAS"));
    let row = tokio::task::block_in_place(|| r.line_with("ready"));
    assert!(row.contains("svc/") || row.contains("pod?app=web"), "{row}");
    // Redrawn in place: the cursor moves up over the previous table.
    let redraw = tokio::task::block_in_place(|| r.line_with("\u{1b}["));
    assert!(redraw.contains('A'), "{redraw:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_mixes_tcp_udp_and_proxy_entries_on_one_relay_pod() {
    let cluster = Cluster::demo().await.expect("cluster");
    let kc = cluster.kubeconfig_path().display().to_string();
    let ext_port = cluster
        .external_host_addr(kforward_testkit::DEMO_EXTERNAL_HOST)
        .expect("external host")
        .port();
    let file_text = serde_json::json!([
        {"alias": "web", "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80,
         "local_address": "127.0.0.1", "kubeconfig": kc},
        {"alias": "dns", "service": "dns", "namespace": "demo", "local_port": 0, "remote_port": 5353,
         "protocol": "udp", "local_address": "127.0.0.1", "kubeconfig": kc},
        {"alias": "private", "workload_type": "proxy", "remote_address": "private.example.internal",
         "namespace": "demo", "local_port": 0, "remote_port": ext_port, "local_address": "127.0.0.1",
         "kubeconfig": kc},
    ])
    .to_string();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("mixed.json");
    std::fs::write(&file, file_text).expect("write");
    let r = Running::spawn({
        let mut c = kforward();
        c.args(["run", "-o", "json", "-f"]).arg(&file);
        c
    });
    let ready = tokio::task::block_in_place(|| r.ready_addrs(3));
    assert!(http_get(&ready["web"]).await.contains("\r\n\r\nweb-"));
    let reply = http_get(&ready["private"]).await;
    assert!(
        reply.contains("hello from private.example.internal"),
        "{reply}"
    );
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    udp.connect(&ready["dns"]).await.expect("connect");
    udp.send(b"ping").await.expect("send");
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(WAIT, udp.recv(&mut b))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&b[..n], b"ping");
    let relays = |c: &Cluster| {
        c.pods("demo", Some("app.kubernetes.io/name=kforward-relay"))
            .len()
    };
    assert_eq!(
        relays(&cluster),
        1,
        "the UDP and proxy entries share one relay pod"
    );
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
    cluster
        .wait_for("the relay pod to be deleted", WAIT, |c| relays(c) == 0)
        .await
        .expect("relay pod deleted after SIGINT");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_and_udp_forward_commands_go_through_a_relay_pod_removed_on_exit() {
    let cluster = Cluster::demo().await.expect("cluster");
    let ext = cluster
        .external_host_addr(kforward_testkit::DEMO_EXTERNAL_HOST)
        .expect("external host");
    let relays = |c: &Cluster| {
        c.pods("demo", Some("app.kubernetes.io/name=kforward-relay"))
            .len()
    };
    // TCP to an address only the cluster can reach.
    let proxy = Running::spawn({
        let mut c = kforward();
        c.args([
            "proxy",
            &format!("private.example.internal:{}", ext.port()),
            "0",
            "-n",
            "demo",
        ])
        .args(["--address", "127.0.0.1", "-o", "json", "--kubeconfig"])
        .arg(cluster.kubeconfig_path());
        c
    });
    let line = tokio::task::block_in_place(|| proxy.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let reply = http_get(v["local_addr"].as_str().expect("addr")).await;
    assert!(
        reply.contains("hello from private.example.internal to 127."),
        "{reply}"
    );
    // UDP to a service.
    let udp = Running::spawn({
        let mut c = kforward();
        c.args([
            "forward",
            "svc/dns",
            ":5353",
            "--udp",
            "-n",
            "demo",
            "--address",
            "127.0.0.1",
            "-o",
            "json",
        ])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path());
        c
    });
    let line = tokio::task::block_in_place(|| udp.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    sock.connect(v["local_addr"].as_str().expect("addr"))
        .await
        .expect("connect");
    sock.send(b"repeat=2;hi").await.expect("send");
    let mut b = [0u8; 64];
    for _ in 0..2 {
        let n = tokio::time::timeout(WAIT, sock.recv(&mut b))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(&b[..n], b"repeat=2;hi");
    }
    assert!(relays(&cluster) >= 1, "relay pods are in use");
    proxy.signal("-INT");
    udp.signal("-TERM");
    let (s1, _) = tokio::task::block_in_place(|| proxy.wait());
    let (s2, _) = tokio::task::block_in_place(|| udp.wait());
    assert!(s1.success() && s2.success(), "{s1:?} {s2:?}");
    cluster
        .wait_for("relay pods to be deleted", WAIT, |c| relays(c) == 0)
        .await
        .expect("relay pods deleted on exit");
}

/// A relay pod as a session would have left it, with its heartbeat `age_secs` old.
fn relay_pod(
    name: &str,
    session: &str,
    age_secs: u64,
    image: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "kforward-relay",
                "app.kubernetes.io/managed-by": "kforward",
                "kforward.dev/session": session,
            },
            "annotations": {"kforward.dev/heartbeat": (now - age_secs).to_string()},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "relay",
                "image": image,
                "env": [
                    {"name": "KFORWARD_RELAY_TOKEN", "value": "t"},
                    {"name": "KFORWARD_RELAY_PORT", "value": "7311"},
                    {"name": "KFORWARD_RELAY_IDLE_EXIT", "value": "0.2"},
                ],
            }],
        },
    }))
    .expect("pod")
}

fn names(cluster: &Cluster, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = cluster
        .pods(ns, None)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_relay_pods_of_dead_sessions_and_exited_relays_only() {
    let cluster = Cluster::demo().await.expect("cluster");
    cluster.create_namespace("other").expect("namespace");
    let sleep = "kforward/sleep:1";
    let relay = "ghcr.io/kforward/kforward-relay:test";
    for (ns, pod) in [
        ("demo", relay_pod("relay-stale", "dead1", 3600, sleep)),
        ("demo", relay_pod("relay-live", "live1", 5, sleep)),
        // A live session's relay that exited when idle: its pod completes.
        ("demo", relay_pod("relay-exited", "live2", 5, relay)),
        ("other", relay_pod("relay-stale", "dead2", 3600, sleep)),
    ] {
        cluster.create_pod(ns, &pod).expect("create pod");
    }
    cluster
        .wait_for("the idle relay to exit", WAIT, |c| {
            c.pods("demo", None).iter().any(|p| {
                p.metadata.name.as_deref() == Some("relay-exited")
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            })
        })
        .await
        .expect("relay pod completed");
    let before_demo = names(&cluster, "demo");
    let gc = |args: &[&str]| {
        let mut c = kforward();
        c.arg("gc")
            .args(args)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path());
        tokio::task::block_in_place(|| run_to_end(c))
    };

    let (code, out, err) = gc(&["-n", "demo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "pod/demo/relay-exited deleted",
            "pod/demo/relay-stale deleted"
        ],
        "{err}"
    );
    let after: Vec<String> = before_demo
        .into_iter()
        .filter(|n| n != "relay-exited" && n != "relay-stale")
        .collect();
    assert_eq!(
        names(&cluster, "demo"),
        after,
        "the demo's own pods and the live relay stay"
    );
    assert_eq!(
        names(&cluster, "other"),
        ["relay-stale"],
        "-n demo leaves other namespaces alone"
    );

    let (code, out, err) = gc(&["--all-namespaces"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "pod/other/relay-stale deleted", "{err}");
    assert!(names(&cluster, "other").is_empty());
    assert!(names(&cluster, "demo").contains(&"relay-live".to_string()));

    let (code, out, err) = gc(&["--all-namespaces"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no stale relay pods"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_fills_kubeconfig_context_and_namespace_of_entries_that_lack_them() {
    let cluster = Cluster::demo().await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bare.json");
    // No namespace, context or kubeconfig in the file: the flags give them.
    std::fs::write(
        &file,
        r#"[{"alias": "web", "service": "web", "local_port": 0, "remote_port": 80,
             "local_address": "127.0.0.1"},
            {"alias": "dns", "service": "dns", "local_port": 0, "remote_port": 5353,
             "protocol": "udp", "local_address": "127.0.0.1", "context": ""}]"#,
    )
    .expect("write");
    let r = Running::spawn({
        let mut c = kforward();
        c.args([
            "run",
            "-o",
            "json",
            "-n",
            "demo",
            "--context",
            cluster.name(),
        ])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .arg("-f")
        .arg(&file);
        c
    });
    let mut ready = std::collections::BTreeMap::new();
    while ready.len() < 2 {
        let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["namespace"], "demo", "{v}");
        ready.insert(
            v["forward"].as_str().expect("forward").to_string(),
            v["local_addr"].as_str().expect("addr").to_string(),
        );
    }
    assert!(http_get(&ready["web"]).await.contains("\r\n\r\nweb-"));
    r.signal("-INT");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_to_a_missing_service_and_udp_with_a_proxy_header_fail_before_forwarding() {
    let cluster = Cluster::demo().await.expect("cluster");
    let kc = cluster.kubeconfig_path().to_path_buf();
    let forward = |extra: &[&str]| {
        let mut c = kforward();
        c.args(["forward", "--udp", "-n", "demo", "--kubeconfig"])
            .arg(&kc)
            .args(extra);
        tokio::task::block_in_place(|| run_to_end(c))
    };
    let (code, out, err) = forward(&["svc/nope", "5353"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("Forwarding from"), "never said ready: {out}");
    assert!(
        err.contains("service \"nope\" not found in namespace \"demo\""),
        "{err}"
    );
    let (code, out, err) = forward(&["svc/dns", "5353", "--proxy-protocol", "v2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("--proxy-protocol (proxy_protocol) works for TCP forwards only"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_proxy_protocol_strict_serves_curl_with_a_header_and_drops_it_without() {
    let curl = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("curl"))
        .find(|p| p.is_file());
    let Some(curl) = curl else {
        assert!(std::env::var_os("CI").is_none(), "curl is required on CI");
        eprintln!("note: skipping a test that needs curl, which is not installed");
        return;
    };
    let cluster = Cluster::demo().await.expect("cluster");
    let r = Running::spawn({
        let mut c = kforward();
        c.args([
            "forward",
            "svc/web",
            "0:80",
            "-n",
            "demo",
            "--address",
            "127.0.0.1",
            "--accept-proxy-protocol",
            "strict",
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(cluster.kubeconfig_path());
        c
    });
    let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let url = format!("http://{}/", v["local_addr"].as_str().expect("addr"));
    let get = |header: bool| {
        let mut c = Command::new(&curl);
        c.args(["-sS", "--max-time", "20", &url]);
        if header {
            c.arg("--haproxy-protocol");
        }
        tokio::task::block_in_place(|| run_to_end(c))
    };
    let (code, body, err) = get(true);
    assert_eq!(code, 0, "{err}");
    assert!(body.starts_with("web-"), "{body}");
    let (code, body, _) = get(false);
    assert_ne!(code, 0, "dropped without a header: {body}");
    let (code, body, err) = get(true);
    assert_eq!(code, 0, "the next client is served: {err}");
    assert!(body.starts_with("web-"), "{body}");
    r.signal("-TERM");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
}

/// `kforward forward svc/echo :7000 -n demo --transport TRANSPORT -o json`.
fn forward_echo(cluster: &Cluster, transport: &str, json: bool) -> Command {
    let mut c = kforward();
    c.args([
        "forward",
        "svc/echo",
        ":7000",
        "-n",
        "demo",
        "--address",
        "127.0.0.1",
        "--transport",
        transport,
    ]);
    if json {
        c.args(["-o", "json"]);
    }
    c.arg("--kubeconfig").arg(cluster.kubeconfig_path());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn nc_half_close_through_forward_over_each_spdy_transport_gets_every_byte_then_eof() {
    let nc = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("nc"))
        .find(|p| p.is_file());
    let Some(nc) = nc else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nc (netcat-openbsd) is required on CI"
        );
        eprintln!("note: skipping a test that needs nc, which is not installed");
        return;
    };
    let cluster = Cluster::demo().await.expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("upload");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write the upload");
    for transport in ["auto", "websocket-spdy", "spdy"] {
        let r = Running::spawn(forward_echo(&cluster, transport, true));
        let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let want = if transport == "auto" {
            "websocket-spdy"
        } else {
            transport
        };
        assert_eq!(v["transport"], want, "{line}");
        let addr: std::net::SocketAddr = v["local_addr"]
            .as_str()
            .expect("local_addr")
            .parse()
            .expect("addr");
        // `nc -N` shuts its write side at the end of its input, then reads to EOF.
        let mut c = Command::new(&nc);
        c.args(["-N", &addr.ip().to_string(), &addr.port().to_string()])
            .stdin(std::fs::File::open(&file).expect("open"));
        let start = std::time::Instant::now();
        let out = tokio::task::block_in_place(|| output_within(&mut c));
        let took = start.elapsed();
        assert!(out.status.success(), "{transport}: {out:?}");
        assert!(
            out.stdout == data,
            "{transport}: {} bytes back",
            out.stdout.len()
        );
        // The runtime's one-second grace ends it, not a 15 s linger.
        assert!(
            took < Duration::from_secs(10),
            "{transport}: nc took {took:?}"
        );
        let opened = tokio::task::block_in_place(|| r.line_with("connection_opened"));
        assert!(
            opened.contains(&format!("\"transport\":\"{want}\"")),
            "{opened}"
        );
        r.signal("-TERM");
        let (status, _) = tokio::task::block_in_place(|| r.wait());
        assert!(status.success(), "{status:?}");
    }
    // v4: named, and text output warns that there is no half-close.
    let r = Running::spawn(forward_echo(&cluster, "websocket", false));
    tokio::task::block_in_place(|| r.line_with("Forwarding from"));
    r.signal("-TERM");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");
    assert!(
        err.contains("v4.channel.k8s.io") && err.contains("half-close"),
        "{err}"
    );
    // A transport that does not exist: the flag, the value and the choices.
    let (code, _, err) = run_to_end(forward_echo(&cluster, "spdy3", true));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--transport") && err.contains("spdy3") && err.contains("websocket-spdy"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn socks_prints_ready_first_routes_connections_and_refuses_exposure_without_auth() {
    let cluster = Cluster::demo().await.expect("demo");
    let kc = cluster.kubeconfig_path().display().to_string();
    let r = Running::spawn({
        let mut c = kforward();
        c.args([
            "socks",
            "--listen",
            "127.0.0.1:0",
            "-o",
            "json",
            "--kubeconfig",
            &kc,
            "-n",
            "demo",
        ]);
        c
    });
    let ready: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        r.lines.recv_timeout(WAIT).expect("a first line")
    }))
    .expect("json");
    assert_eq!(ready["event"], "ready", "{ready}");
    let addr = ready["local_addr"]
        .as_str()
        .expect("local_addr")
        .to_string();
    // A plain HTTP request in absolute form, to a bare service name of namespace demo.
    let out = http_get_via(&addr, "web").await;
    assert!(out.contains("\r\n\r\nweb-"), "{out}");
    let opened: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        r.line_with("\"event\":\"routed\"")
    }))
    .expect("json");
    assert_eq!(opened["destination"], "web:80");
    assert_eq!(
        (opened["route"].as_str(), opened["service"].as_str()),
        (Some("pod"), Some("web"))
    );
    r.signal("-TERM");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");

    let (code, _, err) = run_to_end({
        let mut c = kforward();
        c.args(["socks", "--listen", "0.0.0.0:0", "--kubeconfig", &kc]);
        c.env_remove("KFORWARD_PROXY_AUTH");
        c
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without credentials")
            && err.contains("--auth"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_a_socks_entry_beside_a_forward_and_counts_its_connections() {
    let cluster = Cluster::demo().await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("socks.json");
    std::fs::write(
        &file,
        r#"[{"alias": "proxy", "workload_type": "socks", "namespace": "demo", "local_port": 0},
            {"alias": "web", "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80}]"#,
    )
    .expect("write");
    let r = Running::spawn({
        let mut c = kforward();
        c.args(["run", "-o", "json", "--kubeconfig"])
            .arg(cluster.kubeconfig_path())
            .arg("-f")
            .arg(&file);
        c
    });
    let ready = tokio::task::block_in_place(|| r.ready_addrs(2));
    // A plain HTTP request through the proxy, to the service by its short name.
    let out = http_get_via(&ready["proxy"], "web").await;
    assert!(out.contains("\r\n\r\nweb-"), "{out}");
    let routed: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        r.line_with("\"event\":\"routed\"")
    }))
    .expect("json");
    assert_eq!(routed["forward"], "proxy", "{routed}");
    assert_eq!(routed["route"], "pod", "{routed}");
    // The supervisor publishes the proxy's counters like any forward's (run's table shows
    // the same figures).
    let stats = loop {
        let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"stats\""));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        if v["forward"] == "proxy" && v["connections_open"] == 0 {
            break v;
        }
    };
    assert_eq!(stats["connections_total"], 1, "{stats}");
    assert!(
        stats["bytes_in"].as_u64().expect("bytes_in") >= out.len() as u64 / 2,
        "{stats}"
    );
    assert!(
        stats["bytes_out"].as_u64().expect("bytes_out") > 0,
        "{stats}"
    );
    r.signal("-TERM");
    let (status, _) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}");

    // A bad socks entry is refused before anything starts, naming the field.
    std::fs::write(
        &file,
        r#"[{"workload_type": "socks", "local_address": "0.0.0.0", "remote_port": 80}]"#,
    )
    .expect("write");
    let (code, _, err) = run_to_end({
        let mut c = kforward();
        c.args(["run", "--kubeconfig"])
            .arg(cluster.kubeconfig_path())
            .arg("-f")
            .arg(&file);
        c
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("field \"remote_port\"") && err.contains("field \"local_address\""),
        "{err}"
    );
}
