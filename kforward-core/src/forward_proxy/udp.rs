//! SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): a local UDP socket for the client, and per
//! destination a UDP session through the relay pod (or, for `--direct` destinations, a
//! socket of this machine), for as long as the client keeps its TCP connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::conn::{Conn, Shared};
use super::route::Route;
use super::socks::{self, Address, Host, Reply};
use crate::forward::{Connection, Destination, Event};
use crate::relay::protocol::{MAX_DATAGRAM, Transport, decode_datagram, encode_datagram};

/// Datagrams queued toward one destination before new ones are dropped (UDP may drop).
const QUEUE: usize = 256;
/// A destination's session with no datagram either way for this long ends.
const IDLE: Duration = Duration::from_secs(120);

/// Serves one UDP association until the client closes its TCP connection.
pub(crate) async fn associate(
    mut ctl: TcpStream,
    peer: SocketAddr,
    from: Address,
    shared: &Arc<Shared>,
    counted: &Arc<Connection>,
) {
    let bind_ip = ctl
        .local_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let sock = match UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            debug!(%peer, error = %e, "cannot open a UDP socket for the association");
            let _ = ctl
                .write_all(&socks::encode_reply5(
                    Reply::GeneralFailure,
                    SocketAddr::new(bind_ip, 0),
                ))
                .await;
            return;
        }
    };
    let local = sock
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(bind_ip, 0));
    if ctl
        .write_all(&socks::encode_reply5(Reply::Succeeded, local))
        .await
        .is_err()
    {
        return;
    }
    // Datagrams are taken from the client's address only: its IP, and its port when the
    // request named one (RFC 1928: 0 means not yet known).
    let want_port = match from.host {
        Host::Ip(ip) if !ip.is_unspecified() => Some(from.port).filter(|p| *p != 0),
        _ => None,
    };
    let mut sessions: HashMap<Address, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ctl_buf = [0u8; 64];
    loop {
        tokio::select! {
            r = ctl.read(&mut ctl_buf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                sessions.retain(|_, tx| !tx.is_closed());
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                if src.ip() != peer.ip() || want_port.is_some_and(|p| p != src.port()) {
                    continue;
                }
                let Ok((head, at)) = socks::parse_udp(&buf[..n]) else { continue };
                if head.frag != 0 {
                    // Fragments are not supported: RFC 1928 says to drop them.
                    continue;
                }
                let data = buf[at..n].to_vec();
                if let Some(tx) = sessions.get(&head.address).filter(|tx| !tx.is_closed()) {
                    let _ = tx.try_send(data);
                    continue;
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                let _ = tx.try_send(data);
                sessions.insert(head.address.clone(), tx);
                let (shared, sock) = (shared.clone(), sock.clone());
                let counted = counted.clone();
                tasks.spawn(session(shared, counted, sock, peer, src, head.address, rx));
            }
        }
    }
    tasks.shutdown().await;
}

/// One destination's datagrams, both ways, until idle or the association ends.
async fn session(
    shared: Arc<Shared>,
    counted: Arc<Connection>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    client: SocketAddr,
    dest: Address,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let host = match &dest.host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.trim_end_matches('.').to_string(),
    };
    let route = if shared.opts.direct.matching(&host, dest.port).is_some() {
        Route::Direct {
            host: host.clone(),
            port: dest.port,
        }
    } else {
        Route::Relay {
            host: host.clone(),
            port: dest.port,
        }
    };
    info!(%peer, destination = %dest, %route, "UDP session");
    let conn = Conn::new(&shared, &counted, peer, "socks5-udp", dest.clone());
    conn.routed(route.clone());
    let ends = Ends {
        sock: &sock,
        client,
        dest: &dest,
        counted: &counted,
    };
    let result = match route {
        Route::Direct { .. } => direct(&ends, &host, &mut rx).await,
        _ => relayed(&shared, &ends, peer, &host, &mut rx).await,
    };
    if let Err(message) = result {
        info!(%peer, destination = %dest, %message, "UDP session failed");
        counted.failed_request();
        shared.emit(Event::Error {
            forward: shared.label.clone(),
            message: format!("{dest} (socks5-udp, from {peer}): {message}"),
        });
    }
}

/// The client's side of one destination's datagrams: each is counted as it passes.
struct Ends<'a> {
    sock: &'a UdpSocket,
    client: SocketAddr,
    dest: &'a Address,
    counted: &'a Connection,
}

impl Ends<'_> {
    /// Sends `data` from the destination to the client.
    async fn reply(&self, data: &[u8]) {
        let framed = socks::encode_udp(self.dest, data);
        if self.sock.send_to(&framed, self.client).await.is_ok() {
            self.counted.received(data.len());
        }
    }
}

async fn direct(
    ends: &Ends<'_>,
    host: &str,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let dest = ends.dest;
    let target = tokio::net::lookup_host((host, dest.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the name has no address")?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let out = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    out.connect(target).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    if out.send(&d).await.is_ok() {
                        ends.counted.sent(d.len());
                    }
                }
                None => return Ok(()),
            },
            r = out.recv(&mut buf) => {
                if let Ok(n) = r {
                    ends.reply(&buf[..n]).await;
                }
            }
            () = tokio::time::sleep(IDLE) => return Ok(()),
        }
    }
}

async fn relayed(
    shared: &Shared,
    ends: &Ends<'_>,
    peer: SocketAddr,
    host: &str,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    if !shared.router.options().relay {
        return Err("UDP goes through the relay pod, which --no-relay turns off".into());
    }
    let dest = Destination::Relay {
        namespace: shared.namespace.clone(),
        host: host.to_string(),
        port: ends.dest.port,
        transport: Transport::Udp,
    };
    let stream = shared
        .ways
        .dialer
        .dial(&dest, peer)
        .await
        .map_err(|e| e.to_string())?;
    let (mut r, mut w) = tokio::io::split(stream);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    let mut framed = Vec::with_capacity(d.len() + 2);
                    if encode_datagram(&d, &mut framed).is_ok() {
                        if w.write_all(&framed).await.is_err() {
                            return Err("the relay stream closed".into());
                        }
                        ends.counted.sent(d.len());
                    }
                }
                None => return Ok(()),
            },
            n = r.read(&mut chunk) => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Ok(Some((d, u))) = decode_datagram(&pending[used..]) {
                    ends.reply(d).await;
                    used += u;
                }
                pending.drain(..used);
            }
            () = tokio::time::sleep(IDLE) => return Ok(()),
        }
    }
}
