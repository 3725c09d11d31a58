//! SPDY/3 frames, sans I/O: decode from bytes, encode to bytes.
//!
//! Layout (SPDY/3 draft, as `moby/spdystream` `spdy/types.go`, `read.go`, `write.go`
//! implement it): a control frame starts with bit 1 set, the version (3) in 15 bits and
//! the type in 16 bits; a data frame starts with bit 0 clear and the stream id in 31 bits.
//! Then 8 bits of flags and 24 bits of length, then the payload.

use bytes::{BufMut, Bytes, BytesMut};

/// FLAG_FIN on data, SYN_STREAM and SYN_REPLY frames.
pub const FLAG_FIN: u8 = 0x01;
/// The largest payload a frame can carry (24-bit length).
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Data on a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN: the sender's last frame on this stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// A new stream, with its compressed header block.
    SynStream {
        /// The new stream's id (odd when the client opens it).
        stream_id: u32,
        /// The stream it is associated with (0 for none).
        associated_to: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// The stream answered.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// A stream is cancelled.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// The status code.
        status: u32,
    },
    /// Settings (ignored by port-forward peers).
    Settings,
    /// A ping, echoed with the same id.
    Ping {
        /// The ping's id.
        id: u32,
    },
    /// The session is ending.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// The status code.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// Flow control (spdystream implements none; ignored).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// The window increase.
        delta: u32,
    },
    /// A control frame of a type this codec does not know.
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The control frame's version is not 3.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A control frame's payload is shorter than its type needs.
    #[error("control frame of type {kind} is too short ({len} bytes)")]
    TooShort {
        /// The frame type.
        kind: u16,
        /// Its payload length.
        len: usize,
    },
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the frame and the bytes it used.
///
/// # Errors
///
/// [`FrameError`] for a frame that cannot be valid.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let flags = buf[4];
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let p = &buf[8..8 + len];
    let used = 8 + len;
    let fin = flags & FLAG_FIN != 0;
    if buf[0] & 0x80 == 0 {
        let stream_id = u32_at(buf, 0) & 0x7fff_ffff;
        let data = Bytes::copy_from_slice(p);
        return Ok(Some((
            Frame::Data {
                stream_id,
                fin,
                data,
            },
            used,
        )));
    }
    let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
    if version != 3 {
        return Err(FrameError::Version(version));
    }
    let kind = u16::from_be_bytes([buf[2], buf[3]]);
    let need = |n: usize| {
        if len < n {
            Err(FrameError::TooShort { kind, len })
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        1 => {
            need(10)?;
            Frame::SynStream {
                stream_id: u32_at(p, 0) & 0x7fff_ffff,
                associated_to: u32_at(p, 4) & 0x7fff_ffff,
                fin,
                header_block: Bytes::copy_from_slice(&p[10..]),
            }
        }
        2 => {
            need(4)?;
            Frame::SynReply {
                stream_id: u32_at(p, 0) & 0x7fff_ffff,
                fin,
                header_block: Bytes::copy_from_slice(&p[4..]),
            }
        }
        3 => {
            need(8)?;
            Frame::RstStream {
                stream_id: u32_at(p, 0) & 0x7fff_ffff,
                status: u32_at(p, 4),
            }
        }
        4 => Frame::Settings,
        6 => {
            need(4)?;
            Frame::Ping { id: u32_at(p, 0) }
        }
        7 => {
            need(4)?;
            Frame::GoAway {
                last_good_stream_id: u32_at(p, 0) & 0x7fff_ffff,
                status: if len >= 8 { u32_at(p, 4) } else { 0 },
            }
        }
        8 => {
            need(4)?;
            Frame::Headers {
                stream_id: u32_at(p, 0) & 0x7fff_ffff,
                header_block: Bytes::copy_from_slice(&p[4..]),
            }
        }
        9 => {
            need(8)?;
            Frame::WindowUpdate {
                stream_id: u32_at(p, 0) & 0x7fff_ffff,
                delta: u32_at(p, 4) & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { kind: other },
    };
    Ok(Some((frame, used)))
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) {
    out.put_u16(0x8003);
    out.put_u16(kind);
    out.put_u8(flags);
    let len = payload.len().min(MAX_PAYLOAD);
    out.put_uint(len as u64, 3);
    out.put_slice(&payload[..len]);
}

/// Appends the 8 bytes before a DATA frame's payload of `len` bytes to `out`.
pub fn encode_data_header(stream_id: u32, fin: bool, len: usize, out: &mut BytesMut) {
    out.put_u32(stream_id & 0x7fff_ffff);
    out.put_u8(if fin { FLAG_FIN } else { 0 });
    out.put_uint(len.min(MAX_PAYLOAD) as u64, 3);
}

/// Appends the bytes of `frame` to `out`. Data longer than [`MAX_PAYLOAD`] must be split
/// by the caller.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let fin = |f: bool| if f { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data {
            stream_id,
            fin: f,
            data,
        } => {
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u8(fin(*f));
            let len = data.len().min(MAX_PAYLOAD);
            out.put_uint(len as u64, 3);
            out.put_slice(&data[..len]);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            fin: f,
            header_block,
        } => {
            let mut p = BytesMut::with_capacity(10 + header_block.len());
            p.put_u32(*stream_id);
            p.put_u32(*associated_to);
            p.put_u16(0);
            p.put_slice(header_block);
            control(out, 1, fin(*f), &p);
        }
        Frame::SynReply {
            stream_id,
            fin: f,
            header_block,
        } => {
            let mut p = BytesMut::with_capacity(4 + header_block.len());
            p.put_u32(*stream_id);
            p.put_slice(header_block);
            control(out, 2, fin(*f), &p);
        }
        Frame::RstStream { stream_id, status } => {
            let mut p = BytesMut::with_capacity(8);
            p.put_u32(*stream_id);
            p.put_u32(*status);
            control(out, 3, 0, &p);
        }
        Frame::Settings => control(out, 4, 0, &0u32.to_be_bytes()),
        Frame::Ping { id } => control(out, 6, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut p = BytesMut::with_capacity(8);
            p.put_u32(*last_good_stream_id);
            p.put_u32(*status);
            control(out, 7, 0, &p);
        }
        Frame::Headers {
            stream_id,
            header_block,
        } => {
            let mut p = BytesMut::with_capacity(4 + header_block.len());
            p.put_u32(*stream_id);
            p.put_slice(header_block);
            control(out, 8, 0, &p);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            // Both fields are 31 bits; the top bit is reserved (SPDY/3 section 2.6.8).
            let mut p = BytesMut::with_capacity(8);
            p.put_u32(stream_id & 0x7fff_ffff);
            p.put_u32(delta & 0x7fff_ffff);
            control(out, 9, 0, &p);
        }
        Frame::Unknown { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut b = BytesMut::new();
        encode(&f, &mut b);
        let (back, used) = decode(&b).expect("valid").expect("complete");
        assert_eq!(used, b.len());
        assert_eq!(back, f);
        // Every shorter prefix asks for more.
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]).expect("valid prefix"), None);
        }
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"hello"),
        });
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            fin: false,
            header_block: Bytes::from_static(&[1, 2, 3]),
        });
        round_trip(Frame::SynReply {
            stream_id: 1,
            fin: false,
            header_block: Bytes::from_static(&[9]),
        });
        round_trip(Frame::RstStream {
            stream_id: 5,
            status: 5,
        });
        round_trip(Frame::Ping { id: 7 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        });
    }

    #[test]
    fn window_update_never_writes_the_reserved_bits() {
        // Found by the testkit_spdy_frame fuzz target: a delta above 31 bits went out
        // with the reserved bit set and came back as another delta.
        let mut out = BytesMut::new();
        let reserved = |b: &[u8]| (b[8] & 0x80, b[12] & 0x80);
        encode(
            &Frame::WindowUpdate {
                stream_id: 0xffff_ffff,
                delta: 0xeaea_eaea,
            },
            &mut out,
        );
        assert_eq!(reserved(&out), (0, 0), "{out:?}");
        assert_eq!(
            decode(&out),
            Ok(Some((
                Frame::WindowUpdate {
                    stream_id: 0x7fff_ffff,
                    delta: 0x6aea_eaea,
                },
                out.len()
            )))
        );
    }

    #[test]
    fn wire_layout_of_a_ping() {
        let mut b = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut b);
        assert_eq!(
            &b[..],
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]
        );
    }

    #[test]
    fn wrong_version_and_short_frames_are_errors() {
        let bad = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert_eq!(decode(&bad), Err(FrameError::Version(2)));
        let short = [0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0, 0];
        assert!(matches!(
            decode(&short),
            Err(FrameError::TooShort { kind: 3, .. })
        ));
    }
}
