//! Printing events: kubectl's lines, or one JSON object per line.

use std::io::Write;

use kforward_core::transport::Transport;
use kforward_core::{Event, ForwardState};

use crate::args::Output;

/// Prints one event on stdout in the chosen form. Text mode prints what kubectl prints
/// (`Forwarding from ...`, `Handling connection for ...`) and sends errors and reconnects
/// to stderr.
pub fn print(output: Output, event: &Event) {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(out, "{line}");
            }
        }
        Output::Text => match event {
            Event::Ready {
                local_addr,
                target,
                namespace,
                ..
            } if target == "socks" => {
                let _ = writeln!(
                    out,
                    "Proxying on {local_addr} (SOCKS5, SOCKS4a, HTTP; namespace {namespace}); PAC file at http://{local_addr}/proxy.pac"
                );
            }
            Event::Routed {
                destination, route, ..
            } => {
                let _ = writeln!(out, "Handling connection for {destination} -> {route}");
            }
            Event::Ready {
                local_addr,
                remote_port,
                pod_port,
                transport,
                ..
            } => {
                let remote = pod_port.map_or_else(|| remote_port.clone(), |p| p.to_string());
                let _ = writeln!(out, "Forwarding from {local_addr} -> {remote}");
                if *transport == Transport::Websocket {
                    eprintln!(
                        "note: {local_addr}: port-forward over v4.channel.k8s.io (the cluster \
                         offers no SPDY, or --transport websocket): a client's half-close does \
                         not reach the pod"
                    );
                }
            }
            Event::ConnectionOpened { forward, .. } => {
                let _ = writeln!(out, "Handling connection for {forward}");
            }
            Event::ConnectionMoved {
                forward, from, pod, ..
            } => {
                let _ = writeln!(
                    out,
                    "{forward}: pod {from} is gone; connection opened again on {pod}"
                );
            }
            Event::Error { forward, message } => {
                eprintln!("error: {forward}: {message}");
            }
            Event::State {
                forward,
                state:
                    ForwardState::Reconnecting {
                        attempt,
                        next_delay_ms,
                        error,
                    },
            } => {
                eprintln!(
                    "{forward}: reconnecting (attempt {attempt} in {next_delay_ms} ms): {error}"
                );
            }
            _ => {}
        },
    }
    let _ = out.flush();
}
