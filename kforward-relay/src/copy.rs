//! The TCP relay's two-way copy, with a buffer per direction that starts small and grows.
//!
//! tokio's `copy_bidirectional` keeps one fixed buffer per direction: 64 KiB each for every
//! connection made the relay trail haproxy over one bulk connection, while 256 KiB each
//! made every idle connection cost half a MiB. Here a direction starts at 8 KiB and doubles
//! each time a read fills its buffer, up to 256 KiB: a bulk transfer reaches big reads after
//! a few reads, and a quiet connection stays small.
//!
//! A framed TCP stream ([`crate::protocol::Transport::TcpFramed`]) is copied the same way,
//! with the destination's bytes in frames toward the client and the client's taken out of
//! theirs: the end of each side's writes crosses as an empty frame.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::{FRAME_HEADER_LEN, Piece, Unframer, frame_header};

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

/// Copies a framed TCP stream `client` (whose first bytes, read with the handshake, are
/// `leftover`) and the destination `upstream` both ways until both have ended their writes:
/// the client's end frame shuts `upstream`'s writes down, and `upstream`'s EOF goes to the
/// client as an end frame. A client stream that ends before its end frame (the client or
/// its port-forward went away), bad framing or an error either way ends both. Returns the
/// destination's bytes copied each way (to it, from it).
pub(crate) async fn framed_both_ways(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    leftover: Vec<u8>,
) -> io::Result<(u64, u64)> {
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    tokio::try_join!(unframe(cr, uw, leftover), frame(ur, cw))
}

/// The client's frames to the destination, until the end frame.
async fn unframe<R, W>(mut from: R, mut to: W, leftover: Vec<u8>) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut unframer = Unframer::default();
    let mut buf = leftover;
    buf.reserve(FIRST.saturating_sub(buf.len()));
    let mut total = 0u64;
    loop {
        let mut at = 0;
        loop {
            let piece = unframer
                .next(&buf[at..], usize::MAX)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match piece {
                Piece::Data { skip, len } => {
                    at += skip;
                    to.write_all(&buf[at..at + len]).await?;
                    at += len;
                    total += len as u64;
                }
                Piece::End { .. } => {
                    // The destination may be gone already; its reads say so.
                    let _ = to.shutdown().await;
                    return Ok(total);
                }
                Piece::More { .. } => break,
            }
        }
        let full = buf.len() == buf.capacity();
        buf.clear();
        if full && buf.capacity() < MAX {
            buf.reserve_exact((2 * buf.capacity()).min(MAX));
        }
        if from.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client's stream ended before the end of its data",
            ));
        }
    }
}

/// The destination's bytes to the client in frames, then the end frame at its EOF. Each
/// read lands behind room for its frame's header, so a frame is one write, not a copy.
async fn frame<R, W>(mut from: R, mut to: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(FRAME_HEADER_LEN + FIRST);
    let mut total = 0u64;
    loop {
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            to.write_all(&frame_header(0)).await?;
            return Ok(total);
        }
        // A read is at most MAX bytes, far below u32::MAX.
        buf[..FRAME_HEADER_LEN].copy_from_slice(&frame_header(n as u32));
        to.write_all(&buf).await?;
        total += n as u64;
        if buf.len() == buf.capacity() && n < MAX {
            buf.reserve_exact((2 * n).min(MAX) + FRAME_HEADER_LEN - buf.len());
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

    /// The destination's side: everything until EOF, then `got it` and its own EOF.
    async fn take_all_then_answer(mut server: TcpStream) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        server.read_to_end(&mut got).await?;
        server.write_all(b"got it").await?;
        server.shutdown().await?;
        Ok(got)
    }

    /// `f`'s output, waited for at most 20 s.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap_or_else(|_| panic!("{what} in time"))
    }

    /// Over real loopback sockets: 3 MiB one way (enough for the buffer to grow to its
    /// largest), a reply the other way after the half-close, and both counts.
    #[tokio::test]
    async fn copies_both_ways_and_passes_the_half_close_on() {
        let (mut client, mut relay_a) = pair().await;
        let (mut relay_b, server) = pair().await;
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
            tokio::try_join!(writer, take_all_then_answer(server))
        };
        let (reply, got) = within("the transfer", run).await.expect("transfer");
        assert_eq!(got, sent);
        assert_eq!(reply, b"got it");
        let counts = within("the relay's end", relay)
            .await
            .expect("relay task")
            .expect("relay");
        assert_eq!(counts, (3 << 20, 6));
    }

    /// The framed copy over real loopback sockets: 3 MiB in frames of every size (the
    /// first frame's start arriving with the handshake), the client's end frame reaching
    /// the destination as EOF, its reply after that coming back in frames and its EOF as
    /// the end frame, while the client has not closed anything.
    #[tokio::test]
    async fn framed_copy_passes_each_sides_end_as_a_frame() {
        let (mut client, mut relay_a) = pair().await;
        let (mut relay_b, server) = pair().await;
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        let mut rest = &data[..];
        let mut size = 1;
        while !rest.is_empty() {
            let (f, r) = rest.split_at(size.min(rest.len()));
            wire.extend_from_slice(&frame_header(f.len() as u32));
            wire.extend_from_slice(f);
            rest = r;
            size = size * 3 + 1;
        }
        wire.extend_from_slice(&frame_header(0));
        let leftover = wire[..3].to_vec();
        let relay =
            tokio::spawn(
                async move { framed_both_ways(&mut relay_a, &mut relay_b, leftover).await },
            );
        let run = async move {
            let writer = async {
                client.write_all(&wire[3..]).await?;
                // No shutdown: the end frame alone ends the destination's input.
                let mut back = Vec::new();
                let mut u = Unframer::default();
                let mut buf = vec![0u8; 4096];
                while !u.ended() {
                    let n = client.read(&mut buf).await?;
                    assert!(n > 0, "the relay closed before its end frame");
                    let mut at = 0;
                    while let Piece::Data { skip, len } =
                        u.next(&buf[at..n], usize::MAX).expect("valid frames")
                    {
                        back.extend_from_slice(&buf[at + skip..at + skip + len]);
                        at += skip + len;
                    }
                }
                io::Result::Ok(back)
            };
            tokio::try_join!(writer, take_all_then_answer(server))
        };
        let (reply, got) = within("the transfer", run).await.expect("transfer");
        assert_eq!(got, data);
        assert_eq!(reply, b"got it");
        let counts = within("the relay's end", relay)
            .await
            .expect("relay task")
            .expect("relay");
        assert_eq!(counts, (3 << 20, 6));
    }
}
