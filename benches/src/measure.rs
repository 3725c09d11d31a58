//! The measurements, each over real sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kforward_core::{KubeContext, Tunnel};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a measurement reaches a pod's port.
#[derive(Debug, Clone)]
pub enum Dial {
    /// A TCP connection: to the pod itself, or to a forward's local port.
    Tcp(SocketAddr),
    /// kforward's [`Tunnel`] opened in this process, the way a tool that embeds the
    /// library reaches a pod without a local port: no local socket hop.
    Tunnel {
        ctx: KubeContext,
        namespace: String,
        pod: String,
        port: u16,
    },
    /// Through a SOCKS5 proxy (kforward's forward proxy) to `host:port`, named as a domain
    /// (the proxy resolves it).
    Socks5 {
        proxy: SocketAddr,
        host: String,
        port: u16,
    },
}

/// A SOCKS5 CONNECT without credentials (RFC 1928): greeting, method, request, reply.
pub async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, u8::try_from(host.len())?];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    // Greeting and request in one write: the proxy reads them in turn.
    s.write_all(&req).await?;
    // The method reply (2 bytes), then the reply's fixed part: VER REP RSV ATYP.
    let mut head = [0u8; 6];
    s.read_exact(&mut head).await?;
    if head[..2] != [5, 0] || head[3] != 0 {
        bail!(
            "SOCKS5 CONNECT to {host}:{port} refused: method {}, reply {}",
            head[1],
            head[3]
        );
    }
    // The bound address by its type (RFC 1928 section 6), then the port: read whole, so
    // the stream starts at the destination's first byte. (Reading a fixed 16 bytes here
    // waited for 4 bytes the proxy never sends before the request: the bench hung.)
    let addr_len = match head[5] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        t => bail!("SOCKS5 reply with address type {t}"),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest).await?;
    Ok(s)
}

/// A connection of either kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Dial {
    /// One new connection.
    pub async fn connect(&self) -> anyhow::Result<Box<dyn Io>> {
        Ok(match self {
            Dial::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Dial::Tunnel {
                ctx,
                namespace,
                pod,
                port,
            } => Box::new(Tunnel::open(ctx, namespace, pod, *port).await?),
            Dial::Socks5 { proxy, host, port } => {
                Box::new(socks5_connect(*proxy, host, *port).await?)
            }
        })
    }
}

/// The relay's handshake, done before the request: to measure the relay's own TCP hop
/// (client to relay to pod) without a tunnel in front of it.
#[derive(Debug, Clone)]
pub struct RelayHello {
    /// The relay's token.
    pub token: String,
    /// Where the relay connects.
    pub target: SocketAddr,
}

async fn open(dial: &Dial, hello: Option<&RelayHello>) -> anyhow::Result<Box<dyn Io>> {
    use kforward_relay::protocol::{Request, Status, Transport, decode_response, encode_request};
    let mut s = dial.connect().await?;
    let Some(h) = hello else { return Ok(s) };
    let req = Request::new(
        &h.token,
        Transport::Tcp,
        &h.target.ip().to_string(),
        h.target.port(),
    );
    s.write_all(&encode_request(&req)?).await?;
    let mut buf = Vec::new();
    loop {
        if let Some((resp, used)) = decode_response(&buf)? {
            if resp.status != Status::Ok || used != buf.len() {
                bail!("relay refused: {resp:?}");
            }
            return Ok(s);
        }
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            bail!("relay closed during the handshake");
        }
        buf.push(b[0]);
    }
}

async fn download(dial: Dial, bytes: u64, hello: Option<RelayHello>) -> anyhow::Result<u64> {
    let mut s = open(&dial, hello.as_ref()).await?;
    s.write_all(
        format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let total = read_response(&mut s, Vec::new()).await?;
    if total < bytes {
        bail!("short read from {dial:?}: {total} of {bytes}");
    }
    Ok(total)
}

/// Downloads `bytes` in all from the HTTP pod over `conns` connections at once; MB/s.
pub async fn bulk(dial: &Dial, bytes: u64, conns: u64) -> anyhow::Result<f64> {
    bulk_via(dial, bytes, conns, None).await
}

/// [`bulk`], with the relay's handshake first on every connection when `hello` is given.
pub async fn bulk_via(
    dial: &Dial,
    bytes: u64,
    conns: u64,
    hello: Option<RelayHello>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let each = bytes / conns;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(download(dial.clone(), each, hello.clone())));
    }
    for t in tasks {
        t.await??;
    }
    Ok((each * conns) as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Time from connect to the first byte of the reply to `GET /`, for one new connection.
pub async fn first_byte(dial: &Dial) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut s = dial.connect().await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    let t = start.elapsed();
    // The whole response, then close, as curl does: waiting for the server's EOF instead
    // would time the container runtime, which closes a pod connection over SPDY only a
    // second after its other direction ended (containerd's and CRI-O's port-forward copy;
    // the testkit does the same), unless the client ends its writes first.
    read_response(&mut s, b.to_vec()).await?;
    Ok(t)
}

