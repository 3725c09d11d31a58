//! `spdy-bench`: the SPDY/3.1 transport against `v4.channel.k8s.io`, measured side by side
//! in one run against the testkit, until the `compare` harness takes the transport over.
//!
//! The parent starts a demo cluster; every measurement runs in a child process of its own
//! (the same binary, `spdy-bench case ...`), so that the child's CPU time is the client's
//! alone: the process that would forward; the parent's own CPU is the testkit's (API
//! server, kubelet, pods). Cases run interleaved, round after round, and the table shows
//! medians.
//!
//! ```text
//! cargo build --release -p kforward-benches && target/release/spdy-bench [--rounds 3] [--bulk-mib 1024]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kforward_core::transport::Transport;
use kforward_core::transport::spdy::{PodStream, SessionPool};
use kforward_core::{KubeContext, KubeconfigSource, Tunnel};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TRANSPORTS: [&str; 3] = ["websocket-spdy", "spdy", "v4"];

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a child reaches the web pod.
struct Client {
    ctx: KubeContext,
    pod: String,
    pool: Option<SessionPool>,
}

impl Client {
    async fn new(kubeconfig: &Path, pod: &str, transport: &str) -> anyhow::Result<Client> {
        let ctx = KubeContext::load(&KubeconfigSource::default().with_path(kubeconfig)).await?;
        let pool = match transport {
            "v4" => None,
            t => Some(SessionPool::new(
                ctx.clone(),
                "demo",
                t.parse::<Transport>()?,
            )),
        };
        Ok(Client {
            ctx,
            pod: pod.to_string(),
            pool,
        })
    }

    /// Opens a ready session ahead (SPDY only).
    async fn prepare(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.pool {
            p.prepare(&self.pod).await?;
        }
        Ok(())
    }

    async fn connect(&self, port: u16) -> anyhow::Result<Box<dyn Io>> {
        Ok(match &self.pool {
            Some(p) => {
                let s: PodStream = p.connect(&self.pod, port).await?;
                Box::new(s)
            }
            None => Box::new(Tunnel::open(&self.ctx, "demo", &self.pod, port).await?),
        })
    }
}

fn cpu_ms() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 * 10.0)
}

fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `GET path` on `conn`: when its first byte came, and the bytes in all.
async fn get(conn: &mut Box<dyn Io>, path: &str) -> anyhow::Result<(Instant, u64)> {
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).await?;
    let first = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 1u64;
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok((first, total));
        }
        total += n as u64;
    }
}

/// Three downloads of `bytes` each at once.
async fn three_downloads(c: &Client, bytes: u64) -> anyhow::Result<()> {
    let futs = (0..3).map(|_| async move {
        let mut conn = c.connect(8080).await?;
        let (_, got) = get(&mut conn, &format!("/bytes/{bytes}")).await?;
        if got < bytes {
            bail!("short read: {got} of {bytes}");
        }
        anyhow::Ok(())
    });
    futures::future::try_join_all(futs).await?;
    Ok(())
}

