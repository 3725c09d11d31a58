//! `tls-floor`: the least CPU a port-forward client can spend per GiB of a download, for
//! comparing with what `compare` measures for kforward and kubectl (issue 13's "CPU per
//! GiB" target).
//!
//! Whatever the transport, a client on the developer's machine must read the API server's
//! TLS records from a socket, decrypt them and write the plaintext to the local client's
//! loopback socket. This does only that: a child process (so that its CPU is its own)
//! connects over TLS 1.3 (AES-128-GCM, what a Go API server picks) to a server in the
//! parent, which sends `--bytes` of data, and copies what it decrypts to a second socket
//! in the parent, which drains it. No HTTP, no WebSocket, no port-forward framing, one
//! thread (a current-thread runtime); the socket is read through a 256 KiB buffer (rustls
//! asks for one TLS record at a time; kforward's connections read ahead the same way) and
//! the plaintext is written in writes of up to 256 KiB. The child's CPU time from the
//! first byte to the last is the floor; the rest of a forwarder's CPU is what its
//! protocols and its structure add.
//!
//! ```text
//! cargo build --release -p kforward-benches && target/release/tls-floor [--bytes N] [--rounds R]
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: tls-floor [--bytes N (default 1073741824)] [--rounds R (default 3)]";
/// The read-ahead buffer under TLS, and the most plaintext written at once.
const BUF: usize = 256 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let [_, server, sink, ca] = args.as_slice() else {
            bail!("child SERVER SINK CA_PEM");
        };
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(child(server.parse()?, sink.parse()?, Path::new(ca)));
    }
    let mut bytes: u64 = 1 << 30;
    let mut rounds = 3;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = || -> anyhow::Result<u64> { Ok(it.clone().next().context(USAGE)?.parse()?) };
        match a.as_str() {
            "--bytes" => bytes = value()?,
            "--rounds" => rounds = value()?,
            _ => bail!("{USAGE}"),
        }
        it.next();
    }
    tokio::runtime::Runtime::new()?.block_on(parent(bytes, rounds))
}

/// The provider with AES-128-GCM first: a Go server (the API server) chooses it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

async fn parent(bytes: u64, rounds: u64) -> anyhow::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem())?;
    let key = PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    config.ignore_client_order = true;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let exe = std::env::current_exe()?;
    let mut per_gib = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let server = TcpListener::bind("127.0.0.1:0").await?;
        let sink = TcpListener::bind("127.0.0.1:0").await?;
        let child = tokio::process::Command::new(&exe)
            .arg("child")
            .arg(server.local_addr()?.to_string())
            .arg(sink.local_addr()?.to_string())
            .arg(&ca)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let acceptor = acceptor.clone();
        let send = tokio::spawn(async move {
            let (s, _) = server.accept().await?;
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
        let (mut s, _) = sink.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        send.await??;
        let out = child.wait_with_output().await?;
        if !out.status.success() || got != bytes {
            bail!(
                "the child failed ({}) or the sink got {got} of {bytes} bytes",
                out.status
            );
        }
        let line = String::from_utf8(out.stdout)?;
        let mut f = line.split_whitespace().map(str::parse::<f64>);
        let (Some(Ok(cpu_ms)), Some(Ok(secs))) = (f.next(), f.next()) else {
            bail!("the child said {line:?}");
        };
        per_gib.push(cpu_ms * (1u64 << 30) as f64 / bytes as f64);
        rates.push(bytes as f64 / secs / 1e6);
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

/// This process's CPU time (user and system) in milliseconds, from `/proc/self/stat` as
/// `compare` reads a forwarder's (ticks of `USER_HZ`, 100 on Linux).
fn cpu_ms() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
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
