//! `kforward-testkit serve`: runs a simulated cluster until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, bail};
use kforward_testkit::{Cluster, DEMO_EXTERNAL_HOST};

const USAGE: &str =
    "usage: kforward-testkit serve [--kubeconfig-out PATH] [--scenario demo|empty] [--plain-http]
  [--api-addr IP:PORT (default 127.0.0.1:0)] [--api-only-from IP,... (a proxy's outbound address)]";

struct Args {
    kubeconfig_out: Option<PathBuf>,
    demo: bool,
    plain_http: bool,
    api_addr: Option<std::net::SocketAddr>,
    api_only_from: Option<Vec<std::net::IpAddr>>,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    match args.next().as_deref() {
        Some("serve") => {}
        Some("--help" | "-h") | None => bail!("{USAGE}"),
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
    let mut out = Args {
        kubeconfig_out: None,
        demo: true,
        plain_http: false,
        api_addr: None,
        api_only_from: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig-out" => {
                out.kubeconfig_out =
                    Some(args.next().context("--kubeconfig-out needs a path")?.into());
            }
            "--scenario" => match args.next().as_deref() {
                Some("demo") => out.demo = true,
                Some("empty") => out.demo = false,
                other => bail!("unknown scenario {other:?} (known: demo, empty)"),
            },
            "--plain-http" => out.plain_http = true,
            "--api-addr" => {
                let v = args.next().context("--api-addr needs IP:PORT")?;
                out.api_addr = Some(
                    v.parse()
                        .with_context(|| format!("--api-addr {v:?} is not IP:PORT"))?,
                );
            }
            "--api-only-from" => {
                let v = args.next().context("--api-only-from needs addresses")?;
                let ips = v
                    .split(',')
                    .map(|ip| {
                        ip.trim().parse().with_context(|| {
                            format!("--api-only-from: {ip:?} is not an IP address")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                out.api_only_from = Some(ips);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse(std::env::args().skip(1))?;
    let mut b = Cluster::builder().name("kforward-testkit");
    if args.demo {
        b = b.demo();
    }
    if args.plain_http {
        b = b.plain_http();
    }
    if let Some(p) = &args.kubeconfig_out {
        b = b.kubeconfig_path(p);
    }
    if let Some(a) = args.api_addr {
        b = b.api_addr(a);
    }
    let cluster = b.start().await.context("starting the cluster")?;
    if let Some(ips) = args.api_only_from.clone() {
        cluster.api_only_from(ips);
    }
    let mut ready = serde_json::json!({
        "event": "ready",
        "kubeconfig": cluster.kubeconfig_path(),
        "server": cluster.server_url(),
        "context": cluster.name(),
    });
    if args.demo {
        ready["namespace"] = serde_json::json!("demo");
        if let Some(a) = cluster.external_host_addr(DEMO_EXTERNAL_HOST) {
            ready["external_host"] = serde_json::json!(a.to_string());
        }
    }
    println!("{ready}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
    Ok(())
}
