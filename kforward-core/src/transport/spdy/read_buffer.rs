//! The session reader's buffer: frames are read into it and split off it, each large DATA
//! payload in an allocation of its own that goes to its stream without a copy.
//!
//! A frame in progress gets a read of exactly its remaining bytes, into a buffer grown to
//! hold it: a large DATA payload then lands in one allocation and is split off for its
//! stream without a copy, and no read runs into the next frame (whose start would have to
//! be copied into a new buffer). A profile of a bulk download showed a quarter of the
//! client's CPU in those copies and in page faults of large short-lived read buffers
//! before this.
//!
//! Each large frame's allocation goes to its stream with the payload and is freed by
//! whichever thread writes that payload out; the next frame then needed a fresh allocation,
//! which the allocator often served with memory it had just given back to the kernel (a
//! 1 GiB download through `kforward forward` over the WebSocket tunnel: 40,000-70,000 page
//! faults, against 160 on the `v4.channel.k8s.io` path, which frees each message on the
//! thread that allocated it before reading the next). So the buffer keeps a handle on the
//! allocations of its last [`SPARE`] large frames and reads the next frame into the first
//! one whose payload is gone (`BytesMut::try_reclaim`: no copy, no allocation). A payload
//! still pins only its own frame's allocation.

use std::collections::VecDeque;

use bytes::buf::Limit;
use bytes::{BufMut, BytesMut};

use super::frame::{self, Frame, FrameError};

/// The most bytes asked for when no frame is in progress: one TLS record's worth, which
/// holds many small frames, and is all an idle session keeps.
const SMALL_READ: usize = 16 * 1024;
/// How many allocations of earlier large frames are kept for reuse.
const SPARE: usize = 8;

#[derive(Default)]
pub(super) struct ReadBuffer {
    buf: BytesMut,
    /// The size of the last frame larger than a small read: while frames that large come
    /// (a bulk transfer), the buffer for the next header already has room for the whole
    /// frame, so the start read with the header is not copied when the buffer grows.
    large: usize,
    /// Handles on the allocations of earlier large frames (empty; their payloads may still
    /// be waiting for their readers).
    spare: VecDeque<BytesMut>,
}

impl ReadBuffer {
    /// The next whole frame in the buffer, if there is one.
    pub(super) fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(total) = frame::frame_len(&self.buf)
            && self.buf.len() >= total
        {
            self.large = if total > SMALL_READ { total } else { 0 };
        }
        frame::decode(&mut self.buf)
    }

    /// Room for the next read: the rest of the frame in progress, or a small read.
    pub(super) fn room(&mut self) -> Limit<&mut BytesMut> {
        let need = match frame::frame_len(&self.buf) {
            Some(total) if total > self.buf.len() => total - self.buf.len(),
            _ => {
                if self.large > 0 && self.buf.is_empty() && self.buf.capacity() < self.large {
                    self.recycle();
                }
                self.buf.reserve(self.large);
                SMALL_READ
            }
        };
        self.buf.reserve(need);
        (&mut self.buf).limit(need)
    }

    /// Lets go of every allocation when nothing is in progress (an idle session).
    pub(super) fn shrink(&mut self) {
        if self.buf.is_empty() {
            *self = ReadBuffer::default();
        }
    }

    /// Swaps the buffer (empty, its room used up by the last frame) for the allocation of
    /// an earlier frame whose payload is gone, with room for a large frame, and keeps a
    /// handle on the buffer's own allocation; leaves the buffer to allocate when every
    /// spare one is still in use.
    fn recycle(&mut self) {
        let used = std::mem::take(&mut self.buf);
        let large = self.large;
        if let Some(i) = self.spare.iter_mut().position(|b| b.try_reclaim(large))
            && let Some(b) = self.spare.remove(i)
        {
            self.buf = b;
        }
        self.spare.push_back(used);
        if self.spare.len() > SPARE {
            self.spare.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    /// One DATA frame of `len` bytes for stream 1.
    fn data_frame(len: usize) -> Vec<u8> {
        let mut f = frame::data_header(1, false, len).to_vec();
        f.resize(frame::HEADER_LEN + len, 7);
        f
    }

    /// Reads `frame` as the session does: small read first, then the rest.
    fn read(rb: &mut ReadBuffer, frame: &[u8]) -> bytes::Bytes {
        let mut at = 0;
        loop {
            if let Some(Frame::Data { data, .. }) = rb.decode().expect("decode") {
                return data;
            }
            let mut room = rb.room();
            let n = room.remaining_mut().min(frame.len() - at);
            room.put_slice(&frame[at..at + n]);
            at += n;
        }
    }

    #[test]
    fn a_large_frame_is_read_into_an_earlier_one_s_allocation_once_its_payload_is_gone() {
        let frame = data_frame(64 * 1024);
        let mut rb = ReadBuffer::default();
        let first = read(&mut rb, &frame);
        let second = read(&mut rb, &frame);
        assert_eq!(first.len(), 64 * 1024);
        // The first payload is still held: the second frame needed an allocation of its own.
        assert_ne!(first.as_ptr(), second.as_ptr());
        let (first_at, second_at) = (first.as_ptr() as usize, second.as_ptr() as usize);
        drop(first);
        let third = read(&mut rb, &frame);
        assert_eq!(
            third.as_ptr() as usize,
            first_at,
            "the first allocation again"
        );
        drop(second);
        drop(third);
        let fourth = read(&mut rb, &frame);
        assert!([first_at, second_at].contains(&(fourth.as_ptr() as usize)));
        assert_eq!(&fourth[..], &frame[frame::HEADER_LEN..]);
    }

    #[test]
    fn shrink_lets_go_of_every_allocation() {
        let frame = data_frame(64 * 1024);
        let mut rb = ReadBuffer::default();
        drop(read(&mut rb, &frame));
        drop(read(&mut rb, &frame));
        rb.shrink();
        assert_eq!(rb.buf.capacity(), 0);
        assert!(rb.spare.is_empty());
        assert_eq!(rb.large, 0);
    }
}
