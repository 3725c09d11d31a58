//! `soak`: many forwards and connections through a real `kforward run` while a chaos loop
//! breaks the cluster; progress every 10 s on stderr, one JSON object as the last line
//! on stdout. See `kforward_benches::soak`.
//!
//! `cargo build --release -p kforward-benches -p kforward-cli && target/release/soak --minutes 10`

use std::time::Duration;

use anyhow::{Context, bail};
use kforward_benches::soak::{SoakOptions, run};

const USAGE: &str =
    "usage: soak [--minutes M] [--conns N] [--seed S] [--kforward PATH] [--keep-log]
defaults: --minutes 10 --conns 200 --seed 1, kforward beside this binary;
exits 1 when bytes were corrupted, a connection ended or was refused without a fault to
explain it, relay pods were left behind, or (in a run of 3 minutes or more) kforward's
peak RSS in the last minute was over 1.1x its peak in the second; kforward's stderr is
kept then, and with --keep-log always (RUST_LOG passes through to it)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut o = SoakOptions {
        duration: Duration::from_secs(600),
        conns: 200,
        kforward: std::env::current_exe()?.with_file_name("kforward"),
        seed: 1,
        report_every: Duration::from_secs(10),
        keep_log: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--keep-log" {
            o.keep_log = true;
            continue;
        }
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            return Ok(());
        }
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--minutes" => {
                let m: f64 = v.parse().with_context(|| format!("--minutes {v}"))?;
                if !(m > 0.0 && m <= 24.0 * 60.0) {
                    bail!("--minutes {v}: give more than 0, up to a day");
                }
                o.duration = Duration::from_secs_f64(m * 60.0);
            }
            "--conns" => o.conns = v.parse().with_context(|| format!("--conns {v}"))?,
            "--seed" => o.seed = v.parse().with_context(|| format!("--seed {v}"))?,
            "--kforward" => o.kforward = v.into(),
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    if o.conns == 0 {
        bail!("--conns 0: at least one connection");
    }
    let report = run(&o).await?;
    println!("{}", report.json);
    let v = &report.verdict;
    if report.corrupted_bytes > 0
        || v.unexpected_ends > 0
        || v.refused > 0
        || report.relay_pods_left > 0
        || report.rss_flat == Some(false)
    {
        std::process::exit(1);
    }
    Ok(())
}
