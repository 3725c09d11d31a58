//! Many UDP datagrams per system call: [`Inbox`] takes every datagram already waiting in a
//! socket with one `recvmmsg`, [`send_all`] sends a run of datagrams with one `sendmmsg`.
//!
//! Both ends of the relay path use them (the relay's UDP session and the client's UDP front
//! end): measured with 64 DNS queries in flight, the per-datagram `recv`/`send` calls of
//! the two hops were most of the path's CPU, and each datagram cost one system call per
//! hop where the queue held several.
//!
//! On Linux these are `recvmmsg(2)`/`sendmmsg(2)` through `nix` (no `unsafe` here); on
//! other systems, which lack them, the same types loop over `recv_from`/`send_to` until the
//! socket would block, so callers have one code path.
//!
//! # Example
//!
//! ```
//! use kforward_relay::mmsg::{Inbox, send_all};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! send_all(&a, &[b"one", b"two"], Some(b.local_addr()?)).await;
//! let mut inbox = Inbox::new(8);
//! let mut got = Vec::new();
//! while got.len() < 2 {
//!     b.readable().await?;
//!     match inbox.try_recv(&b) {
//!         Ok(_) => got.extend(inbox.iter().map(|(d, from)| (d.to_vec(), from))),
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
//!         Err(e) => return Err(e),
//!     }
//! }
//! let from = a.local_addr()?;
//! assert_eq!(got, [(b"one".to_vec(), from), (b"two".to_vec(), from)]);
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tracing::debug;

use crate::protocol::MAX_DATAGRAM;

/// The most datagrams one `sendmmsg` is given (the kernel takes up to 1,024: `UIO_MAXIOV`).
const SEND_MAX: usize = 64;

/// Room for a number of datagrams, each as large as UDP allows, and what the last
/// [`try_recv`](Inbox::try_recv) put there.
///
/// Its buffer is `slots` x 64 KiB of address space, but pages are only touched (made
/// resident) as far as datagrams fill them: small datagrams cost about a page per slot.
#[derive(Debug)]
pub struct Inbox {
    buf: Vec<u8>,
    /// Length and source of each datagram received, in order.
    got: Vec<(usize, SocketAddr)>,
}

impl Inbox {
    /// An inbox taking up to `slots` datagrams per [`try_recv`](Inbox::try_recv) (at least one).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Inbox {
            // `vec![0; n]` asks the allocator for zeroed memory, which large sizes get as
            // fresh pages from the kernel: untouched ones cost nothing.
            buf: vec![0; slots * MAX_DATAGRAM],
            got: Vec::with_capacity(slots),
        }
    }

    /// How many datagrams one call takes at most.
    pub fn slots(&self) -> usize {
        self.buf.len() / MAX_DATAGRAM
    }

    /// Receives the datagrams already waiting in `socket`, up to [`slots`](Inbox::slots),
    /// without waiting; returns how many. What an earlier call received is replaced.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when none is waiting (and tokio's readiness for `socket` is cleared, so
    /// `readable().await` waits for the next one); the socket's error otherwise (for
    /// example `ECONNREFUSED` after an ICMP error for an earlier datagram: the socket
    /// stays usable).
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let slots = self.slots();
        let (buf, got) = (&mut self.buf, &mut self.got);
        socket.try_io(tokio::io::Interest::READABLE, || {
            recv_many(socket, buf, slots, got)
        })?;
        Ok(self.got.len())
    }

    /// The datagrams the last [`try_recv`](Inbox::try_recv) received, with their sources.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.buf
            .chunks(MAX_DATAGRAM)
            .zip(&self.got)
            .map(|(slot, &(len, from))| (&slot[..len], from))
    }
}

/// Sends every datagram of `datagrams` in order, to `to` (or to the socket's connected
/// peer for `None`), as few system calls as it takes, waiting while the socket's buffer is
/// full. A datagram the kernel refuses (`ECONNREFUSED` for an earlier one, a datagram too
/// large for the route, and the like) is dropped, as UDP may, and logged at debug level.
///
/// Returns how many datagrams were sent.
pub async fn send_all(socket: &UdpSocket, datagrams: &[&[u8]], to: Option<SocketAddr>) -> usize {
    let mut at = 0;
    let mut sent = 0;
    while at < datagrams.len() {
        let rest = &datagrams[at..];
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            send_many(socket, rest, to)
        }) {
            Ok(n) => {
                at += n;
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    debug!(error = %e, "udp socket unusable; datagrams dropped");
                    return sent;
                }
            }
            Err(e) => {
                // The first datagram of `rest` did not go; the ones after it may.
                debug!(error = %e, "udp send failed; datagram dropped");
                at += 1;
            }
        }
    }
    sent
}

