//! The byte pump: carries one local connection (a TCP socket, or a forward proxy's client
//! after its handshake) and one stream both ways, counting every byte as it passes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stats::Connection;
use crate::transport::{StreamReader, StreamWriter};

/// Most bytes read from the local client at once: one transport message per read, so
/// bigger reads mean fewer frames at bulk rates. (The other way, each message the pod's
/// side sent is written to the local client as it came.)
const BUF: usize = 128 * 1024;
/// The buffer a connection starts with. It doubles (up to [`BUF`]) each time a read fills
/// it, so bulk transfers reach big reads after a few reads, while a short connection (an
/// HTTP request) never pays for 2 x 128 KiB: allocations that large are mmap'ed and
/// page-faulted in on every connection, which showed in the first-byte profile.
const FIRST_BUF: usize = 8 * 1024;

/// When either direction of one connection last carried bytes (milliseconds since
/// `epoch`), for the linger after a local EOF.
struct Activity {
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Local client to the stream: each read lands behind the transport's headroom in a
/// buffer whose space is reused once the message sent from it is written, so the bytes are
/// not copied into a message of their own.
async fn up<R: AsyncRead + Unpin>(
    mut from: R,
    mut to: StreamWriter,
    conn: &Connection,
    activity: &Activity,
) -> io::Result<()> {
    let headroom = to.headroom();
    let mut buf = BytesMut::new();
    let mut want = FIRST_BUF;
    loop {
        buf.reserve(want + headroom);
        buf.put_bytes(0, headroom);
        let n = from.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            // Pass the EOF on (a half-close where the transport has one).
            let _ = to.finish().await;
            return Ok(());
        }
        to.send(buf.split_to(n + headroom)).await?;
        if n == want && want < BUF {
            want = (2 * want).min(BUF);
        }
        conn.sent(n);
        activity.touch();
    }
}

/// The stream to the local client: each received message's bytes go to the socket as
/// they are.
async fn down<W: AsyncWrite + Unpin>(
    mut from: StreamReader,
    mut to: W,
    conn: &Connection,
    activity: &Activity,
) -> io::Result<()> {
    while let Some(chunk) = from.read_chunk().await? {
        to.write_all(&chunk).await?;
        conn.received(chunk.len());
        activity.touch();
    }
    let _ = to.shutdown().await;
    Ok(())
}

/// Carries `local` (its read and write halves: a TCP socket's `into_split`, or
/// [`tokio::io::split`] of any connection) and the stream until both sides are done;
/// returns the first error.
///
/// When the local client ends its writes first: on a transport that passes the half-close
/// on (SPDY), replies flow until the far side ends too; on one that cannot (the v4
/// WebSocket), until it ends or nothing has come back for `linger` (a server that waits for
/// the half-close would otherwise never be left). The connection stops counting as open then:
/// its client is done, only late replies may still reach it.
///
/// When the pod's side ends first: on a transport with half-close, the local client sees
/// EOF (its socket's write side is shut down) while what it still writes goes on to the
/// pod, until it ends its writes too or nothing has moved for `linger` (the container
/// runtime closes the pod's connection soon after one direction ended, and a client that
/// never ends its writes would hold the connection forever). On the v4 WebSocket the
/// stream's end is the connection's.
pub(crate) async fn pump<R, W>(
    (lr, lw): (R, W),
    (reader, writer): (StreamReader, StreamWriter),
    conn: &Connection,
    linger: Duration,
) -> Option<io::Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let half_close = writer.passes_half_close();
    let activity = Activity {
        last: AtomicU64::new(0),
        epoch: Instant::now(),
    };
    let up = up(lr, writer, conn, &activity);
    let down = down(reader, lw, conn, &activity);
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut down => match r {
            Err(e) => Some(e),
            Ok(()) if half_close => until_quiet(&mut up, linger, &activity).await,
            Ok(()) => None,
        },
        r = &mut up => match r {
            Err(e) => Some(e),
            Ok(()) if half_close => down.await.err(),
            Ok(()) => {
                conn.close();
                until_quiet(&mut down, linger, &activity).await
            }
        },
    }
}

/// Waits for `rest` (the direction still going) to end, or for `linger` without a byte
/// either way.
async fn until_quiet(
    rest: &mut (impl std::future::Future<Output = io::Result<()>> + Unpin),
    linger: Duration,
    activity: &Activity,
) -> Option<io::Error> {
    loop {
        let wait = linger.saturating_sub(activity.idle_for());
        if wait.is_zero() {
            return None;
        }
        tokio::select! {
            r = &mut *rest => return r.err(),
            () = tokio::time::sleep(wait) => {}
        }
    }
}
