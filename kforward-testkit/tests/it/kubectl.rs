//! The real kubectl (1.35) against the testkit: tables, deletes, rollouts, access reviews,
//! and a clean, bounded failure of `port-forward` until the testkit serves SPDY.
//!
//! kubectl comes from `$KUBECTL`, else from `shared/tools/install-kubectl`. When neither
//! works the tests fail on CI (`$CI` set) and are skipped with a note elsewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kforward_testkit::{Cluster, DEMO_NAMESPACE};

use crate::{WAIT, bounded, cluster_ip, demo, name, pod_ip, pod_names};

/// How long the install script may take (it may download kubectl once).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

static KUBECTL: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Runs `cmd` to completion within `timeout`, killing it when it takes longer.
fn run_blocking(mut cmd: std::process::Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading the output of {cmd:?}: {e}"))
}

fn find_kubectl() -> Result<PathBuf, String> {
    let candidate = match std::env::var("KUBECTL") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/install-kubectl");
            let out = run_blocking(std::process::Command::new(&script), INSTALL_TIMEOUT)?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or("").trim())
        }
    };
    let mut version = std::process::Command::new(&candidate);
    version.args(["version", "--client"]);
    let out = run_blocking(version, Duration::from_secs(30))?;
    if !out.status.success() {
        return Err(format!("{} version --client failed", candidate.display()));
    }
    Ok(candidate)
}

/// The kubectl to test with, or `None` (after a note) when it cannot be had outside CI.
pub(crate) async fn kubectl() -> Option<PathBuf> {
    let found = tokio::task::spawn_blocking(|| KUBECTL.get_or_init(find_kubectl).clone())
        .await
        .expect("the kubectl lookup ran");
    match found {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("CI").is_some() => panic!("kubectl is required on CI: {e}"),
        Err(e) => {
            eprintln!("note: skipping a kubectl test, no kubectl: {e}");
            None
        }
    }
}

/// The variables that could send kubectl to a proxy: a test sets the ones it means.
const PROXY_VARS: [&str; 9] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
];

/// One kubectl invocation against a cluster.
pub(crate) struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    /// The environment every run gets (proxy variables only from here).
    env: Vec<(String, String)>,
}

impl Kubectl {
    pub(crate) fn new(bin: PathBuf, cluster: &Cluster) -> Self {
        Self::with(bin, cluster.kubeconfig_path().to_path_buf(), &[])
    }

