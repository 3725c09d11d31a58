//! The testkit's SPDY/3 frame decoder (`kforward_testkit::portforward::spdy::frame`, the API
//! server's side of kubectl's port-forward): any bytes as a stream of frames; every frame it
//! decodes encodes back and decodes to itself; arbitrary frames round-trip.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use kforward_testkit::portforward::spdy::frame::{Frame, decode, encode};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Any {
    Data(u32, bool, Vec<u8>),
    SynStream(u32, u32, bool, Vec<u8>),
    SynReply(u32, bool, Vec<u8>),
    RstStream(u32, u32),
    Settings,
    Ping(u32),
    GoAway(u32, u32),
    Headers(u32, Vec<u8>),
    WindowUpdate(u32, u32),
}

fn frame(a: Any) -> Frame {
    // Stream ids and window deltas are 31 bits on the wire.
    let id = |i: u32| i & 0x7fff_ffff;
    match a {
        Any::Data(s, fin, d) => Frame::Data {
            stream_id: id(s),
            fin,
            data: Bytes::from(d),
        },
        Any::SynStream(s, a, fin, h) => Frame::SynStream {
            stream_id: id(s),
            associated_to: id(a),
            fin,
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
        Any::Settings => Frame::Settings,
        Any::Ping(i) => Frame::Ping { id: i },
        Any::GoAway(s, status) => Frame::GoAway {
            last_good_stream_id: id(s),
            status,
        },
        Any::Headers(s, h) => Frame::Headers {
            stream_id: id(s),
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
    assert_eq!(
        decode(&out),
        Ok(Some((f.clone(), out.len()))),
        "{f:?} as {out:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((f, used))) = decode(rest) {
        assert!(used > 0 && used <= rest.len());
        if !matches!(f, Frame::Unknown { .. }) {
            round_trips(&f);
        }
        rest = &rest[used..];
    }
    let mut u = Unstructured::new(data);
    while let Ok(a) = Any::arbitrary(&mut u) {
        round_trips(&frame(a));
        if u.is_empty() {
            break;
        }
    }
});
