//! Criterion benchmarks of the pure codecs on the data path: SPDY/3 frames and header blocks
//! (the testkit's kubectl transport), and the relay's handshake and UDP framing.
//!
//! `cargo bench -p kforward-benches --bench codecs`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use kforward_relay::protocol::{
    Request, Transport, decode_datagram, decode_request, encode_datagram, encode_request,
};
use kforward_testkit::portforward::spdy::frame::{self, Frame};
use kforward_testkit::portforward::spdy::headers::HeaderCodec;

fn spdy_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("spdy_data_frame");
    for size in [64usize, 4096, 64 * 1024] {
        let f = Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from(vec![7u8; size]),
        };
        let mut wire = BytesMut::new();
        frame::encode(&f, &mut wire);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &f, |b, f| {
            let mut out = BytesMut::with_capacity(size + 16);
            b.iter(|| {
                out.clear();
                frame::encode(black_box(f), &mut out);
            });
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, w| {
            b.iter(|| frame::decode(black_box(w)).expect("valid").expect("whole"));
        });
    }
    g.finish();
}

fn spdy_headers(c: &mut Criterion) {
    // The headers kubectl sends per stream: a port-forward opens two streams per connection.
    let headers = [
        ("streamtype", "data"),
        ("port", "8080"),
        ("requestid", "17"),
    ];
    c.bench_function("spdy_headers/encode+decode", |b| {
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        b.iter(|| {
            let block = tx.encode(black_box(&headers));
            rx.decode(&block).expect("valid")
        });
    });
}

fn relay_protocol(c: &mut Criterion) {
    let req = Request::new(
        "0123456789abcdef",
        Transport::Udp,
        "dns.kube-system.svc.cluster.local",
        53,
    );
    let wire = encode_request(&req).expect("encodes");
    c.bench_function("relay_handshake/encode", |b| {
        b.iter(|| encode_request(black_box(&req)).expect("encodes"));
    });
    c.bench_function("relay_handshake/decode", |b| {
        b.iter(|| {
            decode_request(black_box(&wire))
                .expect("valid")
                .expect("whole")
        });
    });
    let mut g = c.benchmark_group("relay_datagram");
    for size in [64usize, 512, 1400] {
        let d = vec![1u8; size];
        let mut framed = Vec::new();
        encode_datagram(&d, &mut framed).expect("fits");
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &d, |b, d| {
            let mut out = Vec::with_capacity(size + 2);
            b.iter(|| {
                out.clear();
                encode_datagram(black_box(d), &mut out).expect("fits");
            });
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &framed, |b, w| {
            b.iter(|| {
                decode_datagram(black_box(w))
                    .expect("valid")
                    .expect("whole")
            });
        });
    }
    g.finish();
}

/// The group `criterion_main!` runs, in a private module: the macro makes a `pub fn` it
/// cannot document.
mod group {
    use super::{relay_protocol, spdy_frames, spdy_headers};
    criterion::criterion_group!(benches, spdy_frames, spdy_headers, relay_protocol);
}
criterion_main!(group::benches);
