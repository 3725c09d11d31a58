//! The TLS floor: the least CPU a port-forward client can spend per GiB of a download, for
//! `compare`'s `floor` row and the `tls-floor` binary (issue 13's "CPU per GiB" target).
//!
//! Whatever the transport, a client on the developer's machine must read the API server's
//! TLS records from a socket, decrypt them and write the plaintext to the local client's
//! loopback socket. A floor round does only that: a child process (so that its CPU is its
//! own, read as `compare` reads a forwarder's) connects over TLS 1.3 (AES-128-GCM, what a
//! Go API server picks) to a server in the calling process, which sends the round's bytes,
//! and copies what it decrypts to a second socket in the calling process, which drains it.
//! No HTTP, no WebSocket, no port-forward framing, one thread (a current-thread runtime);
//! the socket is read through a 256 KiB buffer (rustls asks for one TLS record at a time;
//! kforward's connections read ahead the same way) and the plaintext is written in writes
//! of up to 256 KiB. The child's CPU time from the first byte to the last is the floor;
//! the rest of a forwarder's CPU is what its protocols and its structure add.
//!
//! The child is the calling executable itself, started with [`CHILD_ARG`] as its first
//! argument: every binary that runs floor rounds (`compare`, `tls-floor`) calls
//! [`child_if_asked`] first thing in `main`, before it starts a runtime of its own.
//!
//! This crate is a harness, not a library for users: its errors are `anyhow`'s, as in
//! [`crate::soak`] and [`crate::scale`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The hidden first argument that makes a binary the floor's child: `EXE CHILD_ARG SERVER
/// SINK CA_PEM`. Long and odd so that no user argument of `compare` or `tls-floor` is
/// taken for it.
pub const CHILD_ARG: &str = "__kforward-tls-floor-child";

/// The read-ahead buffer under TLS, and the most plaintext written at once.
const BUF: usize = 256 * 1024;

/// How long the calling process waits for the child's connections and for each read of
/// the sink: a child that failed says so on stderr and exits, and the round must then end
/// with an error rather than wait forever.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const GIB: f64 = (1u64 << 30) as f64;

/// One floor round: what the child spent and how long it took, first byte to last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// The child's CPU time (user and system), in milliseconds (10 ms ticks).
    pub cpu_ms: f64,
    /// The child's wall time, in seconds.
    pub secs: f64,
}

impl Round {
    /// CPU milliseconds per GiB for a round of `bytes`.
    ///
    /// # Example
    ///
    /// ```
    /// let r = kforward_benches::floor::Round { cpu_ms: 140.0, secs: 0.25 };
    /// assert_eq!(r.cpu_ms_per_gib(1 << 28), 560.0);
    /// ```
    pub fn cpu_ms_per_gib(&self, bytes: u64) -> f64 {
        self.cpu_ms * GIB / bytes as f64
    }

    /// MB/s (10^6 bytes per second) for a round of `bytes`.
    ///
    /// # Example
    ///
    /// ```
    /// let r = kforward_benches::floor::Round { cpu_ms: 140.0, secs: 0.5 };
    /// assert_eq!(r.mb_per_s(1_000_000), 2.0);
    /// ```
    pub fn mb_per_s(&self, bytes: u64) -> f64 {
        bytes as f64 / self.secs / 1e6
    }
}

/// The server side of floor rounds: a self-signed certificate (its CA file in a temporary
/// directory for the child) and the executable to start as the child.
pub struct Floor {
    acceptor: tokio_rustls::TlsAcceptor,
    ca: PathBuf,
    exe: PathBuf,
    /// Holds `ca` until the rounds are done.
    _dir: tempfile::TempDir,
}