/// Reads the rest of an HTTP/1.1 response whose first bytes are `got`, as curl does: up to
/// the end of its `Content-Length` body, or to EOF when it has none; the body's length.
///
/// Waiting for the server's EOF instead would time the container runtime, which closes a pod
/// connection over SPDY only a second after its other direction ended (containerd's and
/// CRI-O's port-forward copy; the testkit does the same) unless the client ends its writes
/// first: a second on every download, for kubectl and kforward alike.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    mut got: Vec<u8>,
) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    // The head, then how much body is left to read.
    let (mut left, mut body) = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = (got.len() - end - 4) as u64;
            break (length.map(|l| l.saturating_sub(body)), body);
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("the connection ended inside the response head");
        }
        got.extend_from_slice(&buf[..n]);
    };
    while left != Some(0) {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        body += n as u64;
        left = left.map(|l| l.saturating_sub(n as u64));
    }
    Ok(body)
}

/// Small request/response round trips per second over one connection to the echo pod.
pub async fn round_trips(dial: &Dial, n: usize) -> anyhow::Result<f64> {
    let mut s = dial.connect().await?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    // Warm up: the tunnel is open and the first exchange done.
    s.write_all(&msg).await?;
    s.read_exact(&mut back).await?;
    let start = Instant::now();
    for _ in 0..n {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Resident memory of `kforward run` holding `n` idle forwards (all ready).
pub async fn idle_rss(cli: &Path, kubeconfig: &Path, n: usize) -> anyhow::Result<u64> {
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "alias": format!("f{i}"), "service": "web", "namespace": "demo",
                "local_port": 0, "remote_port": 80, "local_address": "127.0.0.1",
                "kubeconfig": kubeconfig.display().to_string(),
            })
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("kforward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("idle-{n}.json"));
    std::fs::write(&file, serde_json::to_string(&entries)?)?;
    let mut child = tokio::process::Command::new(cli)
        .args(["run", "-o", "json", "-f"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("pid")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut ready = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while ready < n {
            match lines.next_line().await {
                Ok(Some(l)) if l.contains("\"event\":\"ready\"") => ready += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    })
    .await
    .context("forwards ready in time")?;
    if ready < n {
        bail!("only {ready} of {n} forwards became ready");
    }
    // Let start-up allocations settle, then read VmRSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&file);
    Ok(kb * 1024)
}

/// UDP ping-pong with the echo: one datagram out, its echo back, `n` times; returns
/// datagrams per second (both ways counted once) and the median round trip.
pub async fn udp_ping_pong(addr: SocketAddr, n: usize) -> anyhow::Result<(f64, Duration)> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(addr).await?;
    let msg = [9u8; 64];
    let mut buf = [0u8; 128];
    let mut rtts = Vec::with_capacity(n);
    // Warm up (the relay session opens on the first datagram).
    sock.send(&msg).await?;
    tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf)).await??;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        sock.send(&msg).await?;
        tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .context("a UDP echo lost")??;
        rtts.push(t.elapsed());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    rtts.sort();
    Ok((rate, rtts[rtts.len() / 2]))
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
///
/// The counters are in clock ticks of `USER_HZ`, which is 100 on every Linux architecture
/// we run on (`getconf CLK_TCK`); 10 ms resolution is fine against seconds of transfer.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its closing ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    let ticks: u64 = fields
        .get(11..13)
        .context("stat fields")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU time every process of the machine has used so far (user, nice, system, irq,
/// softirq and steal of the `cpu` line of `/proc/stat`; idle and iowait left out), in the
/// same `USER_HZ` ticks as [`cpu_time`]. Over a transfer, what the whole path (client,
/// the testkit's API server and pods, the harness's reader) spends per byte: on a machine
/// of N cores no path moves more than N seconds' worth per second.
pub fn machine_cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    Ok(Duration::from_millis(busy * 10))
}
