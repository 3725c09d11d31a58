//! The session's writer task: sends what streams and the session queue, batched into few
//! writes, control frames ahead of queued DATA.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::error::SessionEnd;
use super::session::Inner;

/// The most bytes one write batch gathers before it is written.
const BATCH: usize = 256 * 1024;
/// Frames at least this large are written as they are instead of being copied into the
/// batch buffer.
const WRITE_DIRECT: usize = 16 * 1024;

/// A frame for the writer: control frames jump ahead of queued DATA.
pub(crate) enum Ctrl {
    Frame(Bytes),
    /// Write what came before, then close the connection.
    Close,
}

pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    inner: Arc<Inner>,
    mut wr: W,
    mut ctrl: mpsc::UnboundedReceiver<Ctrl>,
    mut data: mpsc::Receiver<Bytes>,
) {
    let mut closing = false;
    let result: std::io::Result<()> = async {
        loop {
            let mut frames: Vec<Bytes> = Vec::new();
            let mut heads: Vec<Bytes> = Vec::new();
            tokio::select! {
                biased;
                c = ctrl.recv() => match c {
                    Some(Ctrl::Frame(b)) => heads.push(b),
                    Some(Ctrl::Close) | None => closing = true,
                },
                d = data.recv() => match d {
                    Some(b) => frames.push(b),
                    None => closing = true,
                },
                _ = inner.ended.cancelled(), if !closing => closing = true,
            }
            // DATA first, then every control frame queued so far, written before it: a
            // stream's SYN_STREAM was queued before its first DATA, so it is in `heads`
            // if it was not written already.
            let mut bytes: usize = frames.iter().map(Bytes::len).sum();
            while bytes < BATCH {
                match data.try_recv() {
                    Ok(b) => {
                        bytes += b.len();
                        frames.push(b);
                    }
                    Err(_) => break,
                }
            }
            loop {
                match ctrl.try_recv() {
                    Ok(Ctrl::Frame(b)) => heads.push(b),
                    Ok(Ctrl::Close) => closing = true,
                    Err(_) => break,
                }
            }
            let mut small = BytesMut::new();
            for b in heads.into_iter().chain(frames) {
                if b.len() >= WRITE_DIRECT {
                    if !small.is_empty() {
                        wr.write_all(&small).await?;
                        small.clear();
                    }
                    wr.write_all(&b).await?;
                } else {
                    small.extend_from_slice(&b);
                }
            }
            if !small.is_empty() {
                wr.write_all(&small).await?;
            }
            wr.flush().await?;
            if closing {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
            inner.finish(SessionEnd::Local);
        }
        Err(e) => inner.finish(SessionEnd::Io(e.to_string())),
    }
}
