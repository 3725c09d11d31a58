//! The comparison harness: one testkit cluster, the same measurements through each path,
//! interleaved (A B C D A B C D ...) so that a noisy shared machine affects every path
//! alike, and medians over the rounds.
//!
//! Paths: `direct` (the pod's own address: the limit), `kforward`, `kubectl` (the real
//! `kubectl port-forward`, from `$KUBECTL` or `../shared/tools/install-kubectl`) and
//! `kube-pf` (kube's `Portforwarder` with `copy_bidirectional`, the way kftray forwards).
//! `kforward-cli` is `kforward forward` as a process of its own, started like kubectl, so
//! that the CPU time of both clients per GiB can be read apart from everything else that
//! shares the machine (the testkit's API server and pods run in this process).
//! `kforward-cli-stock` is the same process on kube's stock client stack
//! (`KFORWARD_KUBE_CLIENT=stock`), to show what kforward's own stack (buffered reads under
//! TLS, `kforward-core/src/connector.rs`) saves.
//! `kforward-tunnel` is the library's `Tunnel` used in this process, as a tool that embeds
//! kforward reaches a pod: kforward's client path without the local socket.
//! `kforward-socks` is the forward proxy (`kforward socks`) in this process, asked for the
//! same pods by address; `kforward-socks-svc` asks it for the services `web` and `echo` by
//! name, beside `kforward-svc` (`kforward forward svc/web`, `svc/echo`); the `socks`
//! section opens 1,000 connections at once through one proxy to services by name and to an
//! external name through the relay.
//!
//! `floor` is no forwarder: in the `bulk1` section, a round of the TLS floor
//! ([`kforward_benches::floor`]: a child process that only reads TLS, decrypts and writes to
//! loopback, the least any client must do) of `--bytes` runs after the paths' rounds, and
//! its CPU per GiB is a row of the "forwarding process" table, with what it bounds (below
//! that table). Its child is this executable started with
//! [`kforward_benches::floor::CHILD_ARG`] as its first argument.
//!
//! `cargo run --release -p kforward-benches --bin compare -- [--bytes N] [--rounds R] [--conns C] [--rtts N]
//! [--idle 1,50,200] [--wan-rtt-ms 10] [--wan-conns 100] [--paths direct,kforward,kforward-tunnel,kforward-socks,kforward-svc,kforward-socks-svc,kube-pf,kubectl,kforward-cli,kforward-cli-stock,floor] [--only bulk1,bulk8,ttfb,rtt,burst,half-close,stalled,wan,relay,dns,socks,hop,idle]`
//!
//! `--paths` and `--only` narrow a run down, for profiling one path (`perf record -p`).
//! The `wan` section ([`wan`]) puts the API server `--wan-rtt-ms` away, straight and behind
//! an HTTP proxy (tinyproxy, when installed).

mod baseline;
mod delay;
mod dns;
mod kubectl;
mod measure;
mod scenarios;
mod socks;
mod wan;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use kforward_benches::floor::{self, Floor};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Forward, Forwarder, KubeContext, KubeconfigSource};
use kforward_testkit::Cluster;
use measure::Dial;

struct Opts {
    bytes: u64,
    rounds: usize,
    conns: usize,
    rtts: usize,
    idle: Vec<usize>,
    /// Round trip of the simulated network in the `wan` section, in milliseconds.
    wan_rtt_ms: f64,
    /// New connections per path in the `wan` section.
    wan_conns: usize,
    /// Paths to measure (all when empty).
    paths: Vec<String>,
    /// Sections to run (all when empty).
    only: Vec<String>,
}

impl Opts {
    fn path(&self, name: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p == name)
    }

    fn section(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == name)
    }
}

const USAGE: &str =
    "usage: compare [--bytes N] [--rounds R] [--conns C] [--rtts N] [--idle 1,50,200]
  [--paths direct,kforward,kforward-tunnel,kforward-socks,kforward-svc,kforward-socks-svc,kube-pf,kubectl,kforward-cli,kforward-cli-stock,floor]
  [--only bulk1,bulk8,ttfb,rtt,burst,half-close,stalled,wan,relay,dns,socks,hop,idle] [--wan-rtt-ms 10] [--wan-conns 100]
