//! The SOCKS5 and SOCKS4/4a handshakes and SOCKS5 UDP headers the forward proxy reads
//! (`kforward_core::forward_proxy::socks`): any bytes through every parser, each complete
//! message taking no more than it was given, its strict prefixes asking for more; a UDP header
//! the proxy writes parses back to its address and data.
#![no_main]

use std::net::IpAddr;

use arbitrary::{Arbitrary, Unstructured};
use kforward_core::forward_proxy::socks::{
    Address, Host, SocksError, encode_udp, parse_credentials, parse_greeting, parse_request4,
    parse_request5, parse_udp,
};
use kforward_fuzz::prefixes_need_more;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Datagram {
    ip: Option<IpAddr>,
    name: String,
    port: u16,
    data: Vec<u8>,
}

/// Checks one incremental parser on `data`.
fn check<T: std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
) {
    match parse(data) {
        Ok(Some((_, used))) => {
            assert!(used <= data.len());
            assert!(matches!(parse(&data[..used]), Ok(Some((_, u))) if u == used));
            prefixes_need_more(&data[..used], |p| matches!(parse(p), Ok(None)));
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, parse_greeting);
    check(data, parse_credentials);
    check(data, parse_request5);
    check(data, parse_request4);
    if let Ok((header, at)) = parse_udp(data) {
        assert!(at <= data.len());
        let _ = header.address.to_string();
    }
    // decode(encode(x)) == x for the UDP header, with a host the proxy could have parsed.
    let mut u = Unstructured::new(data);
    let Ok(d) = Datagram::arbitrary(&mut u) else {
        return;
    };
    let host = match d.ip {
        Some(ip) => Host::Ip(ip),
        None if !d.name.is_empty()
            && d.name.len() <= 255
            && !d.name.bytes().any(|b| b.is_ascii_control()) =>
        {
            Host::Name(d.name)
        }
        None => return,
    };
    let from = Address { host, port: d.port };
    let wire = encode_udp(&from, &d.data);
    let (header, at) = parse_udp(&wire).expect("the proxy's own UDP header parses");
    assert_eq!(
        (header.frag, header.address, &wire[at..]),
        (0, from, &d.data[..])
    );
});
