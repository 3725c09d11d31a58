//! `kforward run -f CONFIG.json`: many forwards under one supervisor.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use kforward_core::config::load_config_file;
use kforward_core::relay::{RelayOptions, RelayPods, SharedRelayPods};
use kforward_core::spec::ForwardSpec;
use kforward_core::spec::Protocol;
use kforward_core::supervisor::{Supervisor, SupervisorEvent, SupervisorOptions};
use kforward_core::{Event, ForwardOptions, ForwardState, KubeContext, KubeconfigSource};
use tokio::sync::broadcast;

use crate::args::{Output, RunArgs};
use crate::{signal, table};

/// Loads and checks the whole file before anything starts: every bad entry is reported.
///
/// # Errors
///
/// The file cannot be read or parsed, an entry is invalid, or `--only` names an alias the
/// file does not have.
pub fn load_specs(a: &RunArgs) -> anyhow::Result<Vec<ForwardSpec>> {
    let configs = load_config_file(&a.file)?;
    let mut specs = Vec::new();
    for c in &configs {
        if !a.only.is_empty() && !c.alias.as_ref().is_some_and(|al| a.only.contains(al)) {
            continue;
        }
        // Validated by load_config_file; a failure here is still reported, not unwrapped.
        specs.push(ForwardSpec::try_from(c).with_context(|| format!("entry {}", c.label()))?);
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

/// The kubeconfig file and context a relay pod set belongs to.
type RelayKey = (Option<std::path::PathBuf>, Option<String>);

fn line(e: &SupervisorEvent) -> Option<String> {
    let f = |forward: &str| forward.to_string();
    Some(match &e.event {
        Event::Ready {
            forward,
            local_addr,
            pod_port,
            remote_port,
            ..
        } => format!(
            "{}: forwarding from {local_addr} -> {}",
            f(forward),
            pod_port.map_or_else(|| remote_port.clone(), |p| p.to_string())
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
    let mut relay = RelayOptions::default();
    crate::relay::apply(&a.relay, &mut relay)?;
    let opts = SupervisorOptions {
        forward: ForwardOptions {
            pod_running_timeout: a.pod_running_timeout,
            relay: relay.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let base = opts.forward.clone();
    let sup = Supervisor::new(opts);
    let mut rx = sup.subscribe();
    // UDP and proxy entries of one cluster share one relay pod per namespace.
    let mut relays: Vec<(RelayKey, SharedRelayPods)> = Vec::new();
    for s in specs {
        let relayed = s.protocol == Protocol::Udp || s.target.is_proxy();
        if !relayed {
            sup.add(s);
            continue;
        }
        let key = (s.kubeconfig.clone(), s.context.clone());
        let shared = match relays.iter().find(|(k, _)| *k == key) {
            Some((_, r)) => Some(r.clone()),
            None => match KubeContext::load(&KubeconfigSource {
                path: key.0.clone(),
                context: key.1.clone(),
            })
            .await
            {
                Ok(ctx) => {
                    let r = SharedRelayPods(RelayPods::new(ctx, relay.clone()));
                    relays.push((key, r.clone()));
                    Some(r)
                }
                // The forward reports the problem itself when it starts.
                Err(_) => None,
            },
        };
        sup.add_with(
            s,
            ForwardOptions {
                relay_pods: shared,
                ..base.clone()
            },
        );
    }
    let tty = a.output == Output::Text && std::io::stdout().is_terminal();
    let mut redraw = tokio::time::interval(Duration::from_millis(500));
    let mut drawn = 0usize;
    let stop = signal::shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = redraw.tick(), if tty => {
                drawn = table::redraw(&sup.status(), drawn);
            }
            ev = rx.recv() => match ev {
                Ok(e) => match a.output {
                    Output::Json => {
                        if let Ok(l) = serde_json::to_string(&e) {
                            println!("{l}");
                        }
                    }
                    Output::Text if !tty => {
                        if let Some(l) = line(&e) {
                            println!("{l}");
                        }
                    }
                    Output::Text => {}
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "output fell behind; some events were not printed");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    sup.shutdown().await;
    for (_, r) in &relays {
        r.0.delete_all().await;
    }
    // Print what the shutdown produced.
    while let Ok(e) = rx.try_recv() {
        match a.output {
            Output::Json => {
                if let Ok(l) = serde_json::to_string(&e) {
                    println!("{l}");
                }
            }
            Output::Text if !tty => {
                if let Some(l) = line(&e) {
                    println!("{l}");
                }
            }
            Output::Text => {}
        }
    }
    if tty {
        table::redraw(&sup.status(), drawn);
    }
    Ok(())
}