impl Floor {
    /// A floor whose child is this executable (which must call [`child_if_asked`]).
    ///
    /// # Errors
    ///
    /// When the certificate cannot be made or written, or the executable's path is unknown.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn f() -> anyhow::Result<()> {
    /// let floor = kforward_benches::floor::Floor::new()?;
    /// let round = floor.round(1 << 28).await?;
    /// println!("{:.0} ms per GiB", round.cpu_ms_per_gib(1 << 28));
    /// # Ok(()) }
    /// ```
    pub fn new() -> anyhow::Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem())?;
        let key = PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes())?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)?;
        // The server's order (AES-128-GCM first), as a Go server chooses.
        config.ignore_client_order = true;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca,
            exe: std::env::current_exe().context("the path of this executable")?,
            _dir: dir,
        })
    }

    /// Runs one round of `bytes`: starts the child, sends it `bytes` over TLS, drains what
    /// it writes to the sink, and returns what the child measured.
    ///
    /// # Errors
    ///
    /// When a socket or the child fails, a step waits longer than 30 s, or the sink gets
    /// another number of bytes than was sent.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn f(floor: kforward_benches::floor::Floor) -> anyhow::Result<()> {
    /// let r = floor.round(1 << 30).await?;
    /// println!("{:.0} ms of CPU in {:.2} s", r.cpu_ms, r.secs);
    /// # Ok(()) }
    /// ```
    pub async fn round(&self, bytes: u64) -> anyhow::Result<Round> {
        let server = TcpListener::bind("127.0.0.1:0").await?;
        let sink = TcpListener::bind("127.0.0.1:0").await?;
        let child = tokio::process::Command::new(&self.exe)
            .arg(CHILD_ARG)
            .arg(server.local_addr()?.to_string())
            .arg(sink.local_addr()?.to_string())
            .arg(&self.ca)
            .stdout(std::process::Stdio::piped())
            // Never left running when a round fails half-way.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} as the floor's child", self.exe.display()))?;
        let acceptor = self.acceptor.clone();
        let send = tokio::spawn(async move {
            let (s, _) = tokio::time::timeout(STEP_TIMEOUT, server.accept())
                .await
                .context("the floor's child did not connect over TLS")??;
            s.set_nodelay(true)?;
            let mut tls = acceptor.accept(s).await?;
            let block = vec![0x5a_u8; BUF];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(BUF as u64) as usize;
                tls.write_all(&block[..n]).await?;
                left -= n as u64;
            }
            tls.shutdown().await?;
            anyhow::Ok(())
        });
        let (mut s, _) = tokio::time::timeout(STEP_TIMEOUT, sink.accept())
            .await
            .context("the floor's child did not connect to the sink")??;
        let mut buf = vec![0u8; BUF];
        let mut got = 0u64;
        loop {
            let n = tokio::time::timeout(STEP_TIMEOUT, s.read(&mut buf))
                .await
                .context("the floor's child stopped writing to the sink")??;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        send.await??;
        let out = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
            .await
            .context("the floor's child did not exit")??;
        if !out.status.success() || got != bytes {
            bail!(
                "the floor's child failed ({}) or the sink got {got} of {bytes} bytes",
                out.status
            );
        }
        let line = String::from_utf8(out.stdout)?;
        let mut f = line.split_whitespace().map(str::parse::<f64>);
        let (Some(Ok(cpu_ms)), Some(Ok(secs))) = (f.next(), f.next()) else {
            bail!("the floor's child said {line:?}");
        };
        Ok(Round { cpu_ms, secs })
    }
}

/// Runs the floor's child when this process was started as one ([`CHILD_ARG`] first) and
/// returns its result; `None` otherwise. Call it first thing in `main`: the child builds
/// its own current-thread runtime.
///
/// # Example
///
/// ```no_run
/// fn main() -> anyhow::Result<()> {
///     if let Some(child) = kforward_benches::floor::child_if_asked() {
///         return child;
///     }
///     // ... the binary's own work
///     Ok(())
/// }
/// ```
pub fn child_if_asked() -> Option<anyhow::Result<()>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(CHILD_ARG) {
        return None;
    }
    Some((|| {
        let [_, server, sink, ca] = args.as_slice() else {
            bail!("{CHILD_ARG} SERVER SINK CA_PEM");
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(child(server.parse()?, sink.parse()?, Path::new(ca)))
    })())
}

/// The provider with AES-128-GCM first: a Go server (the API server) chooses it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// This process's CPU time (user and system) in milliseconds, from `/proc/self/stat` as
/// `compare` reads a forwarder's (ticks of `USER_HZ`, 100 on Linux).
fn cpu_ms() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces; fields after its closing ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields
        .get(11..13)
        .context("stat fields")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(ticks as f64 * 10.0)
}

/// The child: TLS in from `server`, plaintext out to `sink`; prints "CPU_MS SECONDS".
async fn child(server: SocketAddr, sink: SocketAddr, ca: &Path) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server).await?;
    tcp.set_nodelay(true)?;
    let tcp = tokio::io::BufStream::with_capacity(BUF, 16 * 1024, tcp);
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let mut out = TcpStream::connect(sink).await?;
    out.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF];
    // From the first byte, as `compare` reads a forwarder's CPU around a download.
    let n = tls.read(&mut buf).await?;
    let (cpu0, start) = (cpu_ms()?, Instant::now());
    out.write_all(&buf[..n]).await?;
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
    }
    out.shutdown().await?;
    println!("{} {}", cpu_ms()? - cpu0, start.elapsed().as_secs_f64());
    Ok(())
}

