//! The traffic: long-lived TCP echo streams checked byte by byte, UDP echo datagrams, and
//! short connections to the external host, each recording an [`Outcome`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::ledger::{End, Outcome};
use super::pattern;

/// A stream with bytes outstanding and none read back for this long has stalled.
pub const STALL: Duration = Duration::from_secs(45);
/// How long a connect may take (kforward accepts at once; the stream may wait for a pod).
const CONNECT: Duration = Duration::from_secs(20);
/// Largest write of one chunk.
const MAX_CHUNK: usize = 64 * 1024;

/// Counters every flow adds to, and the outcomes.
#[derive(Debug, Default)]
pub struct Totals {
    /// Bytes written and read back, UDP payloads included.
    pub bytes_moved: AtomicU64,
    /// Bytes read back that differ from what was sent at their offset.
    pub corrupted_bytes: AtomicU64,
    /// UDP datagrams sent.
    pub udp_sent: AtomicU64,
    /// UDP echoes received.
    pub udp_received: AtomicU64,
    /// TCP connections open now.
    pub live: AtomicU64,
    /// The pods kforward sent each connection to (the first, then any it was moved to),
    /// by forward and local address of the harness, from its `connection_opened` and
    /// `connection_moved` events. Keyed by the forward too: connections to two forwards'
    /// ports may share a local port.
    pods: Mutex<HashMap<(String, SocketAddr), Vec<String>>>,
    outcomes: Mutex<Vec<Outcome>>,
}

impl Totals {
    /// Notes kforward's `connection_opened` event: `peer` of `forward` went to `pod`.
    pub fn opened(&self, forward: &str, peer: SocketAddr, pod: String) {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((forward.to_string(), peer), vec![pod]);
    }

    /// Notes kforward's `connection_moved` event: `peer` of `forward` goes to `pod` now.
    pub fn moved(&self, forward: &str, peer: SocketAddr, pod: String) {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((forward.to_string(), peer))
            .or_default()
            .push(pod);
    }

    /// The pods of the connection from `peer` to `forward`, taken while its socket is still
    /// open (so no other connection can have its address yet).
    fn take_pods(&self, forward: &str, peer: Option<SocketAddr>) -> Vec<String> {
        let Some(peer) = peer else {
            return Vec::new();
        };
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(forward.to_string(), peer))
            .unwrap_or_default()
    }

    fn record(&self, o: Outcome) {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(o);
    }

    /// Every outcome so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How one echo connection behaves.
#[derive(Debug, Clone, Copy)]
pub struct EchoShape {
    /// How long it writes before half-closing.
    pub life: Duration,
    /// Reads 4 KiB every 10 ms instead of as fast as bytes come.
    pub slow_reader: bool,
    /// Stream and pacing seed.
    pub seed: u64,
}

