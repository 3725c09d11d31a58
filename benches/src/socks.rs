//! The forward proxy in the comparison: started in this process, the paths through it to
//! services by name beside `kforward forward svc/...` to the same services, and its burst of
//! 1,000 concurrent connections to a mix of services and an external name.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use kforward_core::forward_proxy::{ForwardProxy, ForwardProxyOptions};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Forward, Forwarder, KubeContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::Path;
use crate::measure::{Dial, socks5_connect};

/// Starts the forward proxy for namespace `demo` on a free port; it stops when the sender
/// is dropped.
pub async fn start(ctx: &KubeContext) -> anyhow::Result<(SocketAddr, oneshot::Sender<()>)> {
    let proxy = ForwardProxy::new(
        ctx.clone(),
        ForwardProxyOptions {
            namespace: Some("demo".into()),
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = proxy
            .run(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

/// `kforward forward svc/NAME` to a service's port, in this process, on a free local port.
fn service_forward(ctx: &KubeContext, service: &str, port: u16) -> Forward {
    let spec = ForwardSpec::new(
        Target::Service {
            name: service.to_string(),
        },
        [PortMapping::new(0, port)],
    )
    .with_namespace("demo")
    .with_addresses([std::net::Ipv4Addr::LOCALHOST.into()]);
    Forward::new(ctx.clone(), spec, Default::default())
}

/// The targets compare the proxy with a forward to the same service: the paths
/// `kforward-svc` (forwards of `svc/web` port 80 and `svc/echo` port 7000) and
/// `kforward-socks-svc` (the proxy at `proxy`, asked for `web.demo.svc.cluster.local:80`
/// and `echo.demo.svc.cluster.local:7000`). Both spread over the same ready pods; the
/// forwards are returned to be stopped at the end.
pub async fn service_paths(
    ctx: &KubeContext,
    proxy: SocketAddr,
) -> anyhow::Result<(Vec<Path>, Vec<Forward>)> {
    let mut web = service_forward(ctx, "web", 80);
    let mut echo = service_forward(ctx, "echo", 7000);
    let forward = Path {
        name: "kforward-svc",
        pid: None,
        http: Dial::Tcp(web.start().await?[0].local_addr),
        echo: Dial::Tcp(echo.start().await?[0].local_addr),
    };
    let socks = |host: &str, port| Dial::Socks5 {
        proxy,
        host: host.to_string(),
        port,
    };
    let through_proxy = Path {
        name: "kforward-socks-svc",
        pid: None,
        http: socks("web.demo.svc.cluster.local", 80),
        echo: socks("echo.demo.svc.cluster.local", 7000),
    };
    Ok((vec![forward, through_proxy], vec![web, echo]))
}

/// One connection of the burst: an HTTP GET to `web` or the external host, or an echo.
async fn one(proxy: SocketAddr, i: usize) -> anyhow::Result<()> {
    let (host, port, http) = match i % 3 {
        0 => ("web.demo.svc.cluster.local", 80, true),
        1 => ("echo.demo", 7000, false),
        _ => ("private.example.internal", 80, true),
    };
    let mut s = socks5_connect(proxy, host, port).await?;
    if http {
        s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        anyhow::ensure!(out.starts_with(b"HTTP/1.1 200"), "{host}: no 200");
    } else {
        s.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await?;
        anyhow::ensure!(&b == b"ping", "echo answered {b:?}");
    }
    Ok(())
}

/// `n` connections at once through one proxy, a third each to a service by full name, a
/// service by short name and an external name through the relay; prints the failures.
pub async fn burst_rows(proxy: SocketAddr, n: usize) -> anyhow::Result<()> {
    eprintln!("{n} concurrent connections through the forward proxy ...");
    // The relay pod is made by the first relay connection: not part of the burst.
    one(proxy, 2).await.context("warming up the relay")?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(one(proxy, i))).collect();
    let mut failed = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    println!(
        "\n| forward proxy burst | connections | failed | time |\n|---|---:|---:|---:|\n| web, echo, private.example.internal (relay) | {n} | {} | {:.2} s |",
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(e) = failed.first() {
        println!("(first failure: {e})");
    }
    Ok(())
}
