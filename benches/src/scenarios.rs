//! The compare harness's scenarios beyond bulk and first byte (issue 13): a burst of new
//! connections, half-close, and a stalled reader, through every path in one run.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Path;
use crate::measure::Dial;

/// How long a half-closed connection may wait for EOF before it counts as never ending.
const EOF_CAP: Duration = Duration::from_secs(5);

/// `GET path` with `Connection: close`, read to the end of its body as curl does; the body's
/// bytes.
async fn get(dial: &Dial, path: &str) -> anyhow::Result<u64> {
    let mut s = dial.connect().await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let total = crate::measure::read_response(&mut s, Vec::new()).await?;
    anyhow::ensure!(total > 0, "an empty reply");
    Ok(total)
}

/// The result of one burst.
struct Burst {
    total: Duration,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

/// `n` new connections at once, each one HTTP request.
async fn burst(dial: &Dial, n: usize) -> Burst {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let dial = dial.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(60), get(&dial, "/")).await;
                matches!(r, Ok(Ok(_))).then(|| t.elapsed())
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Some(d)) => times.push(d),
            _ => failed += 1,
        }
    }
    let total = start.elapsed();
    times.sort();
    let at = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Burst {
        total,
        p50: at(0.5),
        p99: at(0.99),
        failed,
    }
}

/// Sends `n` bytes to the echo server, shuts the write side; all bytes back, and how long
/// EOF took after the shutdown (`None`: no EOF within [`EOF_CAP`]).
async fn half_close(dial: &Dial, n: usize) -> anyhow::Result<Option<Duration>> {
    let s = dial.connect().await?;
    let (mut rd, mut wr) = tokio::io::split(s);
    let data = vec![0x5au8; n];
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await?;
        wr.shutdown().await?;
        Ok::<_, std::io::Error>((Instant::now(), wr))
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let read = async {
        loop {
            let k = rd.read(&mut buf).await?;
            if k == 0 {
                return Ok::<_, std::io::Error>(Instant::now());
            }
            got += k;
        }
    };
    let eof = tokio::time::timeout(EOF_CAP + Duration::from_secs(60), read).await;
    let (shut, _wr) = writer.await??;
    let eof = match eof {
        Ok(r) => Some(r?),
        Err(_) => None,
    };
    anyhow::ensure!(
        got == n || eof.is_none(),
        "{got} of {n} bytes came back before EOF"
    );
    Ok(eof
        .map(|e| e.saturating_duration_since(shut))
        .filter(|d| *d <= EOF_CAP))
}

/// Where a connection that stops reading stands beside three downloads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// No such connection.
    None,
    /// It stopped reading before the downloads start (for [`STOPPED_FOR`]).
    Before,
    /// It starts, and stops reading, while the downloads run (their connections are open
    /// and their requests sent first).
    During,
}

/// How long a reader has taken nothing before the downloads of [`Stall::Before`] start: a
/// client that stopped, not one between two reads.
const STOPPED_FOR: Duration = Duration::from_millis(300);

/// The stalled table's cases, in the order of [`Stall`]'s variants, as its notes name them.
const CASES: [&str; 3] = ["alone", "after", "beside"];

/// Opens a connection that asks for a large reply, takes its first byte and then nothing.
async fn stop_reading(dial: &Dial) -> anyhow::Result<Box<dyn crate::measure::Io>> {
    let mut s = dial.connect().await?;
    s.write_all(
        format!(
            "GET /bytes/{} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
            kforward_testkit::network::MAX_PATTERN_BYTES.min(1 << 30)
        )
        .as_bytes(),
    )
    .await?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    Ok(s)
}

