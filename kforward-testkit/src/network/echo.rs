//! Echo servers: TCP echo with half-close, and UDP echo with the `repeat=N;` convention.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::protocol::MAX_DATAGRAM;

/// Buffer for TCP echo: benchmarks push GiBs through echo pods, and 64 KiB keeps the number
/// of syscalls per GiB low without costing much memory per connection.
const ECHO_BUFFER: usize = 64 * 1024;
/// Most replies one datagram may ask for.
pub const MAX_REPEAT: usize = 100;

/// Echoes everything read on `stream` as it arrives; on the client's EOF, finishes writing
/// and shuts down the write side.
pub(crate) async fn echo_tcp(mut stream: TcpStream, peer: SocketAddr) {
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(ECHO_BUFFER, reader);
    match tokio::io::copy_buf(&mut reader, &mut writer).await {
        Ok(bytes) => {
            tracing::trace!(%peer, bytes, "echo finished");
            if let Err(error) = writer.shutdown().await {
                tracing::debug!(%peer, %error, "echo shutdown failed");
            }
        }
        Err(error) => tracing::debug!(%peer, %error, "echo ended with an error"),
    }
}

/// How many replies a UDP echo sends for `datagram`: `N` for a datagram starting with
/// `repeat=N;` (1..=[`MAX_REPEAT`]), otherwise 1.
pub fn repeat_count(datagram: &[u8]) -> usize {
    let Some(rest) = datagram.strip_prefix(b"repeat=") else {
        return 1;
    };
    let Some(end) = rest.iter().position(|b| *b == b';') else {
        return 1;
    };
    std::str::from_utf8(&rest[..end])
        .ok()
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<usize>().ok())
        .filter(|n| (1..=MAX_REPEAT).contains(n))
        .unwrap_or(1)
}

/// Echoes datagrams on `socket` until `shutdown`, ignoring peers `allow` refuses.
pub(crate) async fn echo_udp<A>(socket: UdpSocket, allow: A, shutdown: CancellationToken)
where
    A: Fn(IpAddr) -> bool,
{
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "udp echo receive failed");
                    continue;
                }
            },
        };
        if !allow(peer.ip()) {
            tracing::debug!(%peer, "udp datagram from a peer that is not allowed; ignored");
            continue;
        }
        let datagram = &buf[..len];
        for _ in 0..repeat_count(datagram) {
            if let Err(error) = socket.send_to(datagram, peer).await {
                tracing::debug!(%peer, %error, "udp echo send failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_prefix() {
        assert_eq!(repeat_count(b"repeat=3;hello"), 3);
        assert_eq!(repeat_count(b"repeat=100;"), 100);
        assert_eq!(repeat_count(b"repeat=101;"), 1);
        assert_eq!(repeat_count(b"repeat=0;"), 1);
        assert_eq!(repeat_count(b"repeat=;"), 1);
        assert_eq!(repeat_count(b"repeat=+2;"), 1);
        assert_eq!(repeat_count(b"repeat=3"), 1);
        assert_eq!(repeat_count(b"hello"), 1);
        assert_eq!(repeat_count(b""), 1);
    }
}
