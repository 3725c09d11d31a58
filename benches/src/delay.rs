//! A TCP proxy that holds every byte for a fixed time in each direction: on loopback, a
//! network whose round trip is twice that, between the clients and the API server. What a
//! client does per new connection (TCP and TLS handshakes, HTTP upgrade, stream setup)
//! shows up as round trips, as it does against a real cluster.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A running proxy; dropping it closes the listener and every connection through it.
pub struct DelayProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on a loopback port and relays each connection to `upstream`, each direction
/// `one_way` late.
pub async fn start(upstream: SocketAddr, one_way: Duration) -> anyhow::Result<DelayProxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Dropped with this task, aborting every connection's tasks.
        let mut conns = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            // The client's connect returned at once; over a real network its first bytes
            // would leave one round trip later, after the TCP handshake.
            let handshake_done = Instant::now() + 2 * one_way;
            conns.spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let now = Instant::now();
                tokio::join!(
                    late(cr, sw, one_way, handshake_done),
                    late(sr, cw, one_way, now)
                );
            });
        }
    });
    Ok(DelayProxy { addr, task })
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (or after
/// `not_before`, when it could have been sent at the earliest); keeps reading meanwhile, so
/// the delay adds latency and takes no bandwidth. End of stream passes on (as a
/// half-close) just as late.
async fn late(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now().max(not_before) + delay;
            // An empty chunk stands for the end of the stream.
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
                || n == 0
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