    /// kubectl on `kubeconfig`, with `env` for every run.
    pub(crate) fn with(bin: PathBuf, kubeconfig: PathBuf, env: &[(&str, String)]) -> Self {
        Kubectl {
            bin,
            kubeconfig,
            cache: tempfile::tempdir().expect("a discovery cache dir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// kubectl with the kubeconfig, the cache and the environment set.
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl with `args` (bounded) and returns its output.
    pub(crate) async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--request-timeout=20s")
            .args(args)
            .envs(env.iter().copied());
        let what = format!("kubectl {}", args.join(" "));
        bounded(&what, cmd.output())
            .await
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
    }

    /// Runs kubectl and returns its stdout, failing the test when it exits non-zero.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]).await;
        assert!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}

pub(crate) async fn setup() -> Option<(Cluster, Kubectl)> {
    let bin = kubectl().await?;
    let cluster = demo().await;
    let k = Kubectl::new(bin, &cluster);
    Some((cluster, k))
}

/// The rows of a table whose first column starts with `prefix`, split into columns.
pub(crate) fn rows<'a>(table: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[tokio::test]
async fn kubectl_get_pods_and_services_prints_tables() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let out = k.ok(&["get", "pods,svc", "-n", DEMO_NAMESPACE]).await;
    let headers: Vec<Vec<&str>> = rows(&out, "NAME");
    assert_eq!(
        headers,
        vec![
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            vec![
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ],
        ],
        "{out}"
    );
    let pods = rows(&out, "pod/");
    let names: BTreeSet<String> = pods
        .iter()
        .map(|r| r[0]["pod/".len()..].to_string())
        .collect();
    let expected: BTreeSet<String> = cluster
        .pods(DEMO_NAMESPACE, None)
        .iter()
        .map(name)
        .collect();
    assert_eq!(names, expected, "{out}");
    for row in &pods {
        assert_eq!(&row[1..4], &["1/1", "Running", "0"], "{out}");
    }
    let services = rows(&out, "service/");
    assert_eq!(services.len(), 4, "{out}");
    for (svc, ports) in [
        ("db", "5432/TCP"),
        ("dns", "5353/UDP"),
        ("echo", "7000/TCP"),
        ("web", "80/TCP"),
    ] {
        let row = services
            .iter()
            .find(|r| r[0] == format!("service/{svc}"))
            .unwrap_or_else(|| panic!("no row for {svc}: {out}"));
        // The headless `db` has no ClusterIP: kubectl shows "None".
        let ip = cluster_ip(&cluster, svc);
        assert_eq!(
            &row[1..5],
            &["ClusterIP", ip.as_str(), "<none>", ports],
            "{out}"
        );
    }
}

#[tokio::test]
async fn kubectl_get_endpointslices_shows_both_web_endpoints() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let out = k.ok(&["get", "endpointslices", "-n", DEMO_NAMESPACE]).await;
    assert_eq!(
        rows(&out, "NAME"),
        vec![vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]],
        "{out}"
    );
    let web = rows(&out, "web-");
    assert_eq!(web.len(), 1, "{out}");
    assert_eq!(&web[0][1..3], &["IPv4", "8080"], "{out}");
    let endpoints: BTreeSet<&str> = web[0][3].split(',').collect();
    let ips: Vec<String> = cluster
        .pods(DEMO_NAMESPACE, Some("app=web"))
        .iter()
        .map(pod_ip)
        .collect();
    let ips: BTreeSet<&str> = ips.iter().map(String::as_str).collect();
    assert_eq!(endpoints, ips, "{out}");
}

#[tokio::test]
async fn kubectl_delete_pod_gets_a_replacement() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let old = pod_names(&cluster, "app=echo").remove(0);
    let out = k.ok(&["delete", "pod", &old, "-n", DEMO_NAMESPACE]).await;
    assert!(out.contains(&format!("pod \"{old}\" deleted")), "{out}");
    // kubectl waits until the pod is gone.
    assert!(
        cluster.pod(DEMO_NAMESPACE, &old).is_err(),
        "deleted when kubectl returns"
    );
    bounded(
        "a Ready replacement",
        cluster.wait_for("a replacement echo pod", WAIT, |c| {
            let ready = c.ready_pods(DEMO_NAMESPACE, "app=echo");
            ready.len() == 1 && name(&ready[0]) != old
        }),
    )
    .await
    .expect("a replacement");
    let out = k
        .ok(&[
            "get",
            "pods",
            "-n",
            DEMO_NAMESPACE,
            "-l",
            "app=echo",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains(&old), "{out}");
}

#[tokio::test]
async fn kubectl_rollout_restart_replaces_all_web_pods() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let old: BTreeSet<String> = pod_names(&cluster, "app=web").into_iter().collect();
    let out = k
        .ok(&["rollout", "restart", "deploy/web", "-n", DEMO_NAMESPACE])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    let out = k
        .ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            DEMO_NAMESPACE,
            "--timeout=25s",
        ])
        .await;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    bounded(
        "every web pod replaced",
        cluster.wait_for("the old web pods to be gone", WAIT, |c| {
            let now: BTreeSet<String> = pod_names(c, "app=web").into_iter().collect();
            now.len() == 2
                && now.is_disjoint(&old)
                && c.ready_pods(DEMO_NAMESPACE, "app=web").len() == 2
        }),
    )
    .await
    .expect("all web pods replaced");
}

