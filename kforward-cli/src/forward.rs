//! `kforward forward`: one target, one or more ports, until Ctrl-C.

use anyhow::Context;
use kforward_core::spec::{ForwardSpec, PortMapping, Target, parse_addresses};
use kforward_core::{Event, ForwardOptions, KubeContext, KubeconfigSource};
use tokio::sync::broadcast;

use crate::args::{ClusterArgs, ForwardArgs, Output};
use crate::{output, signal};

/// Converts the arguments into the core's spec.
///
/// # Errors
///
/// A bad target, port or address, named with its value.
pub fn spec_from_args(a: &ForwardArgs) -> anyhow::Result<ForwardSpec> {
    let target = Target::parse_kubectl(&a.target)?;
    let ports = a
        .ports
        .iter()
        .map(|p| PortMapping::parse_kubectl(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = ForwardSpec::new(target, ports).with_addresses(parse_addresses(&a.address)?);
    if a.udp {
        spec = spec.with_protocol(kforward_core::spec::Protocol::Udp);
    }
    if let Some(ns) = &a.cluster.namespace {
        spec = spec.with_namespace(ns);
    }
    Ok(spec)
}

/// Loads the kubeconfig the flags point at.
pub async fn connect(c: &ClusterArgs) -> anyhow::Result<KubeContext> {
    let src = KubeconfigSource {
        path: c.kubeconfig.clone(),
        context: c.context.clone(),
    };
    Ok(KubeContext::load(&src).await?)
}

/// Prints events as they come until `stop` resolves.
pub(crate) async fn print_events(mut rx: broadcast::Receiver<Event>, output: Output) {
    loop {
        match rx.recv().await {
            Ok(e) => output::print(output, &e),
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

pub async fn run(a: ForwardArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(&a)?;
    let ctx = connect(&a.cluster).await?;
    let mut opts = ForwardOptions {
        pod_running_timeout: a.pod_running_timeout,
        ..Default::default()
    };
    crate::relay::apply(&a.relay, &mut opts.relay)?;
    // UDP goes through a relay pod, which the forwarder deletes when it stops.
    let mut fwd = kforward_core::forwarder_for(ctx, spec, opts)?;
    let printer = tokio::spawn(print_events(fwd.subscribe(), a.output));
    let started = fwd.start().await;
    if let Err(e) = started {
        printer.abort();
        return Err(e).context(format!("cannot forward {} {}", a.target, a.ports.join(" ")));
    }
    signal::shutdown().await;
    fwd.stop().await;
    // Let the printer drain the last events.
    drop(fwd);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), printer).await;
    Ok(())
}
