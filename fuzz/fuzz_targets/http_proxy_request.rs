//! The forward proxy's reading of an HTTP request (`kforward_core::fuzzing::ask`, after hyper's
//! parser, httparse, has read the head; then the hop-by-hop headers it strips and the
//! `Proxy-Authorization` it checks): any bytes as a request head.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use kforward_core::forward_proxy::ProxyAuth;
use kforward_core::forward_proxy::socks::Host;
use kforward_core::fuzzing::{Ask, ask, strip_hop_by_hop};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The head as hyper reads it: httparse, then the method, target and headers as `http`
    // types (hyper answers 400 to what does not convert).
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), path.parse::<Uri>()) else {
        return;
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(n, v);
        }
    }

    match ask(&method, &uri) {
        Ask::Proxy => assert!(method != Method::CONNECT && uri.scheme().is_none()),
        Ask::Connect(dest) => {
            assert_eq!(method, Method::CONNECT);
            assert!(!matches!(&dest.host, Host::Name(n) if n.starts_with('[')));
            let _ = dest.to_string();
        }
        Ask::Forward(target) => {
            assert_eq!(uri.scheme_str(), Some("http"));
            assert!(target.origin.scheme().is_none());
            assert!(target.origin.path().starts_with('/'));
            let _ = target.dest.to_string();
        }
        Ask::Refuse(reason) => assert!(!reason.is_empty()),
    }

    let auth = ProxyAuth::new("user", "pass");
    for v in map.get_all(header::PROXY_AUTHORIZATION) {
        if let Ok(text) = v.to_str() {
            let _ = auth.check_basic(text);
        }
    }
    strip_hop_by_hop(&mut map);
    for h in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        assert!(!map.contains_key(h));
    }
});
