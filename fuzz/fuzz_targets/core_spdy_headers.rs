//! kforward-core's SPDY/3 header-block codec (`kforward_core::transport::spdy::headers`: zlib
//! with the SPDY dictionary, one compression context per direction of a session): any bytes as
//! a session's blocks end in headers or an error, never a panic; blocks the encoder writes,
//! the decoder reads back in order, for any headers; the raw (uncompressed) form round-trips.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_core::transport::spdy::headers::{
    HeaderDecoder, HeaderEncoder, encode_raw, parse_raw,
};
use kforward_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(blocks) = pieces(&mut u, data) {
        let mut rx = HeaderDecoder::new();
        for b in blocks {
            if let Err(e) = rx.decode(b) {
                let _ = e.to_string();
                break;
            }
        }
    }
    if let Err(e) = parse_raw(data) {
        let _ = e.to_string();
    }
    let Ok(session) = Vec::<Vec<(String, String)>>::arbitrary(&mut u) else {
        return;
    };
    let (mut tx, mut rx) = (HeaderEncoder::new(), HeaderDecoder::new());
    for headers in session {
        // Names are lower case in SPDY/3 (the decoder hands them out lower case).
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(parse_raw(&encode_raw(&borrowed)), Ok(headers.clone()));
        let block = tx.encode(&borrowed);
        assert_eq!(rx.decode(&block), Ok(headers));
    }
});