#[tokio::test]
async fn kubectl_set_image_keeps_the_container_ports() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let image = "web=kforward/http:2";
    let out = k
        .ok(&["set", "image", "deploy/web", image, "-n", DEMO_NAMESPACE])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web image updated");
    let out = k
        .ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            DEMO_NAMESPACE,
            "--timeout=25s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    // The strategic merge kept the named port, so the service still resolves it.
    let selector = "kubernetes.io/service-name=web";
    let out = k
        .ok(&[
            "get",
            "endpointslices",
            "-n",
            DEMO_NAMESPACE,
            "-l",
            selector,
        ])
        .await;
    let web = rows(&out, "web-");
    assert_eq!(web.len(), 1, "{out}");
    assert_eq!(&web[0][1..3], &["IPv4", "8080"], "{out}");
    for pod in cluster.ready_pods(DEMO_NAMESPACE, "app=web") {
        let spec = pod.spec.expect("pod spec");
        assert_eq!(spec.containers[0].image.as_deref(), Some("kforward/http:2"));
    }
}

#[tokio::test]
async fn kubectl_auth_can_i_follows_deny() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    // `pods/NAME` would ask about the pod NAME; a subresource is its own flag.
    let args = [
        "auth",
        "can-i",
        "create",
        "pods",
        "--subresource=portforward",
        "-n",
        DEMO_NAMESPACE,
    ];
    assert_eq!(k.ok(&args).await.trim(), "yes");
    cluster.deny("create", "pods/portforward");
    let out = k.run(&args, &[]).await;
    assert!(!out.status.success(), "can-i exits 1 for no");
    // kubectl appends the review's reason: "no - denied by a testkit fault".
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim().starts_with("no"), "{said:?}");
}

/// A running `kubectl port-forward` (killed on drop) and the local port it chose.
pub(crate) async fn port_forward(
    k: &Kubectl,
    target: &str,
    remote: &str,
    websockets: bool,
) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = k.command();
    cmd.args([
        "port-forward",
        "-n",
        DEMO_NAMESPACE,
        target,
        &format!(":{remote}"),
        "--address",
        "127.0.0.1",
    ])
    .env(
        "KUBECTL_PORT_FORWARD_WEBSOCKETS",
        if websockets { "true" } else { "false" },
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl port-forward starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = bounded("kubectl port-forward to print its port", lines.next_line())
        .await
        .expect("a line")
        .unwrap_or_else(|| {
            panic!(
                "kubectl port-forward {target} exited without forwarding (websockets {websockets})"
            )
        });
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    // Keep draining stdout ("Handling connection for ...") so kubectl never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

pub(crate) async fn http_get_pod_name(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    let reply = bounded("an HTTP reply through kubectl", work).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_pod_service_and_deployment_over_both_transports() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let web = pod_names(&cluster, "app=web");
    let pod = format!("pod/{}", web[0]);
    for websockets in [true, false] {
        for (target, remote) in [
            (pod.as_str(), "8080"),
            ("svc/web", "80"),
            ("deploy/web", "8080"),
        ] {
            let (child, port) = port_forward(&k, target, remote, websockets).await;
            let name = http_get_pod_name(port).await;
            assert!(
                web.contains(&name),
                "{target} (websockets {websockets}) answered {name:?}"
            );
            drop(child);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_carries_64_mib_and_50_connections_over_both_transports() {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((_cluster, k)) = setup().await else {
        return;
    };
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let want = Sha256::digest(&data);
    let data = std::sync::Arc::new(data);
    for websockets in [true, false] {
        let (child, port) = port_forward(&k, "svc/echo", "7000", websockets).await;
        // 64 MiB through the echo pod and back, checksummed.
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut r, mut w) = s.into_split();
        let d = data.clone();
        let writer = tokio::spawn(async move { w.write_all(&d).await.expect("write") });
        let mut got = Sha256::new();
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        bounded("64 MiB echoed through kubectl", async {
            while n < 64 << 20 {
                let k = r.read(&mut buf).await.expect("read");
                assert!(k > 0, "EOF after {n} bytes");
                got.update(&buf[..k]);
                n += k;
            }
        })
        .await;
        writer.await.expect("writer");
        assert_eq!(got.finalize(), want, "checksum (websockets {websockets})");
        // 50 connections at once.
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let msg = format!("connection {i} ").repeat(64);
                s.write_all(msg.as_bytes()).await.expect("write");
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).await.expect("read");
                assert_eq!(back, msg.as_bytes());
            }));
        }
        bounded("50 concurrent connections", async {
            for t in tasks {
                t.await.expect("connection");
            }
        })
        .await;
        drop(child);
    }
}
