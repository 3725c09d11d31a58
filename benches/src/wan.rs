//! The `wan` section: first byte of new connections when the API server is `--wan-rtt-ms`
//! away, straight and behind a corporate HTTP proxy.
//!
//! Every client's API traffic goes through a [`delay::DelayProxy`], so what each one does per
//! connection before the pod answers counts in round trips, as against a real cluster. In the
//! second table the far end of that network is an HTTP proxy (tinyproxy, from the kubeconfig's
//! `proxy-url`) in front of the API server, which then accepts the proxy's address only: the
//! proxy's `CONNECT` pays the round trip too, for every client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kforward_core::{Forwarder, KubeContext, KubeconfigSource};
use kforward_testkit::Cluster;
use kforward_testkit::proxies::{ProxyKind, ProxyOptions, RealProxy};

use crate::measure::{self, Dial};
use crate::{Opts, baseline, cell, delay, kubectl, pct, pod_forward, stock_client};

/// Both tables: straight to the API server, then through the HTTP proxy.
pub(crate) async fn rows(
    cluster: &Cluster,
    o: &Opts,
    web: &str,
    kubectl_bin: Option<&PathBuf>,
    cli: &Path,
) -> anyhow::Result<()> {
    let rtt = Duration::from_secs_f64(o.wan_rtt_ms / 1e3);
    {
        eprintln!("first byte, API server {} ms away ...", o.wan_rtt_ms);
        let far = delay::start(cluster.api_addr(), rtt / 2).await?;
        let kubeconfig = write_kubeconfig(cluster, "kubeconfig-wan", Some(far.addr), None)?;
        let wire = wire_rtt(rtt / 2).await?;
        eprintln!(
            "one round trip through the delay proxy, measured: {:.2} ms",
            wire.as_secs_f64() * 1e3
        );
        let title = format!("API server {} ms away", o.wan_rtt_ms);
        table(&title, &kubeconfig, o, web, kubectl_bin, cli, wire).await?;
    }
    match RealProxy::start(ProxyKind::Tinyproxy, ProxyOptions::default()).await {
        Ok(proxy) => {
            eprintln!(
                "first byte, API server behind an HTTP proxy {} ms away ...",
                o.wan_rtt_ms
            );
            let far = delay::start(proxy.addr(), rtt / 2).await?;
            let wire = wire_rtt(rtt / 2).await?;
            let proxy_url = format!("http://{}", far.addr);
            let kubeconfig =
                write_kubeconfig(cluster, "kubeconfig-wan-proxy", None, Some(&proxy_url))?;
            cluster.api_only_from([proxy.outbound_ip()]);
            let title = format!("API server behind an HTTP proxy {} ms away", o.wan_rtt_ms);
            let done = table(&title, &kubeconfig, o, web, kubectl_bin, cli, wire).await;
            cluster.api_from_anywhere();
            done?;
        }
        Err(e) => eprintln!("no HTTP proxy table: {e}"),
    }
    Ok(())
}

/// The cluster's kubeconfig with its server at `server` and `proxy-url` set, when given.
fn write_kubeconfig(
    cluster: &Cluster,
    file: &str,
    server: Option<SocketAddr>,
    proxy_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut kc = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path())?;
    for c in &mut kc.clusters {
        if let Some(c) = c.cluster.as_mut() {
            if let Some(server) = server {
                c.server = Some(format!("https://{server}"));
            }
            c.proxy_url = proxy_url.map(str::to_string);
        }
    }
    // JSON is YAML: kubectl and kube read it as a kubeconfig.
    let path = cluster.kubeconfig_path().with_file_name(file);
    std::fs::write(&path, serde_json::to_vec(&kc)?)?;
    Ok(path)
}