/// Runs one case in this (child) process; prints one JSON object.
async fn case(
    name: &str,
    transport: &str,
    kubeconfig: &Path,
    pod: &str,
    arg: u64,
) -> anyhow::Result<()> {
    let c = Client::new(kubeconfig, pod, transport).await?;
    let out = match name {
        // Time from asking for a connection to the first byte of `GET /`, 100 times.
        "first-byte" => {
            c.prepare().await?;
            let mut times = Vec::new();
            for _ in 0..100 {
                let start = Instant::now();
                let mut conn = c.connect(8080).await?;
                let (first, _) = get(&mut conn, "/").await?;
                times.push(first.duration_since(start).as_secs_f64() * 1e3);
            }
            let p50 = percentile(&mut times, 0.5);
            let p99 = percentile(&mut times, 0.99);
            serde_json::json!({"p50_ms": p50, "p99_ms": p99})
        }
        // One connection, `arg` MiB: MB/s and this process's CPU per GiB.
        "bulk" => {
            c.prepare().await?;
            let bytes = arg << 20;
            let mut conn = c.connect(8080).await?;
            let cpu0 = cpu_ms()?;
            let start = Instant::now();
            let (_, got) = get(&mut conn, &format!("/bytes/{bytes}")).await?;
            let secs = start.elapsed().as_secs_f64();
            let cpu = cpu_ms()? - cpu0;
            if got < bytes {
                bail!("short read: {got} of {bytes}");
            }
            serde_json::json!({"mb_s": got as f64 / secs / 1e6, "cpu_ms_per_gib": cpu * (1u64 << 30) as f64 / got as f64})
        }
        // Three connections reading `arg` MiB each at once, without and then with a
        // fourth on the same session that never reads a large reply.
        "stall" => {
            c.prepare().await?;
            let start = Instant::now();
            three_downloads(&c, arg << 20).await?;
            let alone = (3 * (arg << 20)) as f64 / start.elapsed().as_secs_f64() / 1e6;
            let mut stalled = c.connect(8080).await?;
            stalled
                .write_all(b"GET /bytes/4000000000 HTTP/1.1\r\nHost: b\r\n\r\n")
                .await?;
            let start = Instant::now();
            three_downloads(&c, arg << 20).await?;
            let with = (3 * (arg << 20)) as f64 / start.elapsed().as_secs_f64() / 1e6;
            let mut b = [0u8; 1];
            let stalled_end = match stalled.read(&mut b).await {
                Ok(_) => "still open".to_string(),
                Err(e) => e.to_string(),
            };
            serde_json::json!({"alone_mb_s": alone, "with_stalled_mb_s": with, "ratio": with / alone, "stalled": stalled_end})
        }
        // `arg` connections at once, each one `GET /`.
        "burst" => {
            c.prepare().await?;
            let start = Instant::now();
            let c = std::sync::Arc::new(c);
            let mut tasks = Vec::new();
            for _ in 0..arg {
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let mut conn = c.connect(8080).await?;
                    get(&mut conn, "/").await?;
                    anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
                }));
            }
            let mut times = Vec::new();
            let mut failed = 0;
            for t in tasks {
                match t.await? {
                    Ok(ms) => times.push(ms),
                    Err(_) => failed += 1,
                }
            }
            let total = start.elapsed().as_secs_f64() * 1e3;
            serde_json::json!({"total_ms": total, "p50_ms": percentile(&mut times, 0.5), "p99_ms": percentile(&mut times, 0.99), "failed": failed})
        }
        // `arg` pools, each with a ready session to the pod: resident memory.
        "idle" => {
            let before = rss_mib()?;
            let mut pools = Vec::new();
            for _ in 0..arg {
                let p = SessionPool::new(c.ctx.clone(), "demo", transport.parse::<Transport>()?);
                p.prepare(pod).await?;
                pools.push(p);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            serde_json::json!({"rss_mib": rss_mib()?, "before_mib": before, "sessions": pools.len()})
        }
        other => bail!("unknown case {other}"),
    };
    println!("{out}");
    Ok(())
}

async fn child(exe: &Path, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = tokio::process::Command::new(exe)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or(""))?)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    percentile(&mut v, 0.5)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("case") {
        let [_, _, name, transport, kubeconfig, pod, arg] = &args[..] else {
            bail!("usage: spdy-bench case NAME TRANSPORT KUBECONFIG POD ARG");
        };
        return case(name, transport, Path::new(kubeconfig), pod, arg.parse()?).await;
    }
    let flag = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context("flag value")?.parse()?),
            None => Ok(default),
        }
    };
    let rounds = flag("--rounds", 3)?;
    let bulk_mib = flag("--bulk-mib", 1024)?;
    let exe: PathBuf = std::env::current_exe()?;
    let cluster = kforward_testkit::Cluster::demo().await?;
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let pod = cluster.ready_pods("demo", "app=web")[0]
        .metadata
        .name
        .clone()
        .context("pod")?;
    let cases: Vec<(&str, u64, Vec<&str>)> = vec![
        ("first-byte", 0, TRANSPORTS.to_vec()),
        ("bulk", bulk_mib, TRANSPORTS.to_vec()),
        ("burst", 1000, TRANSPORTS.to_vec()),
        ("stall", 256, vec!["websocket-spdy", "spdy"]),
        ("idle", 200, vec!["websocket-spdy"]),
    ];
    let mut results: std::collections::BTreeMap<(String, String), Vec<serde_json::Value>> =
        Default::default();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        for (name, arg, transports) in &cases {
            for t in transports {
                let a: Vec<String> = vec![
                    "case".into(),
                    name.to_string(),
                    t.to_string(),
                    kubeconfig.clone(),
                    pod.clone(),
                    arg.to_string(),
                ];
                let cpu0 = cpu_ms()?;
                let mut v = child(&exe, &a).await?;
                // The testkit (API server, kubelet, pods) runs in this process.
                let server = cpu_ms()? - cpu0;
                if *name == "bulk" {
                    v["server_cpu_ms_per_gib"] = serde_json::json!(server * 1024.0 / *arg as f64);
                }
                eprintln!("  {name} {t}: {v}");
                results
                    .entry((name.to_string(), t.to_string()))
                    .or_default()
                    .push(v);
            }
        }
    }
    println!("| case | transport | medians over {rounds} rounds |");
    println!("|---|---|---|");
    for ((name, t), vs) in &results {
        let keys: Vec<String> = vs[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let cells: Vec<String> = keys
            .iter()
            .map(|k| {
                let nums: Vec<f64> = vs.iter().filter_map(|v| v[k].as_f64()).collect();
                if nums.is_empty() {
                    format!("{k}: {}", vs[0][k])
                } else {
                    format!("{k}: {:.2}", median(&nums))
                }
            })
            .collect();
        println!("| {name} | {t} | {} |", cells.join(", "));
    }
    Ok(())
}