defaults: --bytes 1073741824 --rounds 3 --conns 1000 --rtts 5000, every path and section;
KUBECTL names the kubectl binary (else ../shared/tools/install-kubectl is asked);
COMPARE_CHILD_STDERR=1 passes the forwarding processes' stderr through (with RUST_LOG)";

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        bytes: 1 << 30,
        rounds: 3,
        conns: 1000,
        rtts: 5000,
        idle: vec![1, 50, 200],
        wan_rtt_ms: 10.0,
        wan_conns: 100,
        paths: Vec::new(),
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--bytes" => o.bytes = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            "--conns" => o.conns = v.parse()?,
            "--rtts" => o.rtts = v.parse()?,
            "--wan-rtt-ms" => o.wan_rtt_ms = v.parse()?,
            "--wan-conns" => o.wan_conns = v.parse()?,
            "--idle" => o.idle = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--paths" => o.paths = v.split(',').map(String::from).collect(),
            "--only" => o.only = v.split(',').map(String::from).collect(),
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    let max = kforward_testkit::network::MAX_PATTERN_BYTES;
    if o.bytes == 0 || o.bytes > max {
        bail!(
            "--bytes {}: the pods serve 1..={max} bytes per request",
            o.bytes
        );
    }
    if !(o.wan_rtt_ms >= 0.0 && o.wan_rtt_ms <= 1000.0) {
        bail!("--wan-rtt-ms {}: give 0 to 1000", o.wan_rtt_ms);
    }
    if o.rounds == 0 {
        bail!("--rounds 0: at least one round is needed for a median");
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A table cell: "-" for what was not measured.
fn cell(v: f64, decimals: usize, unit: &str) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}{unit}")
    } else {
        "-".to_string()
    }
}

