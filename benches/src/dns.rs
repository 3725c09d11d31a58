//! The `dns` section: a real dnsmasq, asked directly and through `kforward forward --udp`
//! (the relay path: client, tunnel, relay pod, UDP), with 1 and with 64 queries in flight.
//!
//! dnsmasq answers one name from its `--address` table, so every query is answered at once
//! and what is measured is the path, not an upstream resolver.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kforward_testkit::network::{TYPE_A, encode_query, parse_response};

/// The name dnsmasq answers.
const NAME: &str = "bench.kforward.test";
/// How long a window of queries may go unanswered before it counts as lost and is sent again.
const LOST_AFTER: Duration = Duration::from_millis(500);

/// A dnsmasq process answering [`NAME`] on 127.0.0.1; killed on drop.
pub struct Dnsmasq {
    _child: tokio::process::Child,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq on a port the OS just handed out (dnsmasq takes no port 0, so a free
    /// port is asked for and released first; another process taking it in between makes
    /// dnsmasq fail, and another port is tried).
    pub async fn start() -> anyhow::Result<Dnsmasq> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("dnsmasq is not installed (apt-get install dnsmasq)")?;
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut child = tokio::process::Command::new(bin)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--pid-file=",
                    "--user=root",
                    &format!("--port={port}"),
                    &format!("--address=/{NAME}/192.0.2.53"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting dnsmasq")?;
            // Ready when it answers; a dnsmasq that could not bind has exited.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    eprintln!("note: dnsmasq on port {port} exited ({status}); another port");
                    break;
                }
                if ping_pong(addr, 1).await.is_ok() {
                    return Ok(Dnsmasq {
                        _child: child,
                        addr,
                    });
                }
                // A poll interval, not a synchronisation: dnsmasq says nothing when ready.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        bail!("dnsmasq did not start")
    }
}

/// A real dnsmasq, directly and through `kforward forward --udp` (the relay path), with one
/// query and with 64 queries in flight from one local socket; the ratios to direct.
pub async fn rows(
    cluster: &kforward_testkit::Cluster,
    o: &crate::Opts,
    cli: &std::path::Path,
) -> anyhow::Result<()> {
    if !cli.exists() {
        eprintln!("note: no {}; the dns section is left out", cli.display());
        return Ok(());
    }
    let server = match Dnsmasq::start().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: {e:#}; the dns section is left out");
            return Ok(());
        }
    };
    eprintln!("dns through the relay ...");
    let (_child, via) = forward(cli, cluster.kubeconfig_path(), server.addr).await?;
    // The relay pod and the session open on the first query.
    ping_pong(via, 1).await?;
    let burst = 64;
    let mut one = [Vec::new(), Vec::new()];
    let mut many = [Vec::new(), Vec::new()];
    let mut lost = [0u64, 0];
    for _ in 0..o.rounds {
        for (i, a) in [server.addr, via].into_iter().enumerate() {
            one[i].push(ping_pong(a, o.rtts).await?);
            let l = load(a, burst, 20 * o.rtts).await?;
            many[i].push(l.rate);
            lost[i] += l.lost;
        }
    }
    let (one, many) = (one.map(crate::median), many.map(crate::median));
    println!(
        "\n| dnsmasq | queries/s, 1 in flight | / direct | queries/s, {burst} in flight | / direct | lost |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, name) in ["direct", "kforward forward --udp"].into_iter().enumerate() {
        println!(
            "| {name} | {:.0} | {} | {:.0} | {} | {} |",
            one[i],
            crate::cell(one[i] / one[0], 2, "x"),
            many[i],
            crate::cell(many[i] / many[0], 2, "x"),
            lost[i]
        );
    }
    println!(
        "({} rounds, medians; {} queries one at a time and {} with {burst} in flight per round)",
        o.rounds,
        o.rtts,
        20 * o.rtts
    );
    Ok(())
}

/// The figures of one load run.
pub struct Load {
    /// Answers per second.
    pub rate: f64,
    /// Queries that went unanswered (and were sent again).
    pub lost: u64,
}

/// Sends `total` queries to `addr` from one socket (one peer, so one relay session), keeping
/// `in_flight` unanswered at a time: each answer lets the next query go. A window with no
/// answer for [`LOST_AFTER`] counts as lost and is sent again.
///
/// It runs on a thread of its own with a blocking socket, as `dnsperf` does: no runtime and
/// no timer per query, so that the load generator costs the least it can and the direct
/// path is limited by dnsmasq, not by this code.
pub async fn load(addr: SocketAddr, in_flight: usize, total: usize) -> anyhow::Result<Load> {
    tokio::task::spawn_blocking(move || load_blocking(addr, in_flight, total)).await?
}

fn load_blocking(addr: SocketAddr, in_flight: usize, total: usize) -> anyhow::Result<Load> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(LOST_AFTER))?;
    let queries: Vec<Vec<u8>> = (0..=u16::MAX)
        .map(|id| encode_query(id, NAME, TYPE_A))
        .collect::<Result<_, _>>()?;
    // Which ids are in flight, so that a late answer to a query counted lost is not counted.
    let mut waiting = vec![false; queries.len()];
    let mut outstanding = 0usize;
    let mut next = 0usize;
    let mut answered = 0usize;
    let mut lost = 0u64;
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    while answered < total {
        while outstanding < in_flight.min(total - answered) {
            let id = next % queries.len();
            next += 1;
            if !waiting[id] {
                waiting[id] = true;
                outstanding += 1;
                sock.send(&queries[id])?;
            }
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let resp = parse_response(&buf[..n]).context("dnsmasq's answer")?;
                if resp.addresses.is_empty() {
                    bail!("dnsmasq answered without an address (rcode {})", resp.rcode);
                }
                let id = usize::from(resp.id);
                if waiting[id] {
                    waiting[id] = false;
                    outstanding -= 1;
                    answered += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                lost += outstanding as u64;
                outstanding = 0;
                waiting.fill(false);
                if lost > total as u64 {
                    bail!("more than {total} queries to {addr} were lost");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Load {
        rate: answered as f64 / start.elapsed().as_secs_f64(),
        lost,
    })
}

/// One query at a time, `n` times: answers per second.
pub async fn ping_pong(addr: SocketAddr, n: usize) -> anyhow::Result<f64> {
    Ok(load(addr, 1, n).await?.rate)
}

/// Starts `kforward forward --udp proxy/127.0.0.1 :PORT` (the relay pod reaches dnsmasq on
/// the host's loopback, as a relay reaches a cluster DNS server).
pub async fn forward(
    cli: &Path,
    kubeconfig: &Path,
    dns: SocketAddr,
) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let mut cmd = tokio::process::Command::new(cli);
    cmd.env_remove(kforward_core::client::CLIENT_STACK_ENV)
        .arg("forward")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "-n",
            "demo",
            "--udp",
            &format!("proxy/{}", dns.ip()),
            &format!(":{}", dns.port()),
            "--address",
            "127.0.0.1",
        ]);
    crate::kubectl::spawn_forward(cmd).await
}
