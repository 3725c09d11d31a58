//! The relay's UDP session after the handshake: datagrams from the client's stream go out
//! of one connected UDP socket, and what comes back goes to the stream, each direction on
//! its own so that neither waits for the other.
//!
//! Toward the client, every datagram already waiting in the socket goes into one write
//! ([`Batch`], up to [`BATCH`] bytes): under load (many queries in flight) one write, and
//! so one message through the port-forward, carries many replies instead of one each.
//! Both directions move the datagrams of a batch with one system call ([`mmsg`]): one
//! `recvmmsg` takes up to [`SLOTS`] replies, one `sendmmsg` sends every datagram a read
//! from the client completed.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::datagrams::{Batch, Deframer, IdleClock};
use crate::mmsg::{self, Inbox};

/// The most bytes of frames gathered for one write toward the client (and up to [`SLOTS`]
/// datagrams more, one receive's worth): what a message through the port-forward
/// comfortably carries, and few enough that the first datagram of a batch does not wait on
/// a long copy.
pub(crate) const BATCH: usize = 128 * 1024;
/// Datagrams one receive takes at most.
const SLOTS: usize = 32;
/// Bytes asked of the stream per read.
const READ: usize = 64 * 1024;
/// The UDP socket's receive and send buffers asked for: a batch from the client (up to
/// 128 KiB of datagrams, sent back to back) and the burst of replies it causes must not
/// overflow the kernel's default (about 208 KiB, which small datagrams fill at a few hundred:
/// each costs its bytes plus the kernel's bookkeeping). A limit, not an allocation. Linux
/// caps the request at `net.core.rmem_max` / `wmem_max` and doubles it (for its
/// bookkeeping), so where the cap is the usual 208 KiB the buffer still doubles.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Carries datagrams between `stream` (after the handshake; `leftover` is what was read
/// past it) and `socket` until the client closes, the stream fails, or `idle` passes with
/// no datagram either way.
pub(crate) async fn relay(
    stream: TcpStream,
    leftover: Vec<u8>,
    socket: &UdpSocket,
    idle: Duration,
) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock
        .set_recv_buffer_size(SOCKET_BUFFER)
        .and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER))
    {
        debug!(error = %e, "cannot enlarge the udp socket's buffers");
    }
    let (rd, wr) = stream.into_split();
    let activity = IdleClock::new();
    tokio::select! {
        r = to_socket(rd, leftover, socket, &activity) => r,
        r = to_stream(socket, wr, &activity) => r,
        () = activity.idle(idle) => {
            debug!("udp session idle; closing");
            Ok(())
        }
    }
}

/// Client to destination: every whole datagram a read completes is sent.
async fn to_socket(
    mut rd: OwnedReadHalf,
    leftover: Vec<u8>,
    socket: &UdpSocket,
    activity: &IdleClock,
) -> io::Result<()> {
    let mut frames = Deframer::new();
    frames.extend(&leftover);
    loop {
        let datagrams = frames.next_datagrams();
        if !datagrams.is_empty() {
            // A refused datagram (ECONNREFUSED for an earlier one, and the like) is
            // dropped, as UDP may; `send_all` logs it.
            mmsg::send_all(socket, &datagrams, None).await;
            activity.touch();
        }
        if rd.read_buf(frames.read_buffer(READ)).await? == 0 {
            return Ok(());
        }
    }
}

