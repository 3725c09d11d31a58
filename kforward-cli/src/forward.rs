//! `kforward forward`: one target, one or more ports, until Ctrl-C; and what it shares with
//! `kforward proxy`: one forward run by the core's supervisor, its events printed.

use std::time::Duration;

use anyhow::Context;
use kforward_core::spec::{ForwardSpec, PortMapping, Target, parse_addresses};
use kforward_core::supervisor::{Supervisor, SupervisorEvent, SupervisorOptions};
use kforward_core::{Event, ForwardOptions, ForwardState, KubeContext, KubeconfigSource};
use tokio::sync::broadcast;

use crate::args::{ClusterArgs, ForwardArgs, Output, RelayArgs};
use crate::{output, signal};

/// How long the printer gets to print the last events after the stop.
const DRAIN: Duration = Duration::from_secs(1);

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
    let spec = a.proxy.apply(a.cluster.apply(spec));
    spec.check()?;
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

/// Supervisor settings for the one forward of `forward` or `proxy`: a first start that
/// fails fails the command, as `kubectl port-forward` does; once started, the forward is
/// kept up.
///
/// # Errors
///
/// A bad relay flag (pull policy, pod patch), named.
pub(crate) fn one_forward(
    pod_running_timeout: Duration,
    relay: &RelayArgs,
    transport: kforward_core::transport::Transport,
) -> anyhow::Result<SupervisorOptions> {
    let mut forward = ForwardOptions {
        pod_running_timeout,
        transport,
        ..Default::default()
    };
    crate::relay::apply(relay, &mut forward.relay)?;
    Ok(SupervisorOptions {
        forward,
        retry_start: false,
        ..Default::default()
    })
}

/// Prints events as they come until the supervisor is gone. Errors and states before the
/// forward is first ready are left out: a failed start is the command's own error, and with
/// `-o json` the first line is the `ready` event, as scripts expect.
async fn print_events(mut rx: broadcast::Receiver<SupervisorEvent>, output: Output) {
    let mut started = false;
    loop {
        match rx.recv().await {
            Ok(e) => {
                // The forward's own `ready` event and the supervisor's `state` may come in
                // either order: the `ready` event opens the output.
                started |= matches!(e.event, Event::Ready { .. });
                if started || !matches!(e.event, Event::Error { .. } | Event::State { .. }) {
                    output::print(output, &e.event);
                }
            }
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

/// Runs `spec` under a supervisor, printing its events, until Ctrl-C or SIGTERM; then
/// stops it (closing its ports and deleting its relay pod).
///
/// # Errors
///
/// The forward's first start failed.
pub(crate) async fn serve_one(
    spec: ForwardSpec,
    opts: SupervisorOptions,
    output: Output,
) -> anyhow::Result<()> {
    // Before anything can print `ready`: a SIGTERM right after it must not be lost.
    let mut stop = signal::Shutdown::listen();
    let sup = Supervisor::new(opts);
    let printer = tokio::spawn(print_events(sup.subscribe(), output));
    let id = sup.add(spec);
    let mut status = sup
        .watch_status(id)
        .context("the forward is not in the supervisor")?;
    let outcome = {
        let settled =
            status.wait_for(|s| !matches!(s.state, ForwardState::Idle | ForwardState::Starting));
        tokio::select! {
            r = settled => r.ok().and_then(|s| match (&s.state, s.failure()) {
                (ForwardState::Failed { error }, e) => Some(e.map_or_else(|| error.clone(), ToString::to_string)),
                _ => None,
            }),
            () = stop.wait() => {
                sup.shutdown().await;
                return Ok(());
            }
        }
    };
    if let Some(error) = outcome {
        sup.shutdown().await;
        printer.abort();
        anyhow::bail!(error);
    }
    stop.wait().await;
    sup.shutdown().await;
    drop(sup);
    let _ = tokio::time::timeout(DRAIN, printer).await;
    Ok(())
}

pub async fn run(a: ForwardArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(&a)?;
    let opts = one_forward(a.pod_running_timeout, &a.relay, a.transport)?;
    serve_one(spec, opts, a.output)
        .await
        .with_context(|| format!("cannot forward {} {}", a.target, a.ports.join(" ")))
}
