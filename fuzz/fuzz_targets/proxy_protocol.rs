//! The PROXY protocol reader (`kforward_core::proxy_protocol::parse`, on connections from a
//! load balancer): any bytes; a header takes no more than it was given and parses the same
//! alone; every header kforward writes parses back to its addresses.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use kforward_core::proxy_protocol::{Addresses, Parsed, Version, encode, parse};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Written {
    v2: bool,
    addresses: Option<(IpAddr, u16, IpAddr, u16)>,
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Header(h)) => {
            assert!(h.len <= data.len());
            assert_eq!(parse(&data[..h.len]), Ok(Parsed::Header(h)));
        }
        Ok(Parsed::Incomplete | Parsed::NotAHeader) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let mut u = Unstructured::new(data);
    let Ok(w) = Written::arbitrary(&mut u) else {
        return;
    };
    let addresses = w.addresses.map(|(s, sp, d, dp)| Addresses {
        source: SocketAddr::new(s, sp),
        destination: SocketAddr::new(d, dp),
    });
    let version = if w.v2 { Version::V2 } else { Version::V1 };
    let wire = encode(version, addresses);
    let Ok(Parsed::Header(h)) = parse(&wire) else {
        panic!("kforward's own {version:?} header for {addresses:?} does not parse");
    };
    assert_eq!(h.len, wire.len());
    // Mixed families are written in one family (v4-mapped v6 addresses as v4, or both
    // as v6): the addresses are the same sockets.
    if let (Some(sent), Some(got)) = (addresses, h.addresses) {
        let same =
            |a: SocketAddr, b: SocketAddr| mapped(a.ip()) == mapped(b.ip()) && a.port() == b.port();
        assert!(
            same(sent.source, got.source),
            "{sent:?} came back as {got:?}"
        );
        assert!(
            same(sent.destination, got.destination),
            "{sent:?} came back as {got:?}"
        );
    } else {
        assert_eq!(addresses.is_some(), h.addresses.is_some());
    }
});

/// An address as IPv6 (v4 ones mapped).
fn mapped(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
