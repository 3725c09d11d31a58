//! UDP datagrams over the relay's stream, sans I/O: [`Deframer`] takes the bytes reads
//! return, in whatever pieces, and hands back whole datagrams; [`Batch`] frames datagrams
//! back to back into one buffer, so that every datagram already waiting goes out in one
//! write. [`IdleClock`] is the session's idle timer both directions share (the relay's and
//! the client's).
//!
//! The framing is [`crate::protocol::encode_datagram`]'s (a u16 big-endian length, then
//! the datagram; `docs/relay-protocol.md`): a batch is only several frames in a row, which
//! every reader of that framing already takes, so batching needs no agreement between the
//! two sides.
//!
//! # Example
//!
//! ```
//! use kforward_relay::datagrams::{Batch, Deframer};
//!
//! let mut batch = Batch::new(1024);
//! batch.push(b"one")?;
//! batch.push(b"two")?;
//! let wire = batch.as_bytes().to_vec();
//!
//! let mut deframer = Deframer::new();
//! deframer.extend(&wire[..4]);
//! assert_eq!(deframer.next_datagram(), None);
//! deframer.extend(&wire[4..]);
//! assert_eq!(deframer.next_datagram(), Some(&b"one"[..]));
//! assert_eq!(deframer.next_datagram(), Some(&b"two"[..]));
//! assert_eq!(deframer.next_datagram(), None);
//! # Ok::<(), kforward_relay::protocol::ProtocolError>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{MAX_DATAGRAM, ProtocolError, encode_datagram};

/// The length prefix in front of each datagram.
pub const PREFIX: usize = 2;

/// Splits a byte stream into datagrams. Every length is valid, so no input is an error: a
/// fuzzer may feed it anything. It holds at most one incomplete frame beyond what the last
/// [`extend`](Self::extend) or [`read_buffer`](Self::read_buffer) added (a frame is at most
/// `PREFIX + MAX_DATAGRAM` bytes).
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: bytes before it were handed out.
    start: usize,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the unread bytes to the front, so that the buffer does not grow with the
    /// bytes already handed out.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Adds received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (with `read_buf`, which appends to it), with room
    /// for at least `room` more bytes: saves the copy [`extend`](Self::extend) makes.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_relay::datagrams::Deframer;
    /// let mut d = Deframer::new();
    /// d.read_buffer(64).extend_from_slice(&[0, 1, 7]);
    /// assert_eq!(d.next_datagram(), Some(&[7u8][..]));
    /// ```
    pub fn read_buffer(&mut self, room: usize) -> &mut Vec<u8> {
        self.compact();
        self.buf.reserve(room);
        &mut self.buf
    }

    /// The next whole datagram, or `None` until more bytes arrive.
    pub fn next_datagram(&mut self) -> Option<&[u8]> {
        let (datagram, _) = split_frame(self.buf.get(self.start..)?)?;
        self.start += PREFIX + datagram.len();
        Some(datagram)
    }

    /// Every whole datagram received so far, at once and in order (for one `sendmmsg`):
    /// what [`next_datagram`](Self::next_datagram) would return call after call.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_relay::datagrams::Deframer;
    /// let mut d = Deframer::new();
    /// d.extend(&[0, 1, 7, 0, 2, 8, 9, 0]);
    /// assert_eq!(d.next_datagrams(), [&[7u8][..], &[8, 9][..]]);
    /// assert_eq!(d.buffered(), 1);
    /// ```
    pub fn next_datagrams(&mut self) -> Vec<&[u8]> {
        let Deframer { buf, start } = self;
        let mut rest = buf.get(*start..).unwrap_or_default();
        let mut out = Vec::new();
        while let Some((datagram, after)) = split_frame(rest) {
            out.push(datagram);
            *start += PREFIX + datagram.len();
            rest = after;
        }
        out
    }

    /// Bytes received and not yet handed out as a datagram.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The datagram of the frame `bytes` start with and the bytes after that frame, or `None`
/// while the frame is incomplete.
fn split_frame(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let head: [u8; PREFIX] = bytes.get(..PREFIX)?.try_into().ok()?;
    let end = PREFIX + usize::from(u16::from_be_bytes(head));
    Some((bytes.get(PREFIX..end)?, bytes.get(end..)?))
}

/// Datagrams framed back to back for one write.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    count: usize,
    /// Datagram bytes (without the prefixes).
    payload: usize,
}

impl Batch {
    /// An empty batch with room for `capacity` bytes of frames (it grows past that when
    /// pushed more).
    pub fn new(capacity: usize) -> Self {
        Batch {
            buf: Vec::with_capacity(capacity),
            count: 0,
            payload: 0,
        }
    }

    /// Appends one datagram.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::TooLong`] for a datagram above [`MAX_DATAGRAM`] bytes (the batch
    /// is left as it was).
    pub fn push(&mut self, datagram: &[u8]) -> Result<(), ProtocolError> {
        encode_datagram(datagram, &mut self.buf)?;
        self.count += 1;
        self.payload += datagram.len();
        Ok(())
    }

