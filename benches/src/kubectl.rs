//! The real `kubectl port-forward` as a path to measure.

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
    let mut child = tokio::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "port-forward",
            "-n",
            "demo",
            target,
            &format!(":{port}"),
            "--address",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .context("kubectl did not start in time")??
        .context("kubectl exited")?;
    let addr = line
        .split("from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .context("unexpected kubectl output")?
        .parse()?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}
