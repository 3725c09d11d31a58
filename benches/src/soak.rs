//! The soak: a testkit cluster, a real `kforward run` of 20 forwards, many long-lived
//! connections checked byte by byte, and a chaos loop breaking the cluster meanwhile.
//!
//! See [`run`]; `target/release/soak --help` runs it from the command line, and
//! `kforward-cli/tests/it/soak.rs` runs it for 60 s in `cargo test`.

pub mod chaos;
pub mod ledger;
pub mod pattern;
pub mod procstat;
pub mod setup;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kforward_testkit::Cluster;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use chaos::{FaultLog, Schedule};
use ledger::Verdict;
use procstat::ProcSample;
use setup::{RELAY_SELECTOR, Traffic};
use traffic::Totals;

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the traffic and the faults go on.
    pub duration: Duration,
    /// Concurrent TCP echo connections.
    pub conns: usize,
    /// The `kforward` binary.
    pub kforward: PathBuf,
    /// Seed of every random choice (sizes, pace, which pod dies).
    pub seed: u64,
    /// Between progress lines (RSS and fds of the kforward process).
    pub report_every: Duration,
    /// Keep kforward's stderr after the run even when all went well (to read, with
    /// `RUST_LOG`, what it did around a fault).
    pub keep_log: bool,
}

/// One progress sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the traffic began.
    pub t: f64,
    /// The kforward process then.
    pub proc: ProcSample,
    /// Its established connections to the API server then (SPDY sessions, watches and
    /// the spare connection): what most of its memory beyond the connections' follows.
    pub api_connections: usize,
}

/// What a soak found.
#[derive(Debug)]
pub struct SoakReport {
    /// The counts, by kind of end.
    pub verdict: Verdict,
    /// Bytes moved (written and read back).
    pub bytes_moved: u64,
    /// Bytes read back that differ from what was sent.
    pub corrupted_bytes: u64,
    /// The progress samples.
    pub samples: Vec<Sample>,
    /// Relay pods still in the cluster after kforward exited.
    pub relay_pods_left: usize,
    /// Whether kforward's peak RSS in the last minute stayed within 1.1x of its peak in the
    /// second (the first minute is the warm-up); `None` for a run under three minutes.
    pub rss_flat: Option<bool>,
    /// The whole report as the JSON object of the last line.
    pub json: Value,
}

/// Peak RSS (MiB), fds and API server connections of the samples with `from <= t < to`.
fn peak(samples: &[Sample], from: f64, to: f64) -> (f64, usize, usize) {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .fold((0.0, 0, 0), |(r, f, a), s| {
            (
                r.max(s.proc.rss_mib),
                f.max(s.proc.fds),
                a.max(s.api_connections),
            )
        })
}