#[cfg(target_os = "linux")]
fn recv_many(
    socket: &UdpSocket,
    buf: &mut [u8],
    slots: usize,
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

    // Fresh headers each call: `nix` does not reset the address lengths the kernel
    // shortened in a previous call (an IPv4 source would truncate a later IPv6 one).
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots, None);
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = buf
        .chunks_mut(MAX_DATAGRAM)
        .map(|slot| [IoSliceMut::new(slot)])
        .collect();
    let results = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::empty(),
        None,
    )?;
    for msg in results {
        let from = msg.address.as_ref().and_then(to_std);
        // A datagram without a source address would be a kernel bug for UDP; 0.0.0.0:0
        // stands in rather than losing the datagram for a connected socket.
        got.push((
            msg.bytes,
            from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn to_std(addr: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(target_os = "linux")]
fn send_many(socket: &UdpSocket, datagrams: &[&[u8]], to: Option<SocketAddr>) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let n = datagrams.len().min(SEND_MAX);
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams[..n].iter().map(|d| [IoSlice::new(d)]).collect();
    let addrs = vec![to.map(SockaddrStorage::from); n];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &iovs,
        addrs,
        cmsgs,
        MsgFlags::empty(),
    )?;
    Ok(sent.count())
}

/// Without `recvmmsg`: one `recv_from` per datagram until the socket would block.
#[cfg(not(target_os = "linux"))]
fn recv_many(
    socket: &UdpSocket,
    buf: &mut [u8],
    _slots: usize,
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    for slot in buf.chunks_mut(MAX_DATAGRAM) {
        match socket.try_recv_from(slot) {
            Ok((len, from)) => got.push((len, from)),
            Err(e) if got.is_empty() => return Err(e),
            // Later: what was received is handed out, the error comes again next call.
            Err(_) => break,
        }
    }
    Ok(())
}

/// Without `sendmmsg`: one `send`/`send_to` per datagram until the socket would block.
#[cfg(not(target_os = "linux"))]
fn send_many(socket: &UdpSocket, datagrams: &[&[u8]], to: Option<SocketAddr>) -> io::Result<usize> {
    let mut sent = 0;
    for d in datagrams.iter().take(SEND_MAX) {
        let r = match to {
            Some(to) => socket.try_send_to(d, to),
            None => socket.try_send(d),
        };
        match r {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Datagram `i`: its number, then bytes that depend on it; sizes from 4 bytes to the
    /// IPv4 limit (65,507).
    fn datagram(i: u32) -> Vec<u8> {
        let len = match i % 50 {
            0 => 65_507,
            1 => 4,
            _ => 4 + (i as usize * 131) % 3000,
        };
        let mut d = i.to_be_bytes().to_vec();
        d.extend((4..len).map(|j| (j as u32 ^ i) as u8));
        d
    }

    /// 300 datagrams sent with `send_all` arrive whole, in order, from the sender, through
    /// `Inbox` calls taking several at once; the largest fill a slot exactly as UDP allows.
    #[tokio::test]
    async fn runs_of_datagrams_arrive_whole_in_order_and_several_per_call() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        let _ = socket2::SockRef::from(&b).set_recv_buffer_size(4 << 20);
        let (from, to) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let sent: Vec<Vec<u8>> = (0..300).map(datagram).collect();
        let mut inbox = Inbox::new(16);
        let mut got = Vec::new();
        let mut most = 0;
        for chunk in sent.chunks(30) {
            let run: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert_eq!(send_all(&a, &run, Some(to)).await, run.len());
            let want = got.len() + run.len();
            while got.len() < want {
                tokio::time::timeout(Duration::from_secs(10), b.readable())
                    .await
                    .expect("datagrams in time")
                    .expect("readable");
                match inbox.try_recv(&b) {
                    Ok(n) => {
                        most = most.max(n);
                        for (d, src) in inbox.iter() {
                            assert_eq!(src, from);
                            got.push(d.to_vec());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("receive: {e}"),
                }
            }
        }
        assert_eq!(got.len(), sent.len());
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(g, s, "datagram {i}");
        }
        assert!(most > 1, "every call took one datagram");
    }

    /// A connected socket whose peer is gone: the refused datagrams are dropped and
    /// `send_all` keeps going instead of stopping at the first error.
    #[tokio::test]
    async fn refused_datagrams_are_dropped_and_the_rest_still_go() {
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let gone_addr = gone.local_addr().expect("address");
        drop(gone);
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        a.connect(gone_addr).await.expect("connect");
        let runs: Vec<&[u8]> = vec![b"x"; 10];
        for _ in 0..5 {
            let sent = tokio::time::timeout(Duration::from_secs(10), send_all(&a, &runs, None))
                .await
                .expect("send_all does not hang");
            assert!(sent <= runs.len());
        }
        // The socket still works for a live peer afterwards (the first datagram may take
        // the last ICMP error still pending on the socket and be dropped).
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        a.connect(b.local_addr().expect("b"))
            .await
            .expect("connect b");
        assert!(send_all(&a, &[b"ok", b"ok"], None).await >= 1);
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), b.recv(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"ok");
    }
}
