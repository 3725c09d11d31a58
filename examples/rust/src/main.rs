//! `kforward-example TARGET PORT [NAMESPACE]`: forwards TARGET's PORT to a free local
//! port under a supervisor, prints its events, fetches `/` through the local port, then
//! does the same over a tunnel straight to one of its pods.

use std::time::Duration;

use kforward_core::{KubeContext, KubeconfigSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), kforward_example::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: kforward-example TARGET PORT [NAMESPACE]   (e.g. svc/web 80 demo)");
        std::process::exit(2);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port"))?;
    let namespace = args.next();
    let started = kforward_example::forward_until_ready(
        None,
        namespace.as_deref(),
        &target,
        port,
        Duration::from_secs(60),
    )
    .await?;
    let addr = started.local_addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    println!("through {addr}: {}", reply.lines().next().unwrap_or(""));
    // The same pod, without a local port.
    let ctx = KubeContext::load(&KubeconfigSource::default()).await?;
    let ns = namespace.unwrap_or_else(|| ctx.default_namespace().to_string());
    if let Some((pod, pod_port)) = started.pods.first().and_then(|p| p.rsplit_once(':')) {
        let pod_port: u16 = pod_port.parse()?;
        let reply = kforward_example::http_get_over_tunnel(&ctx, &ns, pod, pod_port, "/").await?;
        println!(
            "over a tunnel to {pod}: {}",
            reply.lines().next().unwrap_or("")
        );
    }
    started.supervisor.shutdown().await;
    Ok(())
}