fn pct(v: &mut [Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

struct Path {
    name: &'static str,
    http: Dial,
    echo: Dial,
    /// The forwarding process, for paths that run as one (kubectl, kforward-cli): its CPU
    /// time per GiB is the client's own cost, apart from the API server and the pods that
    /// share the machine.
    pid: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    // The TLS floor's child is this executable: it runs on a runtime of its own (one
    // thread), so it must be caught before the harness's runtime starts.
    if let Some(child) = floor::child_if_asked() {
        return child;
    }
    let o = parse()?;
    tokio::runtime::Runtime::new()?.block_on(run(o))
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let cluster = Cluster::demo().await?;
    let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path()))
        .await?;
    // One web pod and the echo pod, so every path hits the same servers.
    let web = cluster
        .pods("demo", Some("app=web"))
        .into_iter()
        .next()
        .context("a web pod")?;
    let echo = cluster
        .pods("demo", Some("app=echo"))
        .into_iter()
        .next()
        .context("an echo pod")?;
    let (web_name, echo_name) = (
        web.metadata.name.clone().context("name")?,
        echo.metadata.name.clone().context("name")?,
    );
    let ip = |p: &k8s_openapi::api::core::v1::Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod ip")
    };
    let direct_http: SocketAddr = format!("{}:8080", ip(&web)?).parse()?;
    let echo_ip = ip(&echo)?;
    let direct = Path {
        name: "direct",
        pid: None,
        http: Dial::Tcp(direct_http),
        echo: Dial::Tcp(format!("{echo_ip}:7000").parse()?),
    };
    let mut fwds = Vec::new();
    let via = |pod: &str, port: u16| pod_forward(&ctx, pod, port);
    let mut fw_http = via(&web_name, 8080);
    let mut fw_echo = via(&echo_name, 7000);
    let kf = Path {
        name: "kforward",
        pid: None,
        http: Dial::Tcp(fw_http.start().await?[0].local_addr),
        echo: Dial::Tcp(fw_echo.start().await?[0].local_addr),
    };
    // The library's tunnel used in this process, as a tool that embeds kforward reaches a
    // pod: the same client path without the local socket, so what it adds over `kforward`
    // is the cost of that socket hop.
    let tunnel = |pod: &str, port: u16| Dial::Tunnel {
        ctx: ctx.clone(),
        namespace: "demo".to_string(),
        pod: pod.to_string(),
        port,
    };
    let kf_tunnel = Path {
        name: "kforward-tunnel",
        pid: None,
        http: tunnel(&web_name, 8080),
        echo: tunnel(&echo_name, 7000),
    };
    fwds.push(fw_http);
    fwds.push(fw_echo);
    // kube's own client stack, as kftray and other kube users have it (kforward's
    // `KubeContext` builds its own, with buffered reads under TLS).
    let kube_client = stock_client(kube::config::Kubeconfig::read_from(
        cluster.kubeconfig_path(),
    )?)
    .await?;
    let b_http = baseline::start(kube_client.clone(), &web_name, 8080).await?;
    let b_echo = baseline::start(kube_client, &echo_name, 7000).await?;
    let kube_pf = Path {
        name: "kube-pf",
        pid: None,
        http: Dial::Tcp(b_http.addr),
        echo: Dial::Tcp(b_echo.addr),
    };
    let (socks_addr, _socks_stop) = socks::start(&ctx).await?;
    let kf_socks = Path {
        name: "kforward-socks",
        pid: None,
        http: Dial::Socks5 {
            proxy: socks_addr,
            host: ip(&web)?,
            port: 8080,
        },
        echo: Dial::Socks5 {
            proxy: socks_addr,
            host: ip(&echo)?,
            port: 7000,
        },
    };
    let mut paths = vec![direct, kf, kf_tunnel, kf_socks, kube_pf];
    let (svc_paths, svc_fwds) = socks::service_paths(&ctx, socks_addr).await?;
    paths.extend(svc_paths);
    fwds.extend(svc_fwds);
    let kubectl_bin = if o.path("kubectl") {
        kubectl::find()
    } else {
        Err(anyhow::anyhow!("left out by --paths"))
    };
    let mut kubectl_children = Vec::new();
    match &kubectl_bin {
        Ok(bin) => {
            let (c1, http) = kubectl::port_forward(
                bin,
                cluster.kubeconfig_path(),
                &format!("pod/{web_name}"),
                8080,
            )
            .await?;
            let (c2, echo) = kubectl::port_forward(
                bin,
                cluster.kubeconfig_path(),
                &format!("pod/{echo_name}"),
                7000,
            )
            .await?;
            let pid = c1.id();
            kubectl_children.push(c1);
            kubectl_children.push(c2);
            paths.push(Path {
                name: "kubectl",
                http: Dial::Tcp(http),
                echo: Dial::Tcp(echo),
                pid,
            });
        }
        Err(e) => eprintln!("note: no kubectl ({e}); its column is left out"),
    }
    // kforward as a process of its own, started like kubectl: its CPU is counted apart.
    let cli = std::env::current_exe()?.with_file_name("kforward");
    // `kforward-cli-stock` is the same process on kube's stock client stack
    // (`KFORWARD_KUBE_CLIENT=stock`): what kforward's own stack saves, side by side.
    for (name, stock) in [("kforward-cli", false), ("kforward-cli-stock", true)] {
        if !o.path(name) {
            continue;
        }
        if !cli.exists() {
            eprintln!(
                "note: no {} (build kforward-cli in the same profile); {name} is left out",
                cli.display()
            );
            continue;
        }
        let kc = cluster.kubeconfig_path();
        let fwd = |target: String, port| kubectl::kforward_forward(&cli, kc, target, port, stock);
        let (c1, http) = fwd(format!("pod/{web_name}"), 8080).await?;
        let (c2, echo) = fwd(format!("pod/{echo_name}"), 7000).await?;
        let pid = c1.id();
        kubectl_children.push(c1);
        kubectl_children.push(c2);
        paths.push(Path {
            name,
            http: Dial::Tcp(http),
            echo: Dial::Tcp(echo),
            pid,
        });
    }

    paths.retain(|p| o.path(p.name));

    let mut bulk1 = vec![Vec::new(); paths.len()];
    // CPU milliseconds per GiB of the forwarding process, for paths that are one, over 1
    // and over 8 connections.
    let mut cpu1 = vec![Vec::new(); paths.len()];
    let mut cpu8 = vec![Vec::new(); paths.len()];
    // CPU milliseconds per GiB of the whole machine, for every path.
    let mut machine1 = vec![Vec::new(); paths.len()];
    let mut machine8 = vec![Vec::new(); paths.len()];
    // The TLS floor's CPU ms per GiB, one round of --bytes after the paths' in each round.
    let mut floor1 = Vec::new();
    let floor = if o.section("bulk1") && o.path("floor") {
        Some(Floor::new()?)
    } else {
        None
    };
    if o.section("bulk1") {
        eprintln!("bulk, 1 connection ...");
        for _ in 0..o.rounds {
            for (i, p) in paths.iter().enumerate() {
                let r = bulk_round(p, o.bytes, 1).await?;
                bulk1[i].push(r.mb_s);
                machine1[i].push(r.machine_ms_per_gib);
                cpu1[i].extend(r.own_ms_per_gib);
            }
            if let Some(f) = &floor {
                floor1.push(f.round(o.bytes).await?.cpu_ms_per_gib(o.bytes));
            }
        }
    }
    let mut bulk8 = vec![Vec::new(); paths.len()];
    if o.section("bulk8") {
        eprintln!("bulk, 8 connections ...");
        for _ in 0..o.rounds {
            for (i, p) in paths.iter().enumerate() {
                let r = bulk_round(p, o.bytes, 8).await?;
                bulk8[i].push(r.mb_s);
                machine8[i].push(r.machine_ms_per_gib);
                cpu8[i].extend(r.own_ms_per_gib);
            }
        }
    }
    let mut ttfb = vec![Vec::new(); paths.len()];
    if o.section("ttfb") {
        eprintln!("first byte ...");
        for _ in 0..o.conns {
            for (i, p) in paths.iter().enumerate() {
                ttfb[i].push(measure::first_byte(&p.http).await?);
            }
        }
    }
    let mut rtt = vec![Vec::new(); paths.len()];
    if o.section("rtt") {
        eprintln!("round trips ...");
        for _ in 0..o.rounds {
            for (i, p) in paths.iter().enumerate() {
                rtt[i].push(measure::round_trips(&p.echo, o.rtts).await?);
            }
        }
    }

    // Milliseconds for first byte; NaN where a section was not run (printed as "-").
    let rows: Vec<[f64; 5]> = (0..paths.len())
        .map(|i| {
            let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
            [
                median(bulk1[i].clone()),
                median(bulk8[i].clone()),
                ms(pct(&mut ttfb[i], 0.5)),
                ms(pct(&mut ttfb[i], 0.99)),
                median(rtt[i].clone()),
            ]
        })
        .collect();
    let timed = ["bulk1", "bulk8", "ttfb", "rtt"];
    if timed.iter().any(|t| o.section(t)) {
        println!(
            "| path | bulk MB/s, 1 conn ({} MiB) | bulk MB/s, 8 conns | first byte p50 | first byte p99 | round trips/s (64 B) |",
            o.bytes >> 20
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (p, r) in paths.iter().zip(&rows) {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                p.name,
                cell(r[0], 0, ""),
                cell(r[1], 0, ""),
                cell(r[2], 3, " ms"),
                cell(r[3], 3, " ms"),
                cell(r[4], 0, "")
            );
        }
        let idx = |n: &str| paths.iter().position(|p| p.name == n);
        let pairs = [
            ("kforward", "kubectl"),
            ("kforward", "kube-pf"),
            ("kforward", "direct"),
            ("kforward-socks", "kforward"),
            ("kforward-socks-svc", "kforward-svc"),
            ("kforward-cli", "kubectl"),
            ("kforward-cli", "kforward-cli-stock"),
            ("kforward-tunnel", "kubectl"),
            ("kforward-tunnel", "kube-pf"),
        ];
        let ratios: Vec<String> = pairs
            .iter()
            .filter_map(|(a, b)| Some((*a, *b, idx(a)?, idx(b)?)))
            .map(|(a, b, i, j)| {
                let (x, y) = (&rows[i], &rows[j]);
                format!(
                    "| {a} / {b} | {} | {} | {} | {} |",
                    cell(x[0] / y[0], 2, "x"),
                    cell(x[1] / y[1], 2, "x"),
                    cell(x[2] / y[2], 2, "x"),
                    cell(x[4] / y[4], 2, "x")
                )
            })
            .collect();
        if !ratios.is_empty() {
            println!();
            println!("| ratio | bulk, 1 conn | bulk, 8 conns | first byte p50 | round trips/s |");
            println!("|---|---:|---:|---:|---:|");
            for r in ratios {
                println!("{r}");
            }
        }
        println!(
            "\n({} rounds, medians; first byte over {} new connections per path; {} round trips per round)",
            o.rounds, o.conns, o.rtts
        );
    }
    // (row name, median CPU ms per GiB over 1 and over 8 connections) of the forwarding
    // processes, then the floor (measured over 1).
    let mut cpu: Vec<(&str, f64, f64)> = (0..paths.len())
        .filter(|&i| !cpu1[i].is_empty() || !cpu8[i].is_empty())
        .map(|i| {
            (
                paths[i].name,
                median(cpu1[i].clone()),
                median(cpu8[i].clone()),
            )
        })
        .collect();
    let floor_ms = (!floor1.is_empty()).then(|| median(floor1));
    if let Some(ms) = floor_ms {
        cpu.push((FLOOR_ROW, ms, f64::NAN));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let gib_mb = (1u64 << 30) as f64 / 1e6;
    if machine1.iter().chain(&machine8).any(|v| !v.is_empty()) {
        // Cores busy: the machine's CPU seconds per second while the path moved its bytes,
        // which says whether the path was CPU-bound (all cores busy) or waited on something.
        println!(
            "\n| path | machine CPU ms per GiB (bulk, 1 conn; all processes) | cores busy | most MB/s its {cores} cores allow | 8 conns: CPU ms per GiB | cores busy | most MB/s |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (i, p) in paths.iter().enumerate() {
            let (m1, m8) = (median(machine1[i].clone()), median(machine8[i].clone()));
            let busy = |ms: f64, mb_s: f64| mb_s / gib_mb * ms / 1e3;
            let most = |ms: f64| cores as f64 * gib_mb / (ms / 1e3);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.name,
                cell(m1, 0, ""),
                cell(busy(m1, rows[i][0]), 2, ""),
                cell(most(m1), 0, ""),
                cell(m8, 0, ""),
                cell(busy(m8, rows[i][1]), 2, ""),
                cell(most(m8), 0, ""),
            );
        }
    }
    if !cpu.is_empty() {
        println!(
            "\n| forwarding process | CPU ms per GiB (bulk, 1 conn) | MB/s per CPU core | 8 conns: CPU ms per GiB |"
        );
        println!("|---|---:|---:|---:|");
        for (name, ms, ms8) in &cpu {
            println!(
                "| {name} | {} | {} | {} |",
                cell(*ms, 0, ""),
                cell(gib_mb / (ms / 1e3), 0, ""),
                cell(*ms8, 0, "")
            );
        }
        let get = |n: &str| cpu.iter().find(|c| c.0 == n).map(|c| c.1);
        println!();
        for (a, b) in [
            ("kubectl", "kforward-cli"),
            ("kforward-cli-stock", "kforward-cli"),
            ("kubectl", FLOOR_ROW),
        ] {
            if let (Some(x), Some(y)) = (get(a), get(b)) {
                let b = if b == FLOOR_ROW { "floor" } else { b };
                println!("{a} / {b}, CPU per GiB: {:.2}x", x / y);
            }
        }
        if let (Some(k), Some(f)) = (get("kubectl"), floor_ms) {
            println!(
                "1/3 of kubectl's: {:.0} ms per GiB (the floor: {f:.0})",
                k / 3.0
            );
        }
        // Both paths are CPU-bound on the machine's cores (the "cores busy" column says
        // whether they were): a path's bulk rate is the cores over its machine CPU per
        // GiB, so a forwarder that spent only the floor's CPU (the testkit's API server,
        // kubelet and pod and the reader unchanged) gains at most kubectl's machine CPU per
        // GiB over kforward-cli's with its own share replaced by the floor's
        // (`floor::bulk_bound`). Over 8 connections with the floor of 1 connection: TLS
        // costs the same per byte however the bytes are spread.
        let at = |n: &str| paths.iter().position(|p| p.name == n);
        if let (Some(ki), Some(ci), Some(f)) = (at("kubectl"), at("kforward-cli"), floor_ms) {
            for (label, machine, own, col) in [
                ("1 conn", &machine1, &cpu1, 0),
                ("8 conns", &machine8, &cpu8, 1),
            ] {
                let (k, c, own) = (
                    median(machine[ki].clone()),
                    median(machine[ci].clone()),
                    median(own[ci].clone()),
                );
                let Some(b) = floor::bulk_bound(k, c, own, f) else {
                    continue;
                };
                println!(
                    "a forwarder at the floor: at most {:.2}x kubectl's bulk ({label}) on this machine \
                     (machine CPU per GiB: kubectl's path {k:.0} ms / {:.0} ms = kforward-cli's path {c:.0} - its own {own:.0} + the floor {f:.0})",
                    b.at_floor, b.machine_at_floor,
                );
                println!(
                    "kforward-cli today ({label}): at most {:.2}x by the same arithmetic (kubectl's path / its path); measured {}",
                    b.today,
                    cell(rows[ci][col] / rows[ki][col], 2, "x")
                );
            }
        }
    }

    // Issue 13's scenarios: a burst of new connections (--conns of them at once), half-close,
    // and a stalled reader beside three downloads of --bytes / 4.
    if o.section("burst") {
        scenarios::burst_rows(&paths, o.conns, o.rounds).await;
    }
    if o.section("half-close") {
        // Through the relay to the echo pod's address: the relay's own connection to the
        // pod, no container runtime in between, and framed TCP on the port-forward to the
        // relay, so the half-close reaches the pod.
        let mut more = Vec::new();
        let mut relayed = None;
        if o.path("kforward") {
            let spec = ForwardSpec::new(
                Target::Remote {
                    host: echo_ip.clone(),
                },
                [PortMapping::new(0, 7000)],
            )
            .with_namespace("demo")
            .with_addresses(["127.0.0.1".parse()?]);
            let mut f = Forward::new(ctx.clone(), spec, Default::default());
            let addr = f.start().await?[0].local_addr;
            more.push(("kforward, relay to the pod's address", Dial::Tcp(addr)));
            relayed = Some(f);
        }
        scenarios::half_close_rows(&paths, &more).await?;
        if let Some(mut f) = relayed {
            f.stop().await;
        }
    }
    if o.section("stalled") {
        scenarios::stalled_rows(&paths, (o.bytes / 4).max(1), o.rounds).await?;
    }
    if o.section("wan") {
        let bin = kubectl_bin.as_ref().ok();
        wan::rows(&cluster, &o, &web_name, bin, &cli).await?;
    }
    if o.section("relay") {
        relay_rows(&cluster, &ctx, &o, &ip(&web)?, direct_http).await?;
    }
    if o.section("socks") {
        socks::burst_rows(socks_addr, o.conns).await?;
    }
    if o.section("dns") {
        dns::rows(&cluster, &o, &cli).await?;
    }
    if o.section("hop") {
        hop_rows(&o, direct_http).await?;
    }
    if o.section("idle") {
        idle_rows(&cluster, &o).await?;
    }
    for mut f in fwds {
        f.stop().await;
    }
    drop(kubectl_children);
    Ok(())
}