/// Destination to client: waits for a datagram, then takes every one already waiting into
/// the same write.
async fn to_stream(
    socket: &UdpSocket,
    mut wr: OwnedWriteHalf,
    activity: &IdleClock,
) -> io::Result<()> {
    let mut batch = Batch::new(BATCH);
    let mut inbox = Inbox::new(SLOTS);
    loop {
        batch.clear();
        socket.readable().await?;
        while batch.len() < BATCH {
            match inbox.try_recv(socket) {
                Ok(_) => {
                    for (datagram, _) in inbox.iter() {
                        // From one receive of at most MAX_DATAGRAM bytes: it fits.
                        let _ = batch.push(datagram);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // An ICMP error for an earlier datagram (ECONNREFUSED), and the like:
                    // the socket stays usable, as UDP may drop.
                    debug!(error = %e, "udp receive failed");
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        activity.touch();
        wr.write_all(batch.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::protocol::{Request, Transport, decode_response, encode_request};
    use crate::server::{RelayServer, SystemResolver};

    /// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
    const MAX_IPV4_PAYLOAD: usize = 65_507;

    /// Datagram `seq` of `peer`: its numbers, then a pattern both depend on; sizes from 8
    /// bytes to the IPv4 limit.
    fn datagram(peer: u8, seq: u32) -> Vec<u8> {
        let len = match seq % 100 {
            0 => MAX_IPV4_PAYLOAD,
            50 => 9000,
            _ => 8 + (seq as usize * 37) % 1400,
        };
        let mut d = vec![peer];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend((d.len()..len).map(|i| (i as u32 ^ seq) as u8 ^ peer));
        d
    }

    /// A UDP echo on a thread of its own, with a large receive buffer, as a DNS server
    /// answering everything at once.
    fn echo() -> SocketAddr {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind echo");
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(SOCKET_BUFFER);
        let addr = sock.local_addr().expect("echo address");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            // Ends 5 s after the last datagram.
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        addr
    }

    async fn session(relay: SocketAddr, dest: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(relay).await.expect("connect relay");
        let req = Request::new("tok", Transport::Udp, &dest.ip().to_string(), dest.port());
        s.write_all(&encode_request(&req).expect("encode"))
            .await
            .expect("handshake");
        let mut head = [0u8; 3];
        s.read_exact(&mut head).await.expect("response");
        let (resp, _) = decode_response(&head).expect("valid").expect("whole");
        assert_eq!(resp.status, crate::protocol::Status::Ok);
        s
    }

    /// 1,000 datagrams per peer, of sizes up to the IPv4 limit, written to the relay in one
    /// write (so queued at once), from three peers at the same time: every one comes back
    /// intact and in order on its own peer's stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_datagrams_arrives_whole_and_in_order_per_peer() {
        const N: u32 = 1000;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let server = tokio::spawn(RelayServer::run(
            listener,
            "tok".into(),
            SystemResolver,
            None,
            Duration::from_secs(60),
            stop.clone(),
        ));
        let dest = echo();
        let peers = (0..3u8).map(|peer| async move {
            let s = session(relay, dest).await;
            let (mut rd, mut wr) = s.into_split();
            let mut burst = Batch::new(0);
            for seq in 0..N {
                burst.push(&datagram(peer, seq)).expect("fits");
            }
            let writer = async move {
                wr.write_all(burst.as_bytes()).await.expect("burst written");
                wr
            };
            let reader = async move {
                let mut frames = Deframer::new();
                let mut next = 0u32;
                while next < N {
                    let n = rd.read_buf(frames.read_buffer(READ)).await.expect("read");
                    assert!(
                        n > 0,
                        "peer {peer}: the relay closed after {next} datagrams"
                    );
                    while let Some(d) = frames.next_datagram() {
                        assert_eq!(d, datagram(peer, next), "peer {peer}, datagram {next}");
                        next += 1;
                    }
                }
                assert_eq!(frames.buffered(), 0);
            };
            let (_wr, ()) = tokio::join!(writer, reader);
        });
        tokio::time::timeout(Duration::from_secs(60), futures_join_all(peers))
            .await
            .expect("every datagram back in time");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stops")
            .expect("joins");
    }

    /// Runs the futures together (`futures::future::join_all` without the dependency).
    async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
        all: impl Iterator<Item = F>,
    ) {
        let mut set = tokio::task::JoinSet::new();
        for f in all {
            set.spawn(f);
        }
        while let Some(r) = set.join_next().await {
            r.expect("peer task");
        }
    }
}
