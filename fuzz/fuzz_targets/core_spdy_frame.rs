//! kforward-core's SPDY/3 frame decoder (`kforward_core::transport::spdy::frame`, the client
//! side of the API server's port-forward): any bytes, cut into any reads, decode to the same
//! frames as all at once; an error leaves the buffer as it was; every frame it decodes encodes
//! back to itself; arbitrary frames round-trip.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use kforward_core::transport::spdy::frame::{Frame, FrameError, Setting, decode, encode};
use kforward_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Any {
    Data(u32, bool, Vec<u8>),
    SynStream(u32, u32, u8, u8, Vec<u8>),
    SynReply(u32, bool, Vec<u8>),
    RstStream(u32, u32),
    Settings(bool, Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway(u32, u32),
    Headers(u32, bool, Vec<u8>),
    WindowUpdate(u32, u32),
}

/// A frame as the wire can carry it: ids and deltas are 31 bits, priorities 3, setting ids 24.
fn frame(a: Any) -> Frame {
    let id = |i: u32| i & 0x7fff_ffff;
    match a {
        Any::Data(s, fin, d) => Frame::Data {
            stream_id: id(s),
            fin,
            data: Bytes::from(d),
        },
        Any::SynStream(s, a, p, flags, h) => Frame::SynStream {
            stream_id: id(s),
            associated_to: id(a),
            priority: p & 0x07,
            flags,
            header_block: Bytes::from(h),
        },
        Any::SynReply(s, fin, h) => Frame::SynReply {
            stream_id: id(s),
            fin,
            header_block: Bytes::from(h),
        },
        Any::RstStream(s, status) => Frame::RstStream {
            stream_id: id(s),
            status,
        },
        Any::Settings(clear, entries) => Frame::Settings {
            clear,
            entries: entries
                .into_iter()
                .map(|(flags, i, value)| Setting {
                    flags,
                    id: i & 0x00ff_ffff,
                    value,
                })
                .collect(),
        },
        Any::Ping(i) => Frame::Ping { id: i },
        Any::GoAway(s, status) => Frame::GoAway {
            last_good_stream_id: id(s),
            status,
        },
        Any::Headers(s, fin, h) => Frame::Headers {
            stream_id: id(s),
            fin,
            header_block: Bytes::from(h),
        },
        Any::WindowUpdate(s, d) => Frame::WindowUpdate {
            stream_id: id(s),
            delta: id(d),
        },
    }
}

fn round_trips(f: &Frame) {
    let mut out = BytesMut::new();
    encode(f, &mut out);
    let wire = out.clone();
    assert_eq!(decode(&mut out), Ok(Some(f.clone())), "{f:?} as {wire:?}");
    assert!(out.is_empty(), "{f:?}: {} bytes left of {wire:?}", out.len());
}

/// Every frame in `data` taken off a buffer the bytes arrive in through `reads`, up to the
/// first error.
fn frames(reads: &[&[u8]]) -> (Vec<Frame>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        loop {
            let before = buf.clone();
            match decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(buf.len() < before.len(), "{f:?} took no bytes");
                    got.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "an incomplete frame's bytes were taken");
                    break;
                }
                Err(e) => {
                    assert_eq!(buf, before, "{e}: the buffer changed");
                    let _ = e.to_string();
                    return (got, Some(e));
                }
            }
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let whole = frames(&[data]);
    for f in &whole.0 {
        if !matches!(f, Frame::Unknown { .. }) {
            round_trips(f);
        }
    }
    if let Ok(reads) = pieces(&mut u, data) {
        assert_eq!(frames(&reads), whole, "cut into {} reads", reads.len());
    }
    while let Ok(a) = Any::arbitrary(&mut u) {
        round_trips(&frame(a));
        if u.is_empty() {
            break;
        }
    }
});