/// MB/s of three downloads of `bytes` at once, beside a connection that stops reading
/// where `stall` says.
async fn with_stalled_reader(dial: &Dial, bytes: u64, stall: Stall) -> anyhow::Result<f64> {
    let mut stalled = None;
    if stall == Stall::Before {
        stalled = Some(stop_reading(dial).await?);
        tokio::time::sleep(STOPPED_FOR).await;
    }
    let start = Instant::now();
    let request = format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut s = dial.connect().await?;
        s.write_all(request.as_bytes()).await?;
        tasks.push(tokio::spawn(async move {
            crate::measure::read_response(&mut s, Vec::new()).await
        }));
    }
    if stall == Stall::During {
        stalled = Some(stop_reading(dial).await?);
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    drop(stalled);
    Ok(total as f64 / 1e6 / start.elapsed().as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The burst table: `conns` new connections at once through each path, `rounds` times
/// (the median round by total time is shown).
pub async fn burst_rows(paths: &[Path], conns: usize, rounds: usize) {
    eprintln!("burst of {conns} connections ...");
    let mut all: Vec<Vec<Burst>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            all[i].push(burst(&p.http, conns).await);
        }
    }
    println!(
        "\n| path | {conns} concurrent new connections, one HTTP request each: total | p50 | p99 | failed |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut totals = Vec::new();
    for (p, mut runs) in paths.iter().zip(all) {
        runs.sort_by_key(|b| b.total);
        let b = &runs[runs.len() / 2];
        totals.push((p.name, b.total));
        println!(
            "| {} | {} | {} | {} | {} |",
            p.name,
            ms(b.total),
            ms(b.p50),
            ms(b.p99),
            b.failed
        );
    }
    let get = |n: &str| totals.iter().find(|t| t.0 == n).map(|t| t.1);
    for a in ["kforward", "kforward-cli"] {
        if let (Some(x), Some(y)) = (get(a), get("kubectl")) {
            println!(
                "{a} / kubectl, burst total time: {:.2}x",
                x.as_secs_f64() / y.as_secs_f64()
            );
        }
    }
    println!("({rounds} rounds, the median by total time)");
}

/// The half-close table: N bytes to the echo pod, write side shut; time to EOF; for each
/// path, then for each of `more` (named ways to the echo pod that are not paths).
pub async fn half_close_rows(paths: &[Path], more: &[(&str, Dial)]) -> anyhow::Result<()> {
    eprintln!("half-close ...");
    let sizes = [1usize, 256 << 10, 64 << 20];
    println!("\n| path | EOF after shutdown, 1 B | 256 KiB | 64 MiB |");
    println!("|---|---:|---:|---:|");
    let rows = paths.iter().map(|p| (p.name, &p.echo));
    for (name, echo) in rows.chain(more.iter().map(|(n, d)| (*n, d))) {
        let mut cells = Vec::new();
        for n in sizes {
            cells.push(match half_close(echo, n).await {
                Ok(Some(d)) => ms(d),
                Ok(None) => format!("none in {} s", EOF_CAP.as_secs()),
                Err(e) => format!("failed: {e}"),
            });
        }
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("(every byte came back on each, else the cell says failed)");
    Ok(())
}

/// The stalled-reader table: three downloads' MB/s alone, after a connection stopped
/// reading (it has its session to itself where the path has sessions), and beside one that
/// stops while they run (it shares their session: reset at its bound, and the container
/// runtime sends its pod's data for a second more, see `RUNTIME_CLOSE_GRACE` in the
/// testkit), as shares of the first.
pub async fn stalled_rows(paths: &[Path], bytes: u64, rounds: usize) -> anyhow::Result<()> {
    eprintln!("stalled reader ...");
    println!(
        "\n| path | 3 downloads of {} MiB, MB/s | after a reader stopped | kept | beside a reader that stops | kept |",
        bytes >> 20
    );
    println!("|---|---:|---:|---:|---:|---:|");
    // Downloads that have not finished by then are stuck behind the stalled reader (as
    // kubectl's are: its session stops for everyone) and count as 0 MB/s: 30 s plus the
    // time of three downloads at 50 MB/s, far slower than any path here moves them.
    let stuck_after = Duration::from_secs(30) + Duration::from_secs_f64(3.0 * bytes as f64 / 50e6);
    for p in paths {
        let mut runs: [Vec<f64>; 3] = Default::default();
        let mut failed = None;
        for _ in 0..rounds {
            for (i, stall) in [Stall::None, Stall::Before, Stall::During]
                .into_iter()
                .enumerate()
            {
                match tokio::time::timeout(stuck_after, with_stalled_reader(&p.http, bytes, stall))
                    .await
                {
                    Ok(Ok(r)) => runs[i].push(r),
                    // A download that fails beside the stalled reader is what this
                    // measures: say so in the row instead of ending the run.
                    Ok(Err(e)) => failed = Some(format!("{}: {e}", CASES[i])),
                    Err(_) => {
                        runs[i].push(0.0);
                        failed = Some(format!(
                            "{}: stuck for {} s",
                            CASES[i],
                            stuck_after.as_secs()
                        ));
                    }
                }
            }
        }
        let [alone, after, beside] = runs.map(crate::median);
        let note = failed.map_or(String::new(), |f| {
            format!(" (a download failed or stuck, {f})")
        });
        println!(
            "| {} | {alone:.0} | {after:.0} | {:.0}% | {beside:.0} | {:.0}%{note} |",
            p.name,
            100.0 * after / alone,
            100.0 * beside / alone
        );
    }
    Ok(())
}
