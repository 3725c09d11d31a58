//! Scale limits of one `kforward run`: many forwards (startup time, memory, API requests
//! and watches) and many concurrent connections through one forward (first-byte latency,
//! memory, failures). `target/release/scale --help`.

pub mod clients;
pub mod pods;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kforward_testkit::{Cluster, ECHO_IMAGE, SLEEP_IMAGE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::soak::traffic::Totals;
use crate::soak::{procstat, start_kforward, stop_kforward};

const NAMESPACE: &str = "scale";

/// Creates `services` services of `replicas` pods each (`echo-0`, `echo-1`, ...) running
/// `image` on port 7000.
async fn echo_services(
    cluster: &Cluster,
    services: usize,
    replicas: i32,
    image: &str,
) -> anyhow::Result<()> {
    cluster.create_namespace(NAMESPACE)?;
    for i in 0..services {
        let name = format!("echo-{i}");
        let d = kforward_testkit::deployment(&name, image, replicas, &[("echo", 7000, "TCP")]);
        cluster.create_deployment(NAMESPACE, &d)?;
        let s = kforward_testkit::service(
            &name,
            &name,
            &[("echo", 7000, IntOrString::Int(7000), "TCP")],
        );
        cluster.create_service(NAMESPACE, &s)?;
    }
    for i in 0..services {
        cluster
            .wait_deployment_ready(NAMESPACE, &format!("echo-{i}"), Duration::from_secs(60))
            .await?;
    }
    cluster.settle(Duration::from_secs(60)).await?;
    Ok(())
}

/// A run file of `n` forwards to the services `echo-0`.. `echo-{services-1}` in turn.
fn run_file(dir: &Path, n: usize, services: usize, kubeconfig: &Path) -> anyhow::Result<PathBuf> {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"alias": format!("f{i}"), "service": format!("echo-{}", i % services),
                   "namespace": NAMESPACE, "local_port": 0, "local_address": "127.0.0.1",
                   "remote_port": 7000, "kubeconfig": kubeconfig.display().to_string()})
        })
        .collect();
    let file = dir.join("scale.json");
    std::fs::write(&file, serde_json::to_vec(&entries)?)?;
    Ok(file)
}

/// `n` forwards to 10 services in one `kforward run`: the time until all are ready, the
/// process's RSS and fds then and 10 s later, and the API requests and watches it opened.
///
/// # Errors
///
/// When the cluster or kforward does not start, or a forward does not carry a byte.
pub async fn forwards(kforward: &Path, n: usize) -> anyhow::Result<Value> {
    let services = 10;
    let cluster = Cluster::start().await?;
    echo_services(&cluster, services, 1, ECHO_IMAGE).await?;
    let dir = tempfile::tempdir()?;
    let file = run_file(dir.path(), n, services, cluster.kubeconfig_path())?;
    let before = cluster.stats();
    let start = Instant::now();
    let (mut child, ready) = start_kforward(
        kforward,
        &file,
        std::fs::File::create(dir.path().join("stderr"))?,
        n,
        Duration::from_secs(600),
        Arc::new(Totals::default()),
    )
    .await?;
    let startup = start.elapsed();
    let pid = child.id().context("pid")?;
    let at_ready = procstat::sample(pid).context("kforward's /proc")?;
    let after_ready = cluster.stats();
    // A byte through every tenth forward: ready means usable.
    for (alias, addr) in ready.iter().step_by(10) {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut b),
        )
        .await
        .with_context(|| format!("{alias}: no echo in 30 s"))??;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = procstat::sample(pid).context("kforward's /proc")?;
    let after_idle = cluster.stats();
    let exit = stop_kforward(&mut child, pid).await;
    Ok(json!({
        "forwards": n,
        "services": services,
        "startup_s": startup.as_secs_f64(),
        "rss_mib_ready": at_ready.rss_mib,
        "fds_ready": at_ready.fds,
        "rss_mib_after_10s": idle.rss_mib,
        "api_requests_to_ready": after_ready.requests - before.requests,
        "watches_to_ready": after_ready.watches_total - before.watches_total,
        "api_requests_total": after_idle.requests - before.requests,
        "watches_total": after_idle.watches_total - before.watches_total,
        "kforward_exit": exit,
    }))
}

/// Raises this process's open file limit to its hard limit (children inherit it).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let _ = setrlimit(Resource::Nofile, lim);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// `n` concurrent connections through one forward to a service of 3 echo pods. The
/// clients run in a child process (this binary's `clients` mode) and so do the pods'
/// echo servers (`pods` mode, see [`pods`]), so that this process (the API server and
/// kubelet), the clients, the pods and kforward each hold one descriptor per connection
/// and stay under the fd limit.
///
/// # Errors
///
/// When the cluster, kforward or the clients do not start.
pub async fn conns(kforward: &Path, n: usize) -> anyhow::Result<Value> {
    let limit = raise_fd_limit();
    let cluster = Cluster::start().await?;
    echo_services(&cluster, 1, 3, SLEEP_IMAGE).await?;
    let pod_addrs: Vec<String> = cluster
        .pods(NAMESPACE, Some("app=echo-0"))
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .map(|ip| format!("{ip}:7000"))
        .collect();
    anyhow::ensure!(pod_addrs.len() == 3, "pod IPs: {pod_addrs:?}");
    let mut pods = tokio::process::Command::new(std::env::current_exe()?)
        .arg("pods")
        .args(&pod_addrs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut pods_out = BufReader::new(pods.stdout.take().context("stdout")?).lines();
    tokio::time::timeout(Duration::from_secs(30), pods_out.next_line())
        .await
        .context("the pods' servers did not listen in 30 s")??
        .context("the pods' servers exited")?;
    let dir = tempfile::tempdir()?;
    let file = run_file(dir.path(), 1, 1, cluster.kubeconfig_path())?;
    let (mut child, ready) = start_kforward(
        kforward,
        &file,
        std::fs::File::create(dir.path().join("stderr"))?,
        1,
        Duration::from_secs(60),
        Arc::new(Totals::default()),
    )
    .await?;
    let pid = child.id().context("pid")?;
    let idle = procstat::sample(pid).context("kforward's /proc")?;
    let addr = ready["f0"];
    let mut clients = tokio::process::Command::new(std::env::current_exe()?)
        .args(["clients", &addr.to_string(), &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(clients.stdout.take().context("stdout")?).lines();
    let mut input = clients.stdin.take().context("stdin")?;
    // The clients say when every connection is open and has had its first byte back.
    let held = tokio::time::timeout(Duration::from_secs(600), out.next_line())
        .await
        .context("the clients did not finish opening in 600 s")??
        .context("the clients exited")?;
    let loaded = procstat::sample(pid).context("kforward's /proc")?;
    input.write_all(b"close\n").await?;
    let result = tokio::time::timeout(Duration::from_secs(120), out.next_line())
        .await
        .context("the clients did not close in 120 s")??
        .context("the clients exited without a result")?;
    let _ = clients.wait().await;
    let exit = stop_kforward(&mut child, pid).await;
    drop(pods.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), pods.wait()).await;
    let mut v: Value = serde_json::from_str(&result)?;
    v["held"] = serde_json::from_str(&held)?;
    v["fd_limit"] = json!(limit);
    v["rss_mib_idle"] = json!(idle.rss_mib);
    v["rss_mib_loaded"] = json!(loaded.rss_mib);
    v["fds_loaded"] = json!(loaded.fds);
    v["kforward_exit"] = json!(exit);
    Ok(v)
}