/// Runs echo connections to `addr` one after the other until `stop`, each of a random
/// life of up to `max_life`, recording each.
pub async fn echo_slot(
    forward: String,
    apps: Vec<&'static str>,
    addr: SocketAddr,
    max_life: Duration,
    seed: u64,
    totals: Arc<Totals>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let low = max_life / 8;
        let shape = EchoShape {
            life: low + (max_life - low).mul_f64(rng.random::<f64>()),
            slow_reader: rng.random_ratio(1, 4),
            seed: rng.random(),
        };
        let start = Instant::now();
        totals.live.fetch_add(1, Ordering::Relaxed);
        let (how, pods) = echo_once(&forward, addr, shape, &totals, &stop).await;
        totals.live.fetch_sub(1, Ordering::Relaxed);
        let refused = matches!(how, End::Refused(_));
        totals.record(Outcome {
            forward: forward.clone(),
            apps: apps.clone(),
            pods,
            start,
            end: Instant::now(),
            how,
        });
        if refused {
            // Not a busy loop against a port that refuses.
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// What the writer of a connection has done, for its reader.
#[derive(Default)]
struct Written {
    bytes: AtomicU64,
    /// The writer half-closed after writing everything.
    done: AtomicBool,
    /// When it did, for the report of an early end (the container runtime closes the pod's
    /// connection one second after the client's half-close, whatever is still unsent).
    shut_at: std::sync::Mutex<Option<Instant>>,
}

/// One echo connection: writes chunks of random sizes at a random pace for its life, then
/// half-closes and reads everything back; every byte read is checked against what was sent
/// at its offset. Returns how it ended and the pods kforward said it went to.
async fn echo_once(
    forward: &str,
    addr: SocketAddr,
    shape: EchoShape,
    totals: &Arc<Totals>,
    stop: &CancellationToken,
) -> (End, Vec<String>) {
    let stream = match tokio::time::timeout(CONNECT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (End::Refused(format!("connect: {e}")), Vec::new()),
        Err(_) => return (End::Refused("connect timed out".into()), Vec::new()),
    };
    let local = stream.local_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let written = Arc::new(Written::default());
    let writer = {
        let (written, totals, stop) = (written.clone(), totals.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(shape.seed ^ 0x5eed);
            let deadline = tokio::time::Instant::now() + shape.life;
            let mut buf = vec![0u8; MAX_CHUNK];
            let mut offset = 0u64;
            loop {
                let n = rng.random_range(1..=MAX_CHUNK);
                pattern::fill(shape.seed, offset, &mut buf[..n]);
                if wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                offset += n as u64;
                written.bytes.store(offset, Ordering::SeqCst);
                totals.bytes_moved.fetch_add(n as u64, Ordering::Relaxed);
                let pause = Duration::from_millis(rng.random_range(20..400));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(deadline) => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            if wr.shutdown().await.is_ok() {
                *written
                    .shut_at
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                written.done.store(true, Ordering::SeqCst);
            }
        })
    };
    let mut buf = vec![0u8; if shape.slow_reader { 4096 } else { MAX_CHUNK }];
    let mut scratch = Vec::new();
    let mut read = 0u64;
    let end = loop {
        match tokio::time::timeout(STALL, rd.read(&mut buf)).await {
            Ok(Ok(0)) => {
                let sent = written.bytes.load(Ordering::SeqCst);
                break if written.done.load(Ordering::SeqCst) && read == sent {
                    End::Completed
                } else if read == 0 {
                    End::Refused("closed before any byte came back".into())
                } else {
                    let shut = *written
                        .shut_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    End::Early(match shut {
                        Some(t) => format!(
                            "closed after {read} of {sent} bytes, {} ms after the half-close",
                            t.elapsed().as_millis()
                        ),
                        None => {
                            format!("closed after {read} of {sent} bytes, before the half-close")
                        }
                    })
                };
            }
            Ok(Ok(n)) => {
                let bad = pattern::mismatches(shape.seed, read, &buf[..n], &mut scratch);
                totals.corrupted_bytes.fetch_add(bad, Ordering::Relaxed);
                totals.bytes_moved.fetch_add(n as u64, Ordering::Relaxed);
                read += n as u64;
                if shape.slow_reader {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Ok(Err(e)) if read == 0 => break End::Refused(format!("read: {e}")),
            Ok(Err(e)) => break End::Early(format!("read after {read} bytes: {e}")),
            Err(_) => {
                let sent = written.bytes.load(Ordering::SeqCst);
                if sent > read {
                    break End::Early(format!(
                        "stalled: nothing for {}s with {} bytes outstanding",
                        STALL.as_secs(),
                        sent - read
                    ));
                }
            }
        }
    };
    writer.abort();
    // `rd` is still open: its address is this connection's alone.
    let pods = totals.take_pods(forward, local);
    drop(rd);
    (end, pods)
}

/// Sends a datagram of a random size every 100 ms to `addr` until `stop`, checking each
/// echo against what was sent under its sequence number.
pub async fn udp_flow(addr: SocketAddr, seed: u64, totals: Arc<Totals>, stop: CancellationToken) {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    if sock.connect(addr).await.is_err() {
        return;
    }
    let sock = Arc::new(sock);
    let receiver = {
        let (sock, totals) = (sock.clone(), totals.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut scratch = Vec::new();
            while let Ok(n) = sock.recv(&mut buf).await {
                let Some((seq, payload)) = buf[..n].split_first_chunk::<8>() else {
                    totals
                        .corrupted_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                };
                let at = u64::from_be_bytes(*seq) * 2048;
                let bad = pattern::mismatches(seed, at, payload, &mut scratch);
                totals.corrupted_bytes.fetch_add(bad, Ordering::Relaxed);
                totals.udp_received.fetch_add(1, Ordering::Relaxed);
                totals.bytes_moved.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 2048];
    for seq in 0u64.. {
        let len = rng.random_range(16..1200);
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        pattern::fill(seed, seq * 2048, &mut buf[8..len]);
        if sock.send(&buf[..len]).await.is_ok() {
            totals.udp_sent.fetch_add(1, Ordering::Relaxed);
            totals.bytes_moved.fetch_add(len as u64, Ordering::Relaxed);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Late echoes of the last datagrams.
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.abort();
}

/// Asks the external host `host` (an HTTP server: it answers requests and never speaks
/// first) for its greeting through the `proxy` forward at `addr`, one request on one
/// connection; returns the bytes read.
///
/// # Errors
///
/// What went wrong, for the report: the connect, the exchange, or an answer that is not
/// the host's greeting.
pub async fn hello_once(addr: SocketAddr, host: &str) -> Result<usize, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("HTTP/1.1 200 ") && body.starts_with(&format!("hello from {host} to ")) {
        Ok(text.len())
    } else {
        Err(format!("answer {text:?}"))
    }
}

/// Asks the external host for its greeting through the `proxy` forward at `addr` every
/// 500 ms until `stop` ([`hello_once`]), recording each exchange.
pub async fn hello_loop(
    forward: String,
    addr: SocketAddr,
    host: &'static str,
    totals: Arc<Totals>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let start = Instant::now();
        let how = match tokio::time::timeout(CONNECT, hello_once(addr, host)).await {
            Ok(Ok(n)) => {
                totals.bytes_moved.fetch_add(n as u64, Ordering::Relaxed);
                End::Completed
            }
            Ok(Err(e)) => End::Refused(e),
            Err(_) => End::Refused("no answer in time".into()),
        };
        totals.record(Outcome {
            forward: forward.clone(),
            apps: vec!["relay"],
            pods: Vec::new(),
            start,
            end: Instant::now(),
            how,
        });
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use kforward_testkit::network::{AddressPool, ExternalHost};

    use super::*;

    /// The soak's external host is the testkit's: an HTTP server that answers a request
    /// and never speaks first. The first soaks read without asking, so every exchange
    /// waited out its 20 s and was counted as a refusal by kforward.
    #[tokio::test]
    async fn the_external_host_greets_an_http_request() {
        let pool = AddressPool::new();
        let host = ExternalHost::start(
            "soak.example.internal",
            pool.next_external_ip(),
            0,
            None,
            |_: IpAddr| true,
        )
        .await
        .expect("external host");
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            hello_once(host.http_addr(), host.name()),
        )
        .await
        .expect("an answer in time");
        assert!(got.expect("the greeting") > 0);
    }
}