    /// Appends one datagram that `recv` writes straight into the batch (no copy): `recv`
    /// gets a buffer of room for [`MAX_DATAGRAM`] bytes appended to and returns what it
    /// did. A datagram `recv` made longer than [`MAX_DATAGRAM`] (it cannot be framed) is
    /// taken back out and an `InvalidData` error returned, as is `recv`'s own error.
    ///
    /// # Errors
    ///
    /// `recv`'s error (the batch is left as it was).
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_relay::datagrams::Batch;
    /// let mut b = Batch::new(64);
    /// b.push_with(|buf| { buf.extend_from_slice(b"hi"); Ok(()) })?;
    /// assert_eq!(b.as_bytes(), [0, 2, b'h', b'i']);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn push_with<F>(&mut self, recv: F) -> std::io::Result<()>
    where
        F: FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; PREFIX]);
        self.buf.reserve(MAX_DATAGRAM);
        let result = recv(&mut self.buf);
        let len = self.buf.len() - at - PREFIX;
        let result = result.and_then(|()| {
            u16::try_from(len).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    ProtocolError::TooLong {
                        field: "datagram",
                        len,
                        max: MAX_DATAGRAM,
                    },
                )
            })
        });
        match result {
            Ok(len16) => {
                self.buf[at..at + PREFIX].copy_from_slice(&len16.to_be_bytes());
                self.count += 1;
                self.payload += len;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(at);
                Err(e)
            }
        }
    }

    /// The frames, for one write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of frames so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// No datagram yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagrams in the batch.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Datagram bytes in the batch, without the length prefixes.
    pub fn payload(&self) -> usize {
        self.payload
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.payload = 0;
    }
}

/// When a datagram last went either way in a session: each direction [`touch`]es it (no
/// lock, so two tasks or two branches of one `select!` may), and [`idle`] waits until it
/// has not been touched for a while.
///
/// [`touch`]: IdleClock::touch
/// [`idle`]: IdleClock::idle
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kforward_relay::datagrams::IdleClock;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let clock = IdleClock::new();
/// clock.touch();
/// clock.idle(Duration::from_millis(10)).await;
/// # });
/// ```
#[derive(Debug)]
pub struct IdleClock {
    start: Instant,
    /// Milliseconds from `start` to the last touch.
    last_ms: AtomicU64,
}

impl Default for IdleClock {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleClock {
    /// A clock touched now.
    pub fn new() -> Self {
        IdleClock {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Something went through now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has gone through for `idle` (within a millisecond).
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the tests need no dependency and
    /// every run checks the same cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn datagrams(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let len = match i % 5 {
                    0 => 0,
                    1 => MAX_DATAGRAM,
                    _ => rng.below(2000),
                };
                (0..len).map(|j| (i + j) as u8).collect()
            })
            .collect()
    }

    #[test]
    fn batches_round_trip_through_reads_of_any_size() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20 {
            let sent = datagrams(&mut rng, 50);
            let mut batch = Batch::new(0);
            for d in &sent {
                batch.push(d).expect("fits");
            }
            assert_eq!(batch.count(), sent.len());
            assert_eq!(batch.payload(), sent.iter().map(Vec::len).sum::<usize>());
            let wire = batch.as_bytes();
            let mut deframer = Deframer::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                // Pieces of 1 byte up to a whole 128 KiB read, as a stream splits them.
                let n = (1 + rng.below(if round % 2 == 0 { 7 } else { 128 * 1024 }))
                    .min(wire.len() - at);
                if rng.below(2) == 0 {
                    deframer.extend(&wire[at..at + n]);
                } else {
                    deframer.read_buffer(n).extend_from_slice(&wire[at..at + n]);
                }
                at += n;
                if rng.below(2) == 0 {
                    while let Some(d) = deframer.next_datagram() {
                        got.push(d.to_vec());
                    }
                } else {
                    got.extend(deframer.next_datagrams().into_iter().map(<[u8]>::to_vec));
                }
                assert!(deframer.buffered() < PREFIX + MAX_DATAGRAM);
            }
            assert_eq!(got, sent, "round {round}");
            assert_eq!(deframer.buffered(), 0);
        }
    }

    #[test]
    fn any_bytes_are_taken_without_panic() {
        let mut rng = Rng(42);
        for _ in 0..200 {
            let len = rng.below(300);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut d = Deframer::new();
            d.extend(&junk);
            let mut taken = 0;
            while let Some(dg) = d.next_datagram() {
                taken += PREFIX + dg.len();
            }
            assert_eq!(taken + d.buffered(), junk.len());
        }
    }

    #[test]
    fn push_with_frames_what_recv_wrote_and_undoes_failures() {
        let mut b = Batch::new(16);
        b.push(b"a").expect("fits");
        b.push_with(|buf| {
            buf.extend_from_slice(b"bc");
            Ok(())
        })
        .expect("recv");
        let before = b.as_bytes().to_vec();
        let err = b.push_with(|buf| {
            buf.push(9);
            Err(std::io::ErrorKind::WouldBlock.into())
        });
        assert_eq!(
            err.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
        let too_long = b.push_with(|buf| {
            buf.resize(buf.len() + MAX_DATAGRAM + 1, 0);
            Ok(())
        });
        assert_eq!(
            too_long.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidData)
        );
        assert_eq!(b.as_bytes(), before);
        assert_eq!((b.count(), b.payload()), (2, 3));
        let mut d = Deframer::new();
        d.extend(b.as_bytes());
        assert_eq!(d.next_datagram(), Some(&b"a"[..]));
        assert_eq!(d.next_datagram(), Some(&b"bc"[..]));
        b.clear();
        assert!(b.is_empty() && b.as_bytes().is_empty());
        assert!(b.push(&vec![0; MAX_DATAGRAM + 1]).is_err());
        assert!(b.is_empty());
    }
}
