//! [`ReadAhead`]: a connection's reads through a buffer that grows while a stream keeps it
//! full, so that rustls, which reads one TLS record at a time, is served from memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The read buffer a connection starts with: a small request and its answer fit.
pub(crate) const FIRST_READ: usize = 16 * 1024;
/// The most a connection's read buffer grows to, on a stream that keeps it full.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// A reader that fills its own buffer with as much as the inner one has and serves small
/// reads from it. The buffer starts at [`FIRST_READ`] and doubles each time one read fills
/// it, up to [`MAX_READ`], so idle connections stay small. Writes go straight through.
pub(crate) struct ReadAhead<T> {
    inner: T,
    buf: Vec<u8>,
    /// The buffer's size for the next read from `inner`.
    size: usize,
    /// `buf[pos..end]` has been read from `inner` and not yet handed out.
    pos: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    /// Reads `inner` through a buffer of [`FIRST_READ`] to start with.
    pub(crate) fn new(inner: T) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            size: FIRST_READ,
            pos: 0,
            end: 0,
        }
    }

    /// The connection read from.
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl Connection for ReadAhead<TcpStream> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// hyper's read trait (what rustls under hyper reads from), filled from the buffer.
impl<T: AsyncRead + Unpin> hyper::rt::Read for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut out: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.pos == this.end {
            // Empty: the only moment the buffer may change size.
            if this.buf.len() != this.size {
                this.buf.resize(this.size, 0);
            }
            let mut into = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            this.pos = 0;
            this.end = n;
            if n == this.size {
                this.size = (this.size * 2).min(MAX_READ);
            }
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Writes go straight to the socket.
impl<T: AsyncWrite + Unpin> hyper::rt::Write for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(20);

    /// Counts the reads that reach the inner reader.
    struct Counted<T> {
        inner: T,
        reads: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if r.is_ready() {
                this.reads += 1;
            }
            r
        }
    }

    #[tokio::test]
    async fn serves_small_reads_from_few_large_ones_and_grows_only_when_full() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(&sent).await.expect("write");
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        // Read through tokio's traits, as the tests' helpers do; hyper's are what it serves.
        let mut r = TokioIo::new(ReadAhead::new(Counted {
            inner: tcp,
            reads: 0,
        }));
        assert_eq!(r.inner().size, FIRST_READ);
        // Read the way rustls does: at most a TLS record's worth per call.
        let mut got = Vec::new();
        let mut calls = 0;
        let mut chunk = vec![0u8; 16 * 1024 + 2048];
        tokio::time::timeout(WAIT, async {
            loop {
                let n = r.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                calls += 1;
                got.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("in time");
        writer.await.expect("task");
        assert!(got == data, "the bytes came through in order");
        let reads = r.inner().inner.reads;
        assert!(
            reads * 3 < calls,
            "{reads} reads of the socket for {calls} reads of the caller"
        );
        assert_eq!(
            r.inner().size,
            MAX_READ,
            "a stream that keeps it full grows the buffer"
        );
    }

    #[tokio::test]
    async fn writes_go_through_and_a_quiet_connection_keeps_the_first_size() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut b = [0u8; 64];
            loop {
                let n = s.read(&mut b).await.expect("read");
                if n == 0 {
                    break;
                }
                s.write_all(&b[..n]).await.expect("write");
            }
        });
        let mut r = TokioIo::new(ReadAhead::new(
            TcpStream::connect(addr).await.expect("connect"),
        ));
        tokio::time::timeout(WAIT, async {
            for i in 0..100u8 {
                r.write_all(&[i; 10]).await.expect("write");
                let mut b = [0u8; 10];
                r.read_exact(&mut b).await.expect("read");
                assert_eq!(b, [i; 10]);
            }
            r.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.expect("read");
            assert!(rest.is_empty());
        })
        .await
        .expect("in time");
        echo.await.expect("task");
        assert_eq!(
            r.inner().size,
            FIRST_READ,
            "small answers never fill the buffer"
        );
        assert!(r.inner().buf.len() <= FIRST_READ);
    }
}
