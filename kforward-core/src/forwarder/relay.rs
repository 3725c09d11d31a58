//! Carrying one local TCP connection through one tunnel, both ways.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Stats;
use crate::tunnel::{DATA_CHANNEL, Tunnel, TunnelReader, TunnelWriter};

/// Most bytes read from the local client at once: one WebSocket message per read, so
/// bigger reads mean fewer frames at bulk rates. (The other way, each message the pod's
/// side sent is written to the local client as it came.)
const BUF: usize = 128 * 1024;
/// The buffer a connection starts with. It doubles (up to [`BUF`]) each time a read fills
/// it, so bulk transfers reach big reads after a few reads, while a short connection (an
/// HTTP request) never pays for 2 x 128 KiB: allocations that large are mmap'ed and
/// page-faulted in on every connection, which showed in the first-byte profile.
const FIRST_BUF: usize = 8 * 1024;

/// What a finished relay carried.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Client to pod.
    pub(crate) bytes_out: u64,
    /// Pod to client.
    pub(crate) bytes_in: u64,
    /// The first error, if any.
    pub(crate) error: Option<io::Error>,
}

/// When either direction of one connection last carried bytes (milliseconds since
/// `epoch`), for the linger after a local EOF.
struct Activity<'a> {
    last: &'a AtomicU64,
    epoch: Instant,
}

impl Activity<'_> {
    /// Counts `n` bytes into the connection's and the forward's counter, and notes the time.
    fn carried(&self, counter: &AtomicU64, total: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        total.fetch_add(n as u64, Ordering::Relaxed);
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Local client to pod: each read lands behind the data channel's byte in a buffer whose
/// space is reused once the message sent from it is written, so the bytes are not copied
/// into a message of their own.
async fn pump_up(
    mut from: OwnedReadHalf,
    mut to: TunnelWriter,
    counter: &AtomicU64,
    total: &AtomicU64,
    activity: &Activity<'_>,
) -> io::Result<()> {
    let mut buf = BytesMut::new();
    let mut want = FIRST_BUF;
    loop {
        buf.reserve(want + 1);
        buf.put_u8(DATA_CHANNEL);
        let n = from.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            // Pass the EOF on (for the tunnel this only stops writes: see `Tunnel`).
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.send_frame(buf.split_to(n + 1).freeze()).await?;
        if n == want && want < BUF {
            want = (2 * want).min(BUF);
        }
        activity.carried(counter, total, n);
    }
}

/// Pod to local client: each received message's bytes go to the socket as they are.
async fn pump_down(
    mut from: TunnelReader,
    mut to: OwnedWriteHalf,
    counter: &AtomicU64,
    total: &AtomicU64,
    activity: &Activity<'_>,
) -> io::Result<()> {
    while let Some(chunk) = from.read_chunk().await? {
        to.write_all(&chunk).await?;
        activity.carried(counter, total, chunk.len());
    }
    let _ = to.shutdown().await;
    Ok(())
}

/// Relays `local` and `remote` until the remote side ends. When the local client ends its
/// writes first, replies keep flowing until the remote ends too, or until nothing has
/// come back for `linger` (the port-forward protocol cannot pass a half-close on, so a
/// server that waits for one would otherwise never answer).
pub(crate) async fn relay(
    local: TcpStream,
    remote: Tunnel,
    stats: &Arc<Stats>,
    linger: Duration,
) -> Carried {
    let (lr, lw) = local.into_split();
    let (rr, rw) = remote.into_split();
    let out = AtomicU64::new(0);
    let inn = AtomicU64::new(0);
    let activity = AtomicU64::new(0);
    let epoch = Instant::now();
    let last = Activity {
        last: &activity,
        epoch,
    };
    let up = pump_up(lr, rw, &out, &stats.bytes_out, &last);
    let down = pump_down(rr, lw, &inn, &stats.bytes_in, &last);
    tokio::pin!(up, down);
    let error = tokio::select! {
        r = &mut down => r.err(),
        r = &mut up => match r {
            Err(e) => Some(e),
            Ok(()) => {
                // Local EOF: wait for the remote to finish, or to go quiet for `linger`.
                loop {
                    let idle_for = epoch.elapsed().saturating_sub(Duration::from_millis(activity.load(Ordering::Relaxed)));
                    let wait = linger.saturating_sub(idle_for);
                    if wait.is_zero() {
                        break None;
                    }
                    tokio::select! {
                        r = &mut down => break r.err(),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        },
    };
    Carried {
        bytes_out: out.load(Ordering::Relaxed),
        bytes_in: inn.load(Ordering::Relaxed),
        error,
    }
}
