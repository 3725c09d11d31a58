//! `tls-floor`: the least CPU a port-forward client can spend per GiB of a download, on its
//! own (`compare --paths ...,floor` measures the same rounds interleaved with the paths').
//! What a round does and why is in [`kforward_benches::floor`].
//!
//! ```text
//! cargo build --release -p kforward-benches && target/release/tls-floor [--bytes N] [--rounds R]
//! ```
//!
//! The floor's child is this binary started with `kforward_benches::floor::CHILD_ARG` as
//! its first argument.

use anyhow::{Context, bail};
use kforward_benches::floor::{self, Floor};

const USAGE: &str = "usage: tls-floor [--bytes N (default 1073741824)] [--rounds R (default 3)]";

fn main() -> anyhow::Result<()> {
    if let Some(child) = floor::child_if_asked() {
        return child;
    }
    let mut bytes: u64 = 1 << 30;
    let mut rounds: u64 = 3;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || -> anyhow::Result<u64> { Ok(it.next().context(USAGE)?.parse()?) };
        match a.as_str() {
            "--bytes" => bytes = value()?,
            "--rounds" => rounds = value()?,
            _ => bail!("{USAGE}"),
        }
    }
    if bytes == 0 || rounds == 0 {
        bail!("--bytes and --rounds must be at least 1\n{USAGE}");
    }
    tokio::runtime::Runtime::new()?.block_on(run(bytes, rounds))
}

async fn run(bytes: u64, rounds: u64) -> anyhow::Result<()> {
    let floor = Floor::new()?;
    let mut per_gib = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let r = floor.round(bytes).await?;
        per_gib.push(r.cpu_ms_per_gib(bytes));
        rates.push(r.mb_per_s(bytes));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| floor: TLS 1.3 AES-128-GCM socket -> decrypt -> loopback socket, one thread | CPU ms per GiB | MB/s |"
    );
    println!("|---|---:|---:|");
    println!(
        "| {rounds} rounds of {} MiB, medians | {:.0} | {:.0} |",
        bytes >> 20,
        median(per_gib),
        median(rates)
    );
    Ok(())
}