/// The floor's row in the "forwarding process" table: what it is, for a reader of the table.
const FLOOR_ROW: &str = "floor (a process that only reads TLS 1.3, decrypts, writes to loopback)";

/// One bulk round of one path: its rate and what it cost in CPU.
struct BulkRound {
    mb_s: f64,
    /// The whole machine's CPU milliseconds per GiB moved.
    machine_ms_per_gib: f64,
    /// The forwarding process's own, for paths that are one.
    own_ms_per_gib: Option<f64>,
}

/// Downloads `bytes` over `conns` connections through `p`, reading the machine's CPU time
/// and the forwarding process's around it.
async fn bulk_round(p: &Path, bytes: u64, conns: u64) -> anyhow::Result<BulkRound> {
    let before = p.pid.map(measure::cpu_time).transpose()?;
    let machine = measure::machine_cpu_time()?;
    let mb_s = measure::bulk(&p.http, bytes, conns).await?;
    let per_gib = |d: Duration| d.as_secs_f64() * 1e3 * (1u64 << 30) as f64 / bytes as f64;
    let machine_ms_per_gib = per_gib(measure::machine_cpu_time()?.saturating_sub(machine));
    let own_ms_per_gib = match (p.pid, before) {
        (Some(pid), Some(before)) => Some(per_gib(measure::cpu_time(pid)?.saturating_sub(before))),
        _ => None,
    };
    Ok(BulkRound {
        mb_s,
        machine_ms_per_gib,
        own_ms_per_gib,
    })
}

