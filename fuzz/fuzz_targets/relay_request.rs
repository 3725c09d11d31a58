//! The relay's handshake request (`kforward_relay::protocol::decode_request`, the relay pod's
//! side): any bytes, then an arbitrary request through encode and decode.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_fuzz::prefixes_need_more;
use kforward_relay::protocol::{Request, Transport, decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Fields {
    token: String,
    udp: bool,
    host: String,
    port: u16,
    client_addr: String,
}

fuzz_target!(|data: &[u8]| {
    // Bytes from a peer: a complete request is exactly what encoding it gives back (one
    // encoding per request), and every shorter prefix of it asks for more.
    if let Ok(Some((req, used))) = decode_request(data) {
        assert!(used <= data.len());
        let wire = encode_request(&req).expect("a decoded request encodes");
        assert_eq!(wire, &data[..used]);
        prefixes_need_more(&wire, |p| matches!(decode_request(p), Ok(None)));
    }
    // decode(encode(x)) == x.
    let mut u = Unstructured::new(data);
    if let Ok(f) = Fields::arbitrary(&mut u) {
        let transport = if f.udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let req =
            Request::new(&f.token, transport, &f.host, f.port).with_client_addr(&f.client_addr);
        if let Ok(wire) = encode_request(&req) {
            assert_eq!(decode_request(&wire), Ok(Some((req, wire.len()))));
        }
    }
});
