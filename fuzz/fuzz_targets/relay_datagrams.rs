//! UDP datagrams over the relay stream (`kforward_relay::datagrams`, used by both the relay
//! pod and kforward-core's UDP forwards): the stream's bytes cut into arbitrary reads through
//! `Deframer` agree with `decode_datagram`; datagrams batched by `Batch` come out whole and in
//! order however the reads cut them.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_fuzz::pieces;
use kforward_relay::datagrams::{Batch, Deframer, PREFIX};
use kforward_relay::protocol::decode_datagram;
use libfuzzer_sys::fuzz_target;

/// Every datagram a deframer hands out when fed `reads` one after the other.
fn deframe(reads: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let mut d = Deframer::new();
    let mut out = Vec::new();
    for (i, r) in reads.iter().enumerate() {
        // Both ways in: the copy, and the buffer read into directly.
        if i % 2 == 0 {
            d.extend(r);
        } else {
            d.read_buffer(r.len()).extend_from_slice(r);
        }
        while let Some(datagram) = d.next_datagram() {
            out.push(datagram.to_vec());
        }
    }
    (out, d.buffered())
}

fuzz_target!(|data: &[u8]| {
    // The stream is the whole input; the cuts between reads are drawn from it too.
    let stream = data;
    let mut u = Unstructured::new(data);
    let Ok(reads) = pieces(&mut u, stream) else {
        return;
    };
    // The deframer and the one-shot decoder read the same stream the same way.
    let (got, left) = deframe(&reads);
    let mut expected = Vec::new();
    let mut at = 0;
    while let Ok(Some((d, used))) = decode_datagram(&stream[at..]) {
        expected.push(d.to_vec());
        at += used;
    }
    assert_eq!(got, expected);
    assert_eq!(left, stream.len() - at);
    assert!(left < PREFIX + 65_536);

    // decode(encode(x)) == x for a batch, whatever the reads.
    let Ok(datagrams) = Vec::<Vec<u8>>::arbitrary(&mut u) else {
        return;
    };
    let mut batch = Batch::new(64);
    for d in &datagrams {
        batch.push(d).expect("datagrams of a fuzz input fit");
    }
    assert_eq!(batch.count(), datagrams.len());
    let wire = batch.as_bytes().to_vec();
    let Ok(reads) = pieces(&mut u, &wire) else {
        return;
    };
    let (back, left) = deframe(&reads);
    assert_eq!((back, left), (datagrams, 0));
});
