//! `kforward run -f CONFIG.json`: many forwards under one supervisor.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use kforward_core::config::{EntryDefaults, load_config_document_file};
use kforward_core::relay::RelayOptions;
use kforward_core::spec::{ForwardSpec, Protocol};
use kforward_core::supervisor::{Supervisor, SupervisorEvent, SupervisorOptions};
use kforward_core::{Event, ForwardOptions, ForwardState};
use tokio::sync::broadcast;

use crate::args::{Output, RunArgs};
use crate::{signal, table};

/// Loads and checks the whole file before anything starts: every bad entry is reported.
/// `-n`, `--context` and `--kubeconfig` fill what entries leave unset, and the PROXY
/// protocol flags what TCP entries leave unset. Each spec comes with the relay settings of
/// its entry: the file's `relay` section, then the relay flags (`--relay-env` replacing the
/// variables of `relay.env` it names), then the entry's own `relay_*` fields.
///
/// # Errors
///
/// The file cannot be read or parsed, an entry or the relay section is invalid, a relay
/// flag is bad, or `--only` names an alias the file does not have.
pub fn load_specs(a: &RunArgs) -> anyhow::Result<Vec<(ForwardSpec, RelayOptions)>> {
    let defaults = EntryDefaults {
        namespace: a.cluster.namespace.clone(),
        context: a.cluster.context.clone(),
        kubeconfig: a
            .cluster
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string()),
    };
    let document = load_config_document_file(&a.file, &defaults)?;
    let mut flags = RelayOptions::default();
    document
        .relay
        .apply_to(&mut flags)
        .with_context(|| format!("{}: the relay section", a.file.display()))?;
    crate::relay::apply(&a.relay, &mut flags).with_context(|| {
        format!(
            "the relay settings ({}'s relay section with the relay flags)",
            a.file.display()
        )
    })?;
    let configs = document.forwards;
    let mut specs = Vec::new();
    for c in &configs {
        if !a.only.is_empty() && !c.alias.as_ref().is_some_and(|al| a.only.contains(al)) {
            continue;
        }
        // Validated by load_config_document_file; a failure here is still reported, not unwrapped.
        let spec = ForwardSpec::try_from(c).with_context(|| format!("entry {}", c.label()))?;
        let spec = match spec.protocol {
            Protocol::Tcp => a.proxy.apply(spec),
            Protocol::Udp => spec,
        };
        let mut relay = flags.clone();
        c.relay
            .apply_to(&mut relay)
            .with_context(|| format!("entry {}", c.label()))?;
        specs.push((spec, relay));
    }
    let unknown: Vec<&String> = a
        .only
        .iter()
        .filter(|al| !configs.iter().any(|c| c.alias.as_ref() == Some(*al)))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<String> = configs.iter().filter_map(|c| c.alias.clone()).collect();
        bail!(
            "--only names aliases not in {}: {} (aliases there: {})",
            a.file.display(),
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        );
    }
    if specs.is_empty() {
        bail!("{} has no forwards to start", a.file.display());
    }
    Ok(specs)
}

fn line(e: &SupervisorEvent) -> Option<String> {
    let f = |forward: &str| forward.to_string();
    Some(match &e.event {
        Event::Ready {
            forward,
            local_addr,
            pod_port,
            remote_port,
            transport,
            ..
        } => format!(
            "{}: forwarding from {local_addr} -> {}{}",
            f(forward),
            pod_port.map_or_else(|| remote_port.clone(), |p| p.to_string()),
            match transport {
                kforward_core::transport::Transport::Auto => String::new(),
                t => format!(" (port-forward over {t})"),
            }
        ),
        Event::State { forward, state } => match state {
            ForwardState::Ready => format!("{forward}: ready"),
            ForwardState::Reconnecting {
                attempt,
                next_delay_ms,
                error,
            } => format!(
                "{forward}: reconnecting (attempt {attempt} in {next_delay_ms} ms): {error}"
            ),
            ForwardState::Failed { error } => format!("{forward}: failed: {error}"),
            ForwardState::Stopped => format!("{forward}: stopped"),
            _ => return None,
        },
        Event::Endpoints { forward, pods, .. } => {
            format!("{forward}: pods now {}", pods.join(", "))
        }
        Event::Error { forward, message } => format!("{forward}: error: {message}"),
        _ => return None,
    })
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    let specs = load_specs(&a)?;
    let forward = ForwardOptions {
        pod_running_timeout: a.pod_running_timeout,
        transport: a.transport,
        ..Default::default()
    };
    let opts = SupervisorOptions {
        forward,
        ..Default::default()
    };
    // Before any forward can print `ready`: a SIGTERM right after it must not be lost.
    let mut stop = signal::Shutdown::listen();
    // The supervisor keeps each entry up; UDP and proxy entries of one cluster with the
    // same relay settings share one relay pod per namespace, deleted when they stop.
    let sup = Supervisor::new(opts.clone());
    let mut rx = sup.subscribe();
    for (spec, relay) in specs {
        let forward = ForwardOptions {
            relay,
            ..opts.forward.clone()
        };
        sup.add_with(spec, forward);
    }
    let tty = a.output == Output::Text && std::io::stdout().is_terminal();
    let mut redraw = tokio::time::interval(Duration::from_millis(500));
    let mut drawn = 0usize;
    loop {
        tokio::select! {
            () = stop.wait() => break,
            _ = redraw.tick(), if tty => {
                drawn = table::redraw(&sup.status(), drawn);
            }
            ev = rx.recv() => match ev {
                Ok(e) => print(&e, a.output, tty),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "output fell behind; some events were not printed");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    sup.shutdown().await;
    // Print what the shutdown produced.
    while let Ok(e) = rx.try_recv() {
        print(&e, a.output, tty);
    }
    if tty {
        table::redraw(&sup.status(), drawn);
    }
    Ok(())
}

/// Prints one event: as JSON, as a line of text, or not at all while a table is drawn.
fn print(e: &SupervisorEvent, output: Output, tty: bool) {
    match output {
        Output::Json => {
            if let Ok(l) = serde_json::to_string(e) {
                println!("{l}");
            }
        }
        Output::Text if !tty => {
            if let Some(l) = line(e) {
                println!("{l}");
            }
        }
        Output::Text => {}
    }
}
