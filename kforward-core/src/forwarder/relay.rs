//! Carrying one local TCP connection through one tunnel, both ways.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Stats;

/// Most bytes read at once in each direction: one WebSocket message per read, so bigger
/// reads mean fewer frames at bulk rates.
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

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    total: &AtomicU64,
    activity: &AtomicU64,
    epoch: Instant,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Spare capacity is read into without zeroing it first (`read_buf`).
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_BUF);
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            // Pass the EOF on (for the tunnel this only stops writes: see `Tunnel`).
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        if n == buf.capacity() && n < BUF {
            buf.reserve_exact((2 * n).min(BUF) - buf.len());
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        total.fetch_add(n as u64, Ordering::Relaxed);
        activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Relays `local` and `remote` until the remote side ends. When the local client ends its
/// writes first, replies keep flowing until the remote ends too, or until nothing has
/// come back for `linger` (the port-forward protocol cannot pass a half-close on, so a
/// server that waits for one would otherwise never answer).
pub(crate) async fn relay<T>(
    local: TcpStream,
    remote: T,
    stats: &Arc<Stats>,
    linger: Duration,
) -> Carried
where
    T: AsyncRead + AsyncWrite + Send,
{
    let (lr, lw) = local.into_split();
    let (rr, rw) = tokio::io::split(remote);
    let out = AtomicU64::new(0);
    let inn = AtomicU64::new(0);
    let activity = AtomicU64::new(0);
    let epoch = Instant::now();
    let up = pump(lr, rw, &out, &stats.bytes_out, &activity, epoch);
    let down = pump(rr, lw, &inn, &stats.bytes_in, &activity, epoch);
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
