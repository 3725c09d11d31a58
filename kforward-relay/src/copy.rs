//! The TCP relay's two-way copy, with a buffer per direction that starts small and grows.
//!
//! tokio's `copy_bidirectional` keeps one fixed buffer per direction: 64 KiB each for every
//! connection made the relay trail haproxy over one bulk connection, while 256 KiB each
//! made every idle connection cost half a MiB. Here a direction starts at 8 KiB and doubles
//! each time a read fills its buffer, up to 256 KiB: a bulk transfer reaches big reads after
//! a few reads, and a quiet connection stays small.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The buffer each direction starts with.
const FIRST: usize = 8 * 1024;
/// The most a direction's buffer grows to.
const MAX: usize = 256 * 1024;

/// Copies `a` to `b` and `b` to `a` until both directions have ended. An end of stream in
/// one direction is passed on as a half-close (shutdown of the other side's writes), as
/// `tokio::io::copy_bidirectional` does; an error in either direction ends both. Returns
/// the bytes copied `a` to `b` and `b` to `a`.
pub(crate) async fn both_ways(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<(u64, u64)> {
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    tokio::try_join!(one_way(ar, bw), one_way(br, aw))
}

async fn one_way<R, W>(mut from: R, mut to: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Spare capacity is read into without zeroing it first (`read_buf`).
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST);
    let mut total = 0u64;
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            // The peer may be gone already; the other direction finds that out itself.
            let _ = to.shutdown().await;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.capacity() && n < MAX {
            buf.reserve_exact((2 * n).min(MAX) - buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("address");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.expect("connect"), s.expect("accept").0)
    }

    /// Over real loopback sockets: 3 MiB one way (enough for the buffer to grow to its
    /// largest), a reply the other way after the half-close, and both counts.
    #[tokio::test]
    async fn copies_both_ways_and_passes_the_half_close_on() {
        let (mut client, mut relay_a) = pair().await;
        let (mut relay_b, mut server) = pair().await;
        let relay = tokio::spawn(async move { both_ways(&mut relay_a, &mut relay_b).await });
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let run = async move {
            let writer = async {
                client.write_all(&data).await?;
                client.shutdown().await?;
                let mut reply = Vec::new();
                client.read_to_end(&mut reply).await?;
                io::Result::Ok(reply)
            };
            let echo = async {
                let mut got = Vec::new();
                server.read_to_end(&mut got).await?;
                server.write_all(b"got it").await?;
                server.shutdown().await?;
                io::Result::Ok(got)
            };
            tokio::try_join!(writer, echo)
        };
        let (reply, got) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("in time")
            .expect("transfer");
        assert_eq!(got, sent);
        assert_eq!(reply, b"got it");
        let counts = tokio::time::timeout(Duration::from_secs(20), relay)
            .await
            .expect("relay ends")
            .expect("relay task")
            .expect("relay");
        assert_eq!(counts, (3 << 20, 6));
    }
}
