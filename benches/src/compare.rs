//! The comparison harness: one testkit cluster, the same measurements through each path,
//! interleaved (A B A B ...) so that a noisy shared machine affects every path alike, and
//! medians over the rounds.
//!
//! `cargo run --release -p kforward-benches --bin compare -- [--bytes N] [--rounds R] [--conns C]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Forwarder, KubeContext, KubeconfigSource, TcpForwarder};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Opts {
    bytes: u64,
    rounds: usize,
    conns: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        bytes: 1 << 30,
        rounds: 3,
        conns: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--bytes" => o.bytes = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            "--conns" => o.conns = v.parse()?,
            _ => bail!("unknown argument {a}"),
        }
    }
    Ok(o)
}

/// Downloads `bytes` from the HTTP pod's `/bytes/N`; returns MB/s (10^6 bytes).
async fn bulk(addr: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let start = Instant::now();
    s.write_all(
        format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    if total < bytes {
        bail!("short read: {total} of {bytes}");
    }
    Ok(bytes as f64 / secs / 1e6)
}

/// Time from connect to the first byte of the reply to `GET /`, for one new connection.
async fn first_byte(addr: SocketAddr) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    let t = start.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    Ok(t)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let cluster = Cluster::demo().await?;
    let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path()))
        .await?;
    // One pod, so direct and forwarded traffic hit the same server.
    let pod = cluster
        .pods("demo", Some("app=web"))
        .into_iter()
        .next()
        .context("a web pod")?;
    let name = pod.metadata.name.clone().context("pod name")?;
    let ip = pod.status.and_then(|s| s.pod_ip).context("pod ip")?;
    let direct: SocketAddr = format!("{ip}:8080").parse()?;
    let spec = ForwardSpec::new(Target::Pod { name }, [PortMapping::new(0, 8080)])
        .with_namespace("demo")
        .with_addresses(["127.0.0.1".parse()?]);
    let mut fwd = TcpForwarder::new(ctx, spec, Default::default());
    let via = fwd.start().await?[0].local_addr;
    let paths = [("direct", direct), ("kforward", via)];

    let mut mbps = vec![Vec::new(); paths.len()];
    for _ in 0..o.rounds {
        for (i, (_, addr)) in paths.iter().enumerate() {
            mbps[i].push(bulk(*addr, o.bytes).await?);
        }
    }
    let mut ttfb = vec![Vec::new(); paths.len()];
    for _ in 0..o.conns {
        for (i, (_, addr)) in paths.iter().enumerate() {
            ttfb[i].push(first_byte(*addr).await?);
        }
    }
    println!(
        "| path | bulk MB/s ({} MiB, median of {}) | first byte p50 | first byte p99 |",
        o.bytes >> 20,
        o.rounds
    );
    println!("|---|---|---|---|");
    let mut summary = Vec::new();
    for (i, (label, _)) in paths.iter().enumerate() {
        let m = median(&mut mbps[i]);
        let p50 = pct(&mut ttfb[i], 0.5);
        let p99 = pct(&mut ttfb[i], 0.99);
        summary.push((m, p50));
        println!(
            "| {label} | {m:.0} | {:.3} ms | {:.3} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "\nkforward / direct: throughput {:.2}x, first-byte p50 {:.2}x ({} connections each)",
        summary[1].0 / summary[0].0,
        summary[1].1.as_secs_f64() / summary[0].1.as_secs_f64(),
        o.conns
    );
    fwd.stop().await;
    Ok(())
}
