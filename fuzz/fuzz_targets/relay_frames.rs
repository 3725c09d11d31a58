//! Framed TCP over the relay stream (`kforward_relay::protocol::Unframer`, read by the relay
//! pod from kforward and by kforward-core's `transport/framed.rs` from the relay): the
//! stream's bytes cut into arbitrary reads, with an arbitrary most-data-at-once, give the
//! same data, end and error as one pass over the whole stream; frames built from arbitrary
//! data come out whole however the reads cut them.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_fuzz::pieces;
use kforward_relay::protocol::{Piece, Unframer, frame_header};
use libfuzzer_sys::fuzz_target;

/// What an unframer makes of `reads`, at most `max` data bytes per piece: the data, whether
/// the end came, and whether the bytes broke the framing.
fn unframe(reads: &[&[u8]], max: usize) -> (Vec<u8>, bool, bool) {
    let mut u = Unframer::default();
    let mut data = Vec::new();
    for r in reads {
        let mut at = 0;
        loop {
            match u.next(&r[at..], max) {
                Ok(Piece::Data { skip, len }) => {
                    assert!(len >= 1 && len <= max.max(1));
                    data.extend_from_slice(&r[at + skip..at + skip + len]);
                    at += skip + len;
                }
                Ok(Piece::End { skip }) => {
                    at += skip;
                    if at == r.len() {
                        break;
                    }
                }
                Ok(Piece::More { skip }) => {
                    assert_eq!(at + skip, r.len(), "More leaves no byte behind");
                    break;
                }
                Err(_) => return (data, u.ended(), true),
            }
        }
    }
    (data, u.ended(), false)
}

fuzz_target!(|data: &[u8]| {
    let stream = data;
    let mut u = Unstructured::new(data);
    let Ok(reads) = pieces(&mut u, stream) else {
        return;
    };
    let Ok(max) = u.int_in_range(1..=70_000usize) else {
        return;
    };
    assert_eq!(unframe(&reads, max), unframe(&[stream], usize::MAX));

    // Frames of arbitrary data, then the end: the data comes back, ended.
    let Ok(frames) = Vec::<Vec<u8>>::arbitrary(&mut u) else {
        return;
    };
    let mut wire = Vec::new();
    for f in frames.iter().filter(|f| !f.is_empty()) {
        wire.extend_from_slice(&frame_header(f.len() as u32));
        wire.extend_from_slice(f);
    }
    wire.extend_from_slice(&frame_header(0));
    let Ok(reads) = pieces(&mut u, &wire) else {
        return;
    };
    assert_eq!(unframe(&reads, max), (frames.concat(), true, false));
});
