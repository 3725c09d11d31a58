//! The `v4.channel.k8s.io` channel framing kforward-core reads from the API server
//! (`kforward_core::fuzzing::Channels`): any messages; then a port's data, sent as the server
//! sends it (the port prefix, cut anywhere, then data messages), comes out whole.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use kforward_core::fuzzing::{Channels, DATA_CHANNEL, ERROR_CHANNEL, Received};
use kforward_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Sent {
    port: u16,
    /// Where the data channel's 2-byte port prefix is cut (0, 1 or 2 bytes in the first
    /// message).
    cut: u8,
    chunks: Vec<Vec<u8>>,
}

fn message(channel: u8, data: &[u8]) -> Bytes {
    let mut m = vec![channel];
    m.extend_from_slice(data);
    Bytes::from(m)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // Any messages: data is never empty, and before the prefix has come nothing is data.
    if let Ok(messages) = pieces(&mut u, data) {
        let mut c = Channels::new();
        let mut prefix_seen = 0usize;
        for m in messages {
            let got = c.receive(Bytes::copy_from_slice(m));
            if m[0] == DATA_CHANNEL {
                prefix_seen += m.len() - 1;
            }
            match got {
                Received::Data(d) => {
                    assert!(!d.is_empty());
                    assert_eq!(m[0], DATA_CHANNEL);
                    assert!(prefix_seen > 2 && !c.awaiting_prefix());
                }
                Received::Error(_) => assert_eq!(m[0], ERROR_CHANNEL),
                Received::Nothing => {}
            }
        }
    }
    // decode(encode(x)) == x.
    let Ok(sent) = Sent::arbitrary(&mut u) else {
        return;
    };
    let port = sent.port.to_le_bytes();
    let cut = usize::from(sent.cut % 3);
    let mut wire = vec![
        message(DATA_CHANNEL, &port[..cut]),
        message(ERROR_CHANNEL, &port),
        message(DATA_CHANNEL, &port[cut..]),
    ];
    wire.extend(sent.chunks.iter().map(|d| message(DATA_CHANNEL, d)));
    let mut c = Channels::new();
    let mut back = Vec::new();
    for m in wire {
        match c.receive(m) {
            Received::Data(d) => back.extend_from_slice(&d),
            Received::Error(e) => panic!("no error was sent, got {e:?}"),
            Received::Nothing => {}
        }
    }
    assert!(!c.awaiting_prefix());
    assert_eq!(back, sent.chunks.concat());
});
