//! `kforward proxy` (any host the cluster can reach, through a relay pod) and `kforward gc`
//! (relay pods of sessions that are gone).

use anyhow::Context;
use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target, parse_addresses};

use crate::args::{GcArgs, ProxyArgs};
use crate::forward::{connect, one_forward, serve_one};

/// Splits `HOST:PORT` (IPv6 as `[::1]:53`).
///
/// # Errors
///
/// When there is no port, or it is not 1-65535.
pub fn split_destination(dest: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = dest.rsplit_once(':').with_context(|| {
        format!("destination {dest:?} needs a port: HOST:PORT, e.g. db.internal:5432")
    })?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("destination {dest:?}: {port:?} is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "destination {dest:?} has no host");
    Ok((host.to_string(), port))
}

/// Converts the arguments into the core's spec.
///
/// # Errors
///
/// A bad destination, address or setting, named with its value.
pub fn spec_from_args(a: &ProxyArgs) -> anyhow::Result<ForwardSpec> {
    let (host, port) = split_destination(&a.destination)?;
    let target = Target::parse_kubectl(&format!("proxy/{host}"))?;
    let mut spec = ForwardSpec::new(
        target,
        [PortMapping::new(a.local_port.unwrap_or(port), port)],
    )
    .with_addresses(parse_addresses(&a.address)?);
    if a.udp {
        spec = spec.with_protocol(Protocol::Udp);
    }
    let spec = a.proxy.apply(a.cluster.apply(spec));
    spec.check()?;
    Ok(spec)
}

/// Runs `kforward proxy` until Ctrl-C or SIGTERM, then deletes the relay pod.
///
/// # Errors
///
/// A bad destination or address, the kubeconfig, or a forward that cannot start.
pub async fn run(a: ProxyArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(&a)?;
    // Relay streams are v4.channel.k8s.io WebSockets whatever the option says.
    let opts = one_forward(
        a.pod_running_timeout,
        &a.relay,
        kforward_core::transport::Transport::Auto,
    )?;
    serve_one(spec, opts, a.output)
        .await
        .with_context(|| format!("cannot proxy to {}", a.destination))
}

/// Runs `kforward gc`: deletes relay pods whose session stopped sending heartbeats.
///
/// # Errors
///
/// The kubeconfig, or the API server refusing to list or delete pods.
pub async fn gc(a: GcArgs) -> anyhow::Result<()> {
    let ctx = connect(&a.cluster).await?;
    let ns = if a.all_namespaces {
        None
    } else {
        Some(
            a.cluster
                .namespace
                .clone()
                .unwrap_or_else(|| ctx.default_namespace().to_string()),
        )
    };
    if a.stale_after < kforward_core::relay::HEARTBEAT_EVERY {
        eprintln!(
            "warning: --stale-after {:?} is shorter than the sessions' heartbeat ({:?}): relay pods of running kforward sessions may be deleted too",
            a.stale_after,
            kforward_core::relay::HEARTBEAT_EVERY
        );
    }
    let deleted = kforward_core::relay::gc_stale_after(&ctx, ns.as_deref(), a.stale_after).await?;
    for pod in &deleted {
        println!("pod/{pod} deleted");
    }
    if deleted.is_empty() {
        eprintln!("no stale relay pods");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_destination;

    #[test]
    fn destinations_split_into_host_and_port() {
        assert_eq!(
            split_destination("db.internal:5432").expect("valid"),
            ("db.internal".to_string(), 5432)
        );
        assert_eq!(
            split_destination("[fd00::1]:53").expect("valid").0,
            "fd00::1"
        );
        assert!(split_destination("db.internal").is_err());
        assert!(split_destination("db.internal:0").is_err());
    }
}
