//! The live status table of `kforward run` on a terminal, redrawn in place.

use std::io::Write;

use kforward_core::{ForwardState, ForwardStatus};

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn state(s: &ForwardState) -> String {
    match s {
        ForwardState::Idle | ForwardState::Starting => "starting".into(),
        ForwardState::Ready => "ready".into(),
        ForwardState::Reconnecting { attempt, .. } => format!("reconnecting ({attempt})"),
        ForwardState::Failed { .. } => "failed".into(),
        ForwardState::Stopped => "stopped".into(),
        _ => "unknown".into(),
    }
}

/// The table's lines.
pub fn render(rows: &[ForwardStatus]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<18} {:<22} {:<22} {:<16} {:>5} {:>10} {:>10}  {}",
        "ALIAS", "TARGET", "LOCAL", "STATE", "CONNS", "IN", "OUT", "LAST ERROR"
    )];
    for r in rows {
        let local = r
            .local_addrs
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into());
        let err = r.last_error.clone().unwrap_or_default();
        let err: String = err.chars().take(60).collect();
        out.push(format!(
            "{:<18} {:<22} {:<22} {:<16} {:>5} {:>10} {:>10}  {}",
            r.label.chars().take(18).collect::<String>(),
            r.target.chars().take(22).collect::<String>(),
            local,
            state(&r.state),
            r.stats.connections_open,
            human(r.stats.bytes_in),
            human(r.stats.bytes_out),
            err
        ));
    }
    out
}

/// Redraws the table over the `previous` lines drawn; returns how many lines it drew.
pub fn redraw(rows: &[ForwardStatus], previous: usize) -> usize {
    let lines = render(rows);
    let mut out = std::io::stdout().lock();
    if previous > 0 {
        // Up to the first line of the old table, then clear to the end of the screen.
        let _ = write!(out, "\x1b[{previous}A\x1b[J");
    }
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
    lines.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