/// A forward of `pod`'s `port` in `demo` to a free port on 127.0.0.1.
fn pod_forward(ctx: &KubeContext, pod: &str, port: u16) -> Forward {
    let spec = ForwardSpec::new(
        Target::Pod {
            name: pod.to_string(),
        },
        [PortMapping::new(0, port)],
    )
    .with_namespace("demo")
    .with_addresses([std::net::Ipv4Addr::LOCALHOST.into()]);
    Forward::new(ctx.clone(), spec, Default::default())
}

/// kube's own client for the kubeconfig's current context, as kube-based tools build it.
async fn stock_client(kc: kube::config::Kubeconfig) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Through the relay: UDP to the dns pod, and a TCP proxy forward to the web pod's address.
async fn relay_rows(
    cluster: &Cluster,
    ctx: &KubeContext,
    o: &Opts,
    web_ip: &str,
    direct_http: SocketAddr,
) -> anyhow::Result<()> {
    let ip = |p: &k8s_openapi::api::core::v1::Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod ip")
    };
    let dns = cluster
        .pods("demo", Some("app=dns"))
        .into_iter()
        .next()
        .context("a dns pod")?;
    let dns_direct: SocketAddr = format!("{}:5353", ip(&dns)?).parse()?;
    let udp_spec = ForwardSpec::new(
        Target::Service { name: "dns".into() },
        [PortMapping::new(0, 5353)],
    )
    .with_namespace("demo")
    .with_protocol(kforward_core::spec::Protocol::Udp)
    .with_addresses(["127.0.0.1".parse()?]);
    let mut udp_fwd = Forward::new(ctx.clone(), udp_spec, Default::default());
    let udp_via = udp_fwd.start().await?[0].local_addr;
    let proxy_spec = ForwardSpec::new(
        Target::Remote {
            host: web_ip.to_string(),
        },
        [PortMapping::new(0, 8080)],
    )
    .with_namespace("demo")
    .with_addresses(["127.0.0.1".parse()?]);
    let mut proxy_fwd = Forward::new(ctx.clone(), proxy_spec, Default::default());
    let proxy_via = proxy_fwd.start().await?[0].local_addr;
    let mut udp_rate = [Vec::new(), Vec::new()];
    let mut udp_p50 = [Vec::new(), Vec::new()];
    let mut tcp_hop = [Vec::new(), Vec::new()];
    for _ in 0..o.rounds {
        for (i, a) in [dns_direct, udp_via].into_iter().enumerate() {
            let (rate, p50) = measure::udp_ping_pong(a, o.rtts).await?;
            udp_rate[i].push(rate);
            udp_p50[i].push(p50.as_secs_f64() * 1e3);
        }
        for (i, a) in [direct_http, proxy_via].into_iter().enumerate() {
            tcp_hop[i].push(measure::bulk(&Dial::Tcp(a), o.bytes, 1).await?);
        }
    }
    println!("\n| relay path | UDP datagrams/s (ping-pong) | UDP round trip p50 | TCP bulk MB/s |");
    println!("|---|---:|---:|---:|");
    for (i, name) in ["direct", "kforward relay"].into_iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.0} |",
            median(udp_rate[i].clone()),
            median(udp_p50[i].clone()),
            median(tcp_hop[i].clone())
        );
    }
    udp_fwd.stop().await;
    proxy_fwd.stop().await;
    Ok(())
}

