//! Owning groups of server tasks: binding helpers, accept loops and prompt shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::{NetworkError, Result};
use super::protocol::Protocol;

/// Pause after a failed `accept` (for example EMFILE) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The tasks of one server (or of all servers of a pod). Dropping the group cancels every
/// task: listeners close and live connections are dropped.
#[derive(Debug, Default)]
pub(crate) struct TaskGroup {
    token: CancellationToken,
    /// Cancelled by a workload whose main process ended by itself.
    exited: CancellationToken,
    tasks: JoinSet<()>,
}

impl TaskGroup {
    /// An empty group.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The token the group cancels on shutdown.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The token a workload cancels when its process ends by itself.
    pub(crate) fn exited(&self) -> CancellationToken {
        self.exited.clone()
    }

    /// Whether the workload's process ended by itself.
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.is_cancelled()
    }

    /// Runs `task`, which must end soon after [`token`](Self::token) is cancelled.
    pub(crate) fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Cancels every task and waits until all of them, and their connections, have ended.
    pub(crate) async fn shutdown(&mut self) {
        self.token.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        // The JoinSet aborts its tasks when dropped; cancelling first lets accept loops drop
        // their connections at their next poll as well.
        self.token.cancel();
    }
}

/// Binds a TCP listener, naming the address in the error. Its backlog is what Go's
/// `net.Listen` asks for (`net.core.somaxconn`, capped by the kernel), as most servers in
/// pods are Go's: tokio's default of 1,024 dropped SYNs in a burst of 1,000 connections.
pub(crate) async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(4096)
    };
    let listener = listen().map_err(|source| NetworkError::Bind {
        addr,
        protocol: Protocol::Tcp,
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| NetworkError::LocalAddr { addr, source })?;
    Ok((listener, local))
}

/// Binds a UDP socket, naming the address in the error.
pub(crate) async fn bind_udp(addr: SocketAddr) -> Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|source| NetworkError::Bind {
            addr,
            protocol: Protocol::Udp,
            source,
        })?;
    let local = socket
        .local_addr()
        .map_err(|source| NetworkError::LocalAddr { addr, source })?;
    Ok((socket, local))
}

/// Accepts connections until `shutdown`, running `handler` for each one in its own task and
/// span. On shutdown the listener closes first, then every live connection is aborted and
/// awaited, so the caller knows all sockets are gone when this returns.
pub(crate) async fn accept_loop<H, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    server: &'static str,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("conn", server, ?local, %peer);
                    connections.spawn(handler(stream, peer).instrument(span));
                }
                Err(error) => {
                    tracing::warn!(server, ?local, %error, "accept failed; backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Resets a connection at once: `SO_LINGER` 0, then close, so the peer sees RST.
pub(crate) fn reset(stream: TcpStream) {
    if let Err(error) = stream.set_zero_linger() {
        tracing::debug!(%error, "could not set SO_LINGER 0; closing normally");
    }
    drop(stream);
}
