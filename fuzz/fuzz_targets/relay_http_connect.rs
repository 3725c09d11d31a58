//! An HTTP proxy's answer to CONNECT (`kforward_relay::http_connect::parse_answer`, read by
//! the relay pod and by kforward-core toward the API server): any bytes; a complete answer
//! takes no more than it was given, stays the same with more bytes after it, and is 2xx.
#![no_main]

use kforward_relay::http_connect::{MAX_ANSWER, parse_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_answer(data) {
        Ok(Some((answer, used))) => {
            assert!(used <= data.len());
            assert!((200..300).contains(&answer.code));
            let _ = answer.explain(true);
            // The tunnel's first bytes after the head do not change the head.
            let (again, again_used) = parse_answer(&data[..used])
                .expect("the head alone parses")
                .expect("the head alone is complete");
            assert_eq!((again.code, again_used), (answer.code, used));
        }
        Ok(None) => assert!(data.len() < MAX_ANSWER),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
