//! Forwarders that run as processes of their own: the real `kubectl port-forward`, and
//! `kforward forward` started the same way.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;

/// `$KUBECTL`, or what `../shared/tools/install-kubectl` installs.
pub fn find() -> anyhow::Result<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return Ok(k.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/install-kubectl");
    let out = std::process::Command::new(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Starts `kubectl port-forward TARGET :PORT`; returns the child (killed on drop) and the
/// local address it printed.
pub async fn port_forward(
    bin: &Path,
    kubeconfig: &Path,
    target: &str,
    port: u16,
) -> anyhow::Result<(tokio::process::Child, std::net::SocketAddr)> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--kubeconfig").arg(kubeconfig).args([
        "port-forward",
        "-n",
        "demo",
        target,
        &format!(":{port}"),
        "--address",
        "127.0.0.1",
    ]);
    spawn_forward(cmd).await
}

/// Starts `kforward forward TARGET :PORT` (kubectl's arguments and output, as a process of
/// its own like kubectl's); returns the child and the local address it printed.
pub async fn kforward_forward(
    bin: &Path,
    kubeconfig: &Path,
    target: String,
    port: u16,
    stock_client: bool,
) -> anyhow::Result<(tokio::process::Child, std::net::SocketAddr)> {
    let mut cmd = tokio::process::Command::new(bin);
    if stock_client {
        cmd.env(kforward_core::client::CLIENT_STACK_ENV, "stock");
    } else {
        cmd.env_remove(kforward_core::client::CLIENT_STACK_ENV);
    }
    cmd.arg("forward")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "-n",
            "demo",
            &target,
            &format!(":{port}"),
            "--address",
            "127.0.0.1",
        ]);
    spawn_forward(cmd).await
}

/// Runs a forwarding command that prints `Forwarding from ADDR -> PORT` once listening.
pub async fn spawn_forward(
    mut cmd: tokio::process::Command,
) -> anyhow::Result<(tokio::process::Child, std::net::SocketAddr)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // For finding out where time goes: the processes' own logs (with RUST_LOG for
        // kforward, -v for kubectl).
        .stderr(if std::env::var_os("COMPARE_CHILD_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .context("the forward did not start in time")??
        .context("the forward exited")?;
    let addr = line
        .split("from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .with_context(|| format!("unexpected output {line:?}"))?
        .parse()?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}