/// What one run's medians say about the bulk ratio (1 connection) of kforward-cli against
/// kubectl on this machine; from [`bulk_bound`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkBound {
    /// Machine CPU ms per GiB of a path whose forwarder spent only the floor's CPU.
    pub machine_at_floor: f64,
    /// The most a forwarder at the floor could reach, as a multiple of kubectl's bulk.
    pub at_floor: f64,
    /// The same arithmetic for kforward-cli as measured: kubectl path's machine CPU over
    /// kforward-cli path's.
    pub today: f64,
}

/// The bulk bound from one run's medians, all in CPU ms per GiB (bulk, 1 connection):
/// `kubectl_machine` and `cli_machine` are the whole machine's on the kubectl and
/// kforward-cli paths, `cli_own` the kforward-cli process's own, `floor` the floor's.
///
/// Why this bounds the ratio: on this machine the testkit's API server, kubelet and pod
/// and the harness's reader run beside the forwarder, and both paths are CPU-bound on the
/// machine's cores ("most MB/s its cores allow" in `compare`): N cores give N seconds of
/// CPU per second, so a path moves at most N GiB per its machine-seconds per GiB, and two
/// saturated paths' MB/s stand in the inverse ratio of their machine CPU per GiB. A
/// forwarder at the floor changes only its own share (`cli_own` becomes `floor`); the
/// rest (the server side of the same protocol, the pod, the reader) stays. So kubectl's
/// machine CPU over `cli_machine - cli_own + floor` is the most any forwarder could gain
/// over kubectl here, however little it spends above the floor.
///
/// `None` when an input is not a positive finite number or the floor's path would cost
/// nothing (`cli_own` above the whole machine's), which no real run gives.
///
/// # Example
///
/// ```
/// let b = kforward_benches::floor::bulk_bound(2460.0, 1760.0, 640.0, 560.0).expect("positive inputs");
/// assert_eq!(b.machine_at_floor, 1680.0);
/// assert!((b.at_floor - 1.464).abs() < 1e-3);
/// assert!((b.today - 1.398).abs() < 1e-3);
/// ```
pub fn bulk_bound(
    kubectl_machine: f64,
    cli_machine: f64,
    cli_own: f64,
    floor: f64,
) -> Option<BulkBound> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if ![kubectl_machine, cli_machine, cli_own, floor]
        .into_iter()
        .all(ok)
    {
        return None;
    }
    let machine_at_floor = cli_machine - cli_own + floor;
    if !ok(machine_at_floor) {
        return None;
    }
    Some(BulkBound {
        machine_at_floor,
        at_floor: kubectl_machine / machine_at_floor,
        today: kubectl_machine / cli_machine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lead's figures of 2026-12-02 (two commands, before this module): the bound he
    /// computed by hand, 2460 / (1760 - 640 + 560) = 1.46x.
    #[test]
    fn bulk_bound_of_the_leads_figures() {
        let b = bulk_bound(2460.0, 1760.0, 640.0, 560.0).expect("a bound");
        assert_eq!(b.machine_at_floor, 1680.0);
        assert!((b.at_floor - 2460.0 / 1680.0).abs() < 1e-12);
        assert!((b.today - 2460.0 / 1760.0).abs() < 1e-12);
        assert!(b.at_floor > b.today, "a forwarder above the floor gains");
    }

    #[test]
    fn bulk_bound_at_the_floor_is_today() {
        let b = bulk_bound(2000.0, 1500.0, 500.0, 500.0).expect("a bound");
        assert_eq!(b.at_floor, b.today);
    }

    #[test]
    fn bulk_bound_refuses_what_no_run_gives() {
        // A section not run reads as NaN (the medians of nothing).
        assert_eq!(bulk_bound(f64::NAN, 1760.0, 640.0, 560.0), None);
        assert_eq!(bulk_bound(2460.0, 1760.0, 0.0, 560.0), None);
        // The forwarder's own CPU above the whole machine's: ticks read apart, never real.
        assert_eq!(bulk_bound(2460.0, 100.0, 700.0, 560.0), None);
    }

    #[test]
    fn round_per_gib_and_rate() {
        let r = Round {
            cpu_ms: 140.0,
            secs: 0.5,
        };
        assert_eq!(r.cpu_ms_per_gib(1 << 28), 560.0);
        assert_eq!(r.mb_per_s(1 << 28), (1u64 << 28) as f64 / 0.5 / 1e6);
    }
}