/// What one round trip through a [`delay::DelayProxy`] of `one_way` takes: the p50 of 30
/// one-byte ping-pongs on an open connection to a loopback echo server. It is more than
/// the nominal `2 * one_way`: tokio's timer wheel fires a deadline at the next whole
/// millisecond or later, and every hop costs scheduling. The tables count first bytes in
/// these round trips too, so that a client's own cost is not confused with the harness's.
async fn wire_rtt(one_way: Duration) -> anyhow::Result<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    let server = tokio::spawn(async move {
        if let Ok((mut s, _)) = echo.accept().await {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let far = delay::start(echo_addr, one_way).await?;
    let mut s = tokio::net::TcpStream::connect(far.addr).await?;
    s.set_nodelay(true)?;
    let mut times = Vec::new();
    let mut b = [0u8; 1];
    // The first ping-pong carries the simulated TCP handshake: not counted.
    for i in 0..31 {
        let start = std::time::Instant::now();
        s.write_all(b"x").await?;
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b)).await??;
        if i > 0 {
            times.push(start.elapsed());
        }
    }
    server.abort();
    pct(&mut times, 0.5).ok_or_else(|| anyhow::anyhow!("no round trip measured"))
}

/// First byte of `--wan-conns` new connections per path, with every client's API traffic
/// as `kubeconfig` says; `wire` is a round trip as [`wire_rtt`] measured it.
#[allow(clippy::too_many_arguments)]
async fn table(
    title: &str,
    kubeconfig: &Path,
    o: &Opts,
    web: &str,
    kubectl_bin: Option<&PathBuf>,
    cli: &Path,
    wire: Duration,
) -> anyhow::Result<()> {
    let mut paths: Vec<(&str, SocketAddr)> = Vec::new();
    let mut keep = Vec::new();
    let ctx = KubeContext::load_fresh(&KubeconfigSource::default().with_path(kubeconfig)).await?;
    let mut fwd = pod_forward(&ctx, web, 8080);
    if o.path("kforward") {
        paths.push(("kforward", fwd.start().await?[0].local_addr));
    }
    let stock = stock_client(kube::config::Kubeconfig::read_from(kubeconfig)?).await?;
    let baseline = baseline::start(stock, web, 8080).await?;
    if o.path("kube-pf") {
        paths.push(("kube-pf", baseline.addr));
    }
    if let (Some(bin), true) = (kubectl_bin, o.path("kubectl")) {
        let (child, addr) =
            kubectl::port_forward(bin, kubeconfig, &format!("pod/{web}"), 8080).await?;
        keep.push(child);
        paths.push(("kubectl", addr));
    }
    if o.path("kforward-cli") && cli.exists() {
        let (child, addr) =
            kubectl::kforward_forward(cli, kubeconfig, format!("pod/{web}"), 8080, false).await?;
        keep.push(child);
        paths.push(("kforward-cli", addr));
    }
    let mut times = vec![Vec::new(); paths.len()];
    // One connection each first, so that every path has done its one-time setup (kubectl
    // opens its tunnel on the first connection).
    for (_, addr) in &paths {
        measure::first_byte(&Dial::Tcp(*addr)).await?;
    }
    for _ in 0..o.wan_conns {
        for (i, (_, addr)) in paths.iter().enumerate() {
            times[i].push(measure::first_byte(&Dial::Tcp(*addr)).await?);
        }
    }
    let p50: Vec<Option<Duration>> = times.iter_mut().map(|t| pct(t, 0.5)).collect();
    let kubectl_p50 = paths
        .iter()
        .position(|(n, _)| *n == "kubectl")
        .and_then(|i| p50[i]);
    let wire_ms = wire.as_secs_f64() * 1e3;
    println!(
        "\n| {title} | first byte p50 | p99 | p50 in round trips | in measured round trips ({wire_ms:.1} ms) | / kubectl |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in paths.iter().enumerate() {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let ratio = match (p50[i], kubectl_p50) {
            (Some(a), Some(k)) => a.as_secs_f64() / k.as_secs_f64(),
            _ => f64::NAN,
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            cell(ms(p50[i]), 1, " ms"),
            cell(ms(pct(&mut times[i], 0.99)), 1, " ms"),
            cell(ms(p50[i]) / o.wan_rtt_ms, 2, ""),
            cell(ms(p50[i]) / wire_ms, 2, ""),
            cell(ratio, 2, "x")
        );
    }
    println!("({} new connections per path, one at a time)", o.wan_conns);
    fwd.stop().await;
    drop(keep);
    Ok(())
}
