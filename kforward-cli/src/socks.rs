//! `kforward socks`: the forward proxy into the cluster on one local port, until Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use kforward_core::forward_proxy::{
    ForwardProxy, ForwardProxyOptions, ProxyAuth, ProxyEvent, check_exposure,
};
use kforward_core::no_proxy::NoProxy;
use kforward_core::relay::RelayOptions;
use tokio::sync::broadcast;

use crate::args::{Output, SocksArgs};
use crate::forward::connect;
use crate::signal;

/// Parses `--listen`: `IP:PORT`, `[IPv6]:PORT`, or `localhost:PORT`.
///
/// # Errors
///
/// A message naming the value.
pub fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    let s = s.trim();
    let s = match s.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_string(),
    };
    s.parse().with_context(|| {
        format!("--listen {s:?} is not an address: use IP:PORT, e.g. 127.0.0.1:1080 (port 0 picks a free one)")
    })
}

/// The core's options from the arguments.
///
/// # Errors
///
/// Bad credentials.
pub fn options(a: &SocksArgs) -> anyhow::Result<ForwardProxyOptions> {
    let auth = match &a.auth {
        Some(s) => Some(
            s.parse::<ProxyAuth>()
                .map_err(|e| anyhow::anyhow!("--auth (or KFORWARD_PROXY_AUTH): {e}"))?,
        ),
        None => None,
    };
    let relay = (!a.no_relay).then(|| {
        let mut r = RelayOptions::default();
        if let Some(image) = &a.relay_image {
            r.image = image.clone();
        }
        r
    });
    Ok(ForwardProxyOptions {
        namespace: a.cluster.namespace.clone(),
        cluster_domain: a.cluster_domain.clone(),
        direct: NoProxy::parse(&a.direct),
        relay,
        auth,
        pod_wait: a.pod_running_timeout,
        ..Default::default()
    })
}

fn print(output: Output, e: &ProxyEvent) {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            if let Ok(line) = serde_json::to_string(e) {
                let _ = writeln!(out, "{line}");
            }
        }
        Output::Text => match e {
            ProxyEvent::Ready {
                local_addr,
                pac_url,
                namespace,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "Proxying on {local_addr} (SOCKS5, SOCKS4a, HTTP; namespace {namespace}); PAC file at {pac_url}"
                );
            }
            ProxyEvent::ConnectionOpened {
                destination, route, ..
            } => {
                let _ = writeln!(out, "Handling connection for {destination} -> {route}");
            }
            ProxyEvent::ConnectionFailed {
                destination,
                message,
                ..
            } => eprintln!("error: {destination}: {message}"),
            _ => {}
        },
    }
    let _ = out.flush();
}

async fn print_events(mut rx: broadcast::Receiver<ProxyEvent>, output: Output) {
    loop {
        match rx.recv().await {
            Ok(e) => print(output, &e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "output fell behind; some events were not printed"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Runs `kforward socks` until Ctrl-C or SIGTERM, then deletes the relay pod it made.
///
/// # Errors
///
/// A bad address or credentials, a non-loopback address without credentials, the
/// kubeconfig, or an address that cannot be bound.
pub async fn run(a: SocksArgs) -> anyhow::Result<()> {
    let addr = parse_listen(&a.listen)?;
    let opts = options(&a)?;
    check_exposure(addr, opts.auth.is_some())?;
    let ctx = connect(&a.cluster).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (try --listen 127.0.0.1:0 for a free port)")
    })?;
    let proxy = ForwardProxy::new(ctx, opts);
    let printer = tokio::spawn(print_events(proxy.subscribe(), a.output));
    proxy.run(listener, signal::shutdown()).await?;
    drop(proxy);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), printer).await;
    Ok(())
}