/// Starts `kforward run` on `file` and returns it with the local address of each alias,
/// once all `n` forwards are ready (within `ready_within`); each connection's pod goes
/// into `totals`.
///
/// # Errors
///
/// When kforward does not start, exits, or a forward fails or is not ready in time.
pub async fn start_kforward(
    kforward: &std::path::Path,
    file: &std::path::Path,
    stderr: std::fs::File,
    n: usize,
    ready_within: Duration,
    totals: Arc<Totals>,
) -> anyhow::Result<(tokio::process::Child, BTreeMap<String, SocketAddr>)> {
    let mut child = tokio::process::Command::new(kforward)
        .args(["run", "-o", "json", "-f"])
        .arg(file)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", kforward.display()))?;
    let stdout = child.stdout.take().context("kforward's stdout")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    // Reads every line to the end, so kforward never blocks on a full pipe; notes which
    // pod each connection went to, and hands the rest to the wait below.
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let event = v["event"].as_str().unwrap_or_default();
            if event == "connection_opened" || event == "connection_moved" {
                if let (Some(forward), Some(peer), Some(pod)) = (
                    v["forward"].as_str(),
                    v["peer"].as_str().and_then(|p| p.parse().ok()),
                    v["pod"].as_str(),
                ) {
                    if event == "connection_opened" {
                        totals.opened(forward, peer, pod.to_string());
                    } else {
                        totals.moved(forward, peer, pod.to_string());
                    }
                }
            } else if !tx.is_closed() {
                let _ = tx.send(v);
            }
        }
    });
    let mut ready = BTreeMap::new();
    let wait = async {
        // Dropped when the wait ends: later events are not kept.
        let mut rx = rx;
        while ready.len() < n {
            let v = rx
                .recv()
                .await
                .context("kforward exited before all forwards were ready")?;
            if v["event"] == "ready" {
                let alias = v["forward"].as_str().unwrap_or_default().to_string();
                let addr: SocketAddr = v["local_addr"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("local_addr of {v}"))?;
                ready.entry(alias).or_insert(addr);
            } else if v["event"] == "failed" || v["event"] == "error" {
                bail!("a forward failed to start: {v}");
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(ready_within, wait)
        .await
        .with_context(|| format!("the forwards were not all ready within {ready_within:?}"))??;
    Ok((child, ready))
}

/// Runs a soak against a fresh testkit cluster, printing a progress line every
/// `report_every` (and the faults as they come) on stderr.
///
/// # Errors
///
/// When the cluster or kforward cannot be started, or a fault cannot be injected.
pub async fn run(o: &SoakOptions) -> anyhow::Result<SoakReport> {
    let cluster = Cluster::start().await?;
    let external = setup::create(&cluster).await?;
    let plans = setup::forwards(external);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("soak.json");
    setup::write_run_file(&file, &plans, cluster.kubeconfig_path())?;
    let log_path = dir.path().join("kforward.stderr");
    let totals = Arc::new(Totals::default());
    let (mut child, ready) = start_kforward(
        &o.kforward,
        &file,
        std::fs::File::create(&log_path)?,
        plans.len(),
        Duration::from_secs(120),
        totals.clone(),
    )
    .await?;
    let pid = child.id().context("kforward's pid")?;
    let setup_stats = cluster.stats();

    let stop = CancellationToken::new();
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut tasks = Vec::new();
    let echo: Vec<_> = plans
        .iter()
        .filter_map(|p| match &p.traffic {
            Traffic::Echo { apps } => Some((p.alias.clone(), apps.clone())),
            _ => None,
        })
        .collect();
    let max_life = Duration::from_secs(45).min(o.duration / 3);
    for i in 0..o.conns {
        let (alias, apps) = echo[i % echo.len()].clone();
        let addr = ready[&alias];
        tasks.push(tokio::spawn(traffic::echo_slot(
            alias,
            apps,
            addr,
            max_life,
            rand::Rng::random(&mut rng),
            totals.clone(),
            stop.clone(),
        )));
    }
    for p in &plans {
        let addr = ready[&p.alias];
        match p.traffic {
            Traffic::Udp => {
                for _ in 0..2 {
                    tasks.push(tokio::spawn(traffic::udp_flow(
                        addr,
                        rand::Rng::random(&mut rng),
                        totals.clone(),
                        stop.clone(),
                    )));
                }
            }
            Traffic::Hello => tasks.push(tokio::spawn(traffic::hello_loop(
                p.alias.clone(),
                addr,
                setup::EXTERNAL_HOST,
                totals.clone(),
                stop.clone(),
            ))),
            Traffic::Echo { .. } => {}
        }
    }
    let log = FaultLog::default();
    let schedule = Schedule::for_run(o.duration);
    let chaos_run = chaos::run(
        &cluster,
        &schedule,
        o.duration,
        start,
        log.clone(),
        StdRng::seed_from_u64(o.seed ^ 0xc4a05),
        stop.clone(),
    );
    let sampler = async {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval_at((start + o.report_every).into(), o.report_every);
        while start.elapsed() < o.duration + Duration::from_millis(500) {
            tick.tick().await;
            let Some(proc) = procstat::sample(pid) else {
                break;
            };
            let api_connections =
                procstat::connections_to(pid, cluster.api_addr().port()).unwrap_or(0);
            let t = start.elapsed().as_secs_f64();
            eprintln!(
                "soak: t={t:.0}s rss={:.1}MiB fds={} api_conns={api_connections} live={} moved={:.1}MiB corrupted={} faults={}",
                proc.rss_mib,
                proc.fds,
                totals.live.load(Ordering::Relaxed),
                totals.bytes_moved.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
                totals.corrupted_bytes.load(Ordering::Relaxed),
                log.all().len()
            );
            samples.push(Sample {
                t,
                proc,
                api_connections,
            });
        }
        samples
    };
    let (chaos_result, samples) = tokio::join!(chaos_run, sampler);
    stop.cancel();
    chaos_result?;
    // Every connection half-closes and reads its echo to the end; a stalled one gives up
    // after traffic::STALL.
    let drain = traffic::STALL + Duration::from_secs(30);
    if tokio::time::timeout(drain, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        eprintln!("soak: some connections did not finish within {drain:?}");
    }
    let end_stats = cluster.stats();
    let exit = stop_kforward(&mut child, pid).await;
    let relays = |c: &Cluster| c.pods(setup::NAMESPACE, Some(RELAY_SELECTOR)).len();
    let _ = cluster
        .wait_for("the relay pods to go", Duration::from_secs(30), |c| {
            relays(c) == 0
        })
        .await;
    let relay_pods_left = relays(&cluster);

    let faults = log.all();
    let outcomes = totals.outcomes();
    let verdict = ledger::judge(&outcomes, &faults, start);
    // The short exchanges with the external host through the relay pod that got their
    // answer (the long echo streams are most of `completed`).
    let greetings = outcomes
        .iter()
        .filter(|o| {
            o.how == ledger::End::Completed
                && plans
                    .iter()
                    .any(|p| p.alias == o.forward && p.traffic == Traffic::Hello)
        })
        .count();
    let mut fault_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for h in &faults {
        *fault_counts.entry(h.fault.name()).or_default() += 1;
    }
    let total_s = o.duration.as_secs_f64();
    let (rss1, fds1, api1) = peak(&samples, 0.0, 60.0);
    let (rss2, fds2, api2) = peak(&samples, 60.0, 120.0);
    let (rss_last, fds_last, api_last) = peak(&samples, (total_s - 60.0).max(0.0), f64::MAX);
    let rss_flat = (total_s >= 180.0).then_some(rss_last <= 1.1 * rss2);
    let api_all = samples.iter().map(|s| s.api_connections);
    let (api_min, api_max) = (api_all.clone().min(), api_all.max());
    let bytes_moved = totals.bytes_moved.load(Ordering::Relaxed);
    let corrupted_bytes = totals.corrupted_bytes.load(Ordering::Relaxed);
    let udp_sent = totals.udp_sent.load(Ordering::Relaxed);
    let udp_received = totals.udp_received.load(Ordering::Relaxed);
    if verdict.unexpected_ends + verdict.refused > 0 || exit.is_none() || o.keep_log {
        eprintln!("soak: kforward's stderr is in {}", log_path.display());
        // Kept for a look after the run.
        let _ = dir.keep();
    }
    let json = json!({
        "minutes": total_s / 60.0,
        "forwards": plans.len(),
        "concurrent_connections": o.conns,
        "bytes_moved": bytes_moved,
        "corrupted_bytes": corrupted_bytes,
        "connections": verdict.completed + verdict.expected_ends.values().sum::<u64>()
            + verdict.unexpected_ends + verdict.refused_while_down + verdict.refused,
        "completed": verdict.completed,
        "external_greetings": greetings,
        "expected_ends": verdict.expected_ends,
        "unexpected_ends": verdict.unexpected_ends,
        "refused_connections": verdict.refused,
        "refused_while_api_down": verdict.refused_while_down,
        "refused_by_fault": verdict.refused_by_fault.iter().map(|(fault, r)| {
            (fault.to_string(), json!({
                "count": r.count,
                "latest_start_s": r.latest_start_s,
                "samples": r.samples,
            }))
        }).collect::<serde_json::Map<_, _>>(),
        "problems": verdict.samples,
        "udp": {"sent": udp_sent, "received": udp_received},
        "faults": fault_counts,
        "api_requests": end_stats.requests - setup_stats.requests,
        "watches_opened": end_stats.watches_total - setup_stats.watches_total,
        "port_forward_streams": end_stats.port_forwards_total - setup_stats.port_forwards_total,
        "rss_mib": {"first_minute": rss1, "second_minute": rss2, "last_minute": rss_last},
        "rss_flat": rss_flat,
        "fds": {"first_minute": fds1, "second_minute": fds2, "last_minute": fds_last},
        "api_connections": {"first_minute": api1, "second_minute": api2, "last_minute": api_last,
            "min": api_min, "max": api_max},
        "kforward_exit": exit,
        "relay_pods_left": relay_pods_left,
    });
    Ok(SoakReport {
        verdict,
        bytes_moved,
        corrupted_bytes,
        samples,
        relay_pods_left,
        rss_flat,
        json,
    })
}

/// Stops kforward with SIGINT (as Ctrl-C would) and waits up to 30 s for it to exit;
/// its exit code, or `None` when it had to be killed.
pub async fn stop_kforward(child: &mut tokio::process::Child, pid: u32) -> Option<i32> {
    // `kill` rather than libc: no unsafe outside kforward-ffi.
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    }
}
