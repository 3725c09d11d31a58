//! The testkit's DNS codec (`kforward_testkit::network`: the cluster DNS server reads queries,
//! its resolver client reads answers): any bytes as a query and as a response; a query the
//! client encodes parses back; the server's answer to it parses back to its addresses.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Unstructured};
use kforward_testkit::network::{
    CLASS_IN, Rcode, encode_error, encode_query, encode_response, parse_query, parse_response,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Exchange {
    id: u16,
    name: String,
    qtype: u16,
    addresses: Vec<[u8; 4]>,
    max_len: u16,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = parse_query(data) {
        // The server answers whatever query it could parse.
        let answer = encode_response(&q, Rcode::NoError, &[Ipv4Addr::LOCALHOST], 512)
            .expect("a parsed query's name encodes");
        let r = parse_response(&answer).expect("the server's answer parses");
        assert_eq!(r.id, q.id);
    }
    if let Some(e) = encode_error(data, Rcode::FormErr) {
        assert_eq!(e[..2], data[..2]);
    }
    if let Ok(r) = parse_response(data) {
        assert!(r.rcode <= 15);
    }

    let mut u = Unstructured::new(data);
    let Ok(x) = Exchange::arbitrary(&mut u) else {
        return;
    };
    let Ok(wire) = encode_query(x.id, &x.name, x.qtype) else {
        return;
    };
    let q = parse_query(&wire).expect("an encoded query parses");
    assert_eq!(
        (q.id, q.qtype, q.qclass, q.recursion_desired),
        (x.id, x.qtype, CLASS_IN, true)
    );
    assert_eq!(q.name, x.name.strip_suffix('.').unwrap_or(&x.name));
    let addresses: Vec<Ipv4Addr> = x.addresses.iter().map(|a| Ipv4Addr::from(*a)).collect();
    let answer = encode_response(&q, Rcode::NoError, &addresses, usize::from(x.max_len))
        .expect("a parsed query's name encodes");
    let r = parse_response(&answer).expect("the server's answer parses");
    assert_eq!((r.id, r.rcode), (x.id, 0));
    assert_eq!(r.name.as_deref(), Some(q.name.as_str()));
    assert!(r.truncated == (r.addresses.len() < addresses.len()));
    assert_eq!(r.addresses, addresses[..r.addresses.len()]);
});
