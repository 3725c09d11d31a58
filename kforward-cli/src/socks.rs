//! `kforward socks`: the forward proxy into the cluster on one local port, run by the
//! core's supervisor like any forward, until Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use kforward_core::forward_proxy::ProxyAuth;
use kforward_core::spec::{ForwardSpec, SocksSettings};

use crate::args::SocksArgs;
use crate::forward::{one_forward, serve_one};

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

/// The core's spec from the arguments.
///
/// # Errors
///
/// A bad address or credentials, or a non-loopback address without credentials.
pub fn spec_from_args(a: &SocksArgs) -> anyhow::Result<ForwardSpec> {
    let listen = parse_listen(&a.listen)?;
    let auth = match &a.auth {
        Some(s) => Some(
            s.parse::<ProxyAuth>()
                .map_err(|e| anyhow::anyhow!("--auth (or KFORWARD_PROXY_AUTH): {e}"))?,
        ),
        None => None,
    };
    let settings = SocksSettings {
        auth,
        direct: a.direct.clone(),
        relay: !a.no_relay,
        cluster_domain: a.cluster_domain.clone(),
    };
    let spec = a.cluster.apply(ForwardSpec::socks(settings, listen));
    spec.check()?;
    Ok(spec)
}

/// Runs `kforward socks` until Ctrl-C or SIGTERM, then deletes the relay pod it made.
///
/// # Errors
///
/// A bad address or credentials, a non-loopback address without credentials, the
/// kubeconfig, or an address that cannot be bound.
pub async fn run(a: SocksArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(&a)?;
    let opts = one_forward(a.pod_running_timeout, &a.relay)?;
    serve_one(spec, opts, a.output)
        .await
        .with_context(|| format!("cannot start the forward proxy on {}", a.listen))
}