/// Memory of one kforward process holding N idle forwards.
async fn idle_rows(cluster: &Cluster, o: &Opts) -> anyhow::Result<()> {
    let cli = std::env::current_exe()?.with_file_name("kforward");
    if cli.exists() {
        println!("\n| idle forwards in one `kforward run` | resident memory |");
        println!("|---:|---:|");
        for n in &o.idle {
            let rss = measure::idle_rss(&cli, cluster.kubeconfig_path(), *n).await?;
            println!("| {n} | {:.1} MiB |", rss as f64 / (1 << 20) as f64);
        }
    } else {
        eprintln!(
            "note: {} not built; build kforward-cli in the same profile for the memory rows",
            cli.display()
        );
    }
    Ok(())
}

/// A port free right now (for tools that cannot report the port they bound).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a forwarding process that will listen on `127.0.0.1:port`, killed when dropped,
/// and waits until it accepts connections.
async fn spawn_hop(
    mut cmd: tokio::process::Command,
    port: u16,
) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    listening(addr).await?;
    Ok((child, addr))
}

/// Waits until something accepts connections on `addr`.
async fn listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

/// The relay's TCP hop (client, relay, pod, all on loopback, no tunnel in front) against
/// socat and haproxy doing the same hop, when they are installed.
async fn hop_rows(o: &Opts, target: SocketAddr) -> anyhow::Result<()> {
    use kforward_core::relay::server::{
        CancellationToken, DEFAULT_IDLE_EXIT, RelayServer, SystemResolver,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let relay_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(RelayServer::run(
        listener,
        "bench".into(),
        SystemResolver,
        None,
        DEFAULT_IDLE_EXIT,
        stop.clone(),
    ));
    let hello = measure::RelayHello {
        token: "bench".into(),
        target,
    };
    let mut hops: Vec<(&str, SocketAddr, Option<measure::RelayHello>)> = vec![
        ("direct", target, None),
        (
            "kforward-relay (in this process)",
            relay_addr,
            Some(hello.clone()),
        ),
    ];
    let mut children = Vec::new();
    let dir = std::env::temp_dir().join(format!("kforward-bench-hop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The relay as it is deployed, a process of its own (the `kforward-relay` binary), as
    // socat and haproxy are here: the in-process row shares this harness's runtime with the
    // downloads it measures.
    let relay_bin = std::env::current_exe()?.with_file_name("kforward-relay");
    if relay_bin.exists() {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(&relay_bin);
        cmd.args(["--port", &port.to_string()])
            .env("KFORWARD_RELAY_TOKEN", &hello.token);
        let (child, addr) = spawn_hop(cmd, port).await?;
        children.push(child);
        hops.push(("kforward-relay (process)", addr, Some(hello)));
    } else {
        eprintln!(
            "note: no {} (build kforward-relay in the same profile); its row is left out",
            relay_bin.display()
        );
    }
    if which("socat") {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new("socat");
        cmd.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("TCP:{target}"));
        let (child, addr) = spawn_hop(cmd, port).await?;
        children.push(child);
        hops.push(("socat", addr, None));
    } else {
        eprintln!("note: no socat; its row is left out");
    }
    if which("haproxy") {
        let port = free_port()?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s {target}\n"
            ),
        )?;
        let mut cmd = tokio::process::Command::new("haproxy");
        cmd.args(["-db", "-f"]).arg(&cfg);
        let (child, addr) = spawn_hop(cmd, port).await?;
        children.push(child);
        hops.push(("haproxy", addr, None));
    } else {
        eprintln!("note: no haproxy; its row is left out");
    }
    let mut mbs = vec![Vec::new(); hops.len()];
    let mut mbs8 = vec![Vec::new(); hops.len()];
    for _ in 0..o.rounds {
        for (i, (_, addr, hello)) in hops.iter().enumerate() {
            mbs[i].push(measure::bulk_via(&Dial::Tcp(*addr), o.bytes, 1, hello.clone()).await?);
            mbs8[i].push(measure::bulk_via(&Dial::Tcp(*addr), o.bytes, 8, hello.clone()).await?);
        }
    }
    println!("\n| TCP hop on loopback | bulk MB/s, 1 conn | bulk MB/s, 8 conns |");
    println!("|---|---:|---:|");
    for (i, (name, _, _)) in hops.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} |",
            median(mbs[i].clone()),
            median(mbs8[i].clone())
        );
    }
    stop.cancel();
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
