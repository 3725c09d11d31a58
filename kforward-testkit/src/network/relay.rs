//! Forwarding to an upstream address: TCP connection relay and per-peer UDP sessions.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::protocol::MAX_DATAGRAM;
use super::tasks::reset;

/// How long an upstream TCP connect may take before the client is reset.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer per direction of a TCP relay: benchmarks push GiBs through passthrough pods and
/// services, and 64 KiB (instead of tokio's 8 KiB default) cuts syscalls per GiB eightfold.
const RELAY_BUFFER: usize = 64 * 1024;
/// Datagrams queued per UDP session before new ones are dropped, as a full socket would.
const SESSION_QUEUE: usize = 256;

/// Connects to `target` from `source` (port 0), within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_from(
    source: Option<Ipv4Addr>,
    target: SocketAddr,
) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let (Some(ip), SocketAddr::V4(_)) = (source, target) {
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {target} timed out after {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Relays `client` to `target` (connecting from `source`) until both sides close. A failed
/// connect resets the client, as a refused upstream looks to a real proxy's client.
pub(crate) async fn relay_tcp(mut client: TcpStream, source: Option<Ipv4Addr>, target: SocketAddr) {
    let mut upstream = match connect_from(source, target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(%target, %error, "upstream connect failed; resetting client");
            reset(client);
            return;
        }
    };
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        RELAY_BUFFER,
        RELAY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => tracing::trace!(%target, up, down, "relay finished"),
        Err(error) => tracing::debug!(%target, %error, "relay ended with an error"),
    }
}

/// Chooses upstreams for a UDP relay.
pub(crate) trait UdpRoute: Send + Sync + 'static {
    /// The upstream for a new session from `peer`, or `None` to drop the datagram.
    fn pick(&self, peer: SocketAddr) -> Option<SocketAddr>;
    /// Whether an existing session may keep using `upstream`.
    fn still_valid(&self, _upstream: SocketAddr) -> bool {
        true
    }
}

/// Settings of a UDP relay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpRelayConfig {
    /// Source address for upstream sockets (port 0); `None` binds the unspecified address.
    pub(crate) source: Option<Ipv4Addr>,
    /// A session with no traffic either way for this long ends.
    pub(crate) idle_timeout: Duration,
}

/// One live session, as seen by the receive loop.
struct Session {
    id: u64,
    upstream: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Receives on `listener` and relays each peer's datagrams through its own upstream socket,
/// sending replies back to that peer, until `shutdown`.
pub(crate) async fn relay_udp<R: UdpRoute>(
    listener: UdpSocket,
    config: UdpRelayConfig,
    route: R,
    shutdown: CancellationToken,
) {
    let listener = Arc::new(listener);
    let sessions: Sessions = Arc::default();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            received = listener.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors from earlier replies surface here on Linux; keep serving.
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            },
        };
        let datagram = buf[..len].to_vec();
        let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = map.get(&peer) {
            if route.still_valid(session.upstream) {
                // A full or closing session drops the datagram, as UDP may.
                let _ = session.queue.try_send(datagram);
                continue;
            }
            map.remove(&peer);
        }
        let Some(upstream) = route.pick(peer) else {
            tracing::debug!(%peer, "no upstream for udp datagram; dropped");
            continue;
        };
        let (queue, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = queue.try_send(datagram);
        next_id += 1;
        let id = next_id;
        map.insert(
            peer,
            Session {
                id,
                upstream,
                queue,
            },
        );
        drop(map);
        let session = run_session(
            Arc::clone(&listener),
            peer,
            upstream,
            config,
            rx,
            Arc::clone(&sessions),
            id,
        );
        tasks.spawn(session);
    }
    tasks.shutdown().await;
}

/// Forwards one peer's datagrams to `upstream` and replies back, until idle or closed, then
/// removes itself from `sessions`.
async fn run_session(
    listener: Arc<UdpSocket>,
    peer: SocketAddr,
    upstream: SocketAddr,
    config: UdpRelayConfig,
    mut rx: mpsc::Receiver<Vec<u8>>,
    sessions: Sessions,
    id: u64,
) {
    if let Err(error) = forward_session(&listener, peer, upstream, config, &mut rx).await {
        tracing::debug!(%peer, %upstream, %error, "udp session ended with an error");
    }
    let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
    if map.get(&peer).is_some_and(|s| s.id == id) {
        map.remove(&peer);
    }
}

async fn forward_session(
    listener: &UdpSocket,
    peer: SocketAddr,
    upstream: SocketAddr,
    config: UdpRelayConfig,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let bind_ip = match (config.source, upstream) {
        (Some(ip), _) => SocketAddr::from((ip, 0)),
        (None, SocketAddr::V4(_)) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(bind_ip).await?;
    socket.connect(upstream).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            outgoing = rx.recv() => match outgoing {
                Some(datagram) => {
                    if let Err(error) = socket.send(&datagram).await {
                        tracing::debug!(%upstream, %error, "udp send upstream failed");
                    }
                }
                None => return Ok(()),
            },
            reply = socket.recv(&mut buf) => match reply {
                Ok(len) => {
                    listener.send_to(&buf[..len], peer).await?;
                }
                // ECONNREFUSED from an earlier send: the upstream port is closed; keep the
                // session, as a later datagram may find it open.
                Err(error) => tracing::debug!(%upstream, %error, "udp receive from upstream failed"),
            },
            () = tokio::time::sleep(config.idle_timeout) => {
                tracing::debug!(%peer, %upstream, "udp session idle; closing");
                return Ok(());
            }
        }
    }
}
