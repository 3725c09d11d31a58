//! The testkit's SPDY/3 header-block decoder (`kforward_testkit::portforward::spdy::headers`:
//! zlib with the SPDY dictionary, one stream per session): any bytes as a session's blocks;
//! blocks one codec encodes, another decodes, in order.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_fuzz::pieces;
use kforward_testkit::portforward::spdy::headers::HeaderCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(blocks) = pieces(&mut u, data) {
        let mut codec = HeaderCodec::new();
        for b in blocks {
            if let Err(e) = codec.decode(b) {
                let _ = e.to_string();
                break;
            }
        }
    }
    let Ok(session) = Vec::<Vec<(String, String)>>::arbitrary(&mut u) else {
        return;
    };
    let (mut tx, mut rx) = (HeaderCodec::new(), HeaderCodec::new());
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
        let block = tx.encode(&borrowed);
        assert_eq!(rx.decode(&block), Ok(headers));
    }
});
