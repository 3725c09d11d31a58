//! Proxy URLs (`kforward_relay::proxy_url::ProxyUrl::parse`: `HTTPS_PROXY` and friends, read by
//! the relay pod and by kforward-core toward the API server): any text; a parsed URL written
//! back with its credentials parses to the same URL.
#![no_main]

use kforward_relay::proxy_url::{ProxyUrl, redact};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact(text);
    match ProxyUrl::parse(text) {
        Ok(url) => {
            let again = ProxyUrl::parse(&url.to_url_with_credentials())
                .expect("a parsed proxy URL written back parses");
            assert_eq!(again, url);
            assert_eq!(again.to_string(), url.to_string());
            let _ = (url.basic_auth(), url.authority());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
