//! The relay's handshake answer (`kforward_relay::protocol::decode_response`, what
//! kforward-core's relay client reads): any bytes, then an arbitrary answer through encode
//! and decode.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_fuzz::prefixes_need_more;
use kforward_relay::protocol::{Response, Status, decode_response, encode_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((resp, used))) = decode_response(data) {
        assert!(used <= data.len());
        let wire = encode_response(&resp);
        assert_eq!(wire, &data[..used]);
        prefixes_need_more(&wire, |p| matches!(decode_response(p), Ok(None)));
    }
    let mut u = Unstructured::new(data);
    if let (Ok(status), Ok(message)) = (u8::arbitrary(&mut u), String::arbitrary(&mut u)) {
        let Ok(status) = Status::from_byte(status) else {
            return;
        };
        let resp = Response::new(status, message);
        let wire = encode_response(&resp);
        assert_eq!(decode_response(&wire), Ok(Some((resp, wire.len()))));
    }
});
