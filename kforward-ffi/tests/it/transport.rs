//! The `transport` field of a config through the C ABI: the status names the transport in
//! use, and a client's half-close reaches the pod's side over SPDY.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use kforward_ffi::kf_result::*;

use crate::common::{Runtime, TestCluster, WAIT, WAIT_MS, Watchdog, last_error};

#[test]
fn a_config_picks_the_transport_the_status_names_it_and_half_close_gets_eof() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    for (transport, named) in [
        (None, "websocket-spdy"),
        (Some("spdy"), "spdy"),
        (Some("websocket"), "websocket"),
    ] {
        let mut config: serde_json::Value =
            serde_json::from_str(&tc.config("echo", 7000)).expect("json");
        if let Some(t) = transport {
            config["transport"] = t.into();
        }
        let fwd = rt.start(&config.to_string()).expect("starts");
        assert_eq!(fwd.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
        let status = fwd.status();
        assert_eq!(status["ports"][0]["transport"], named, "{status}");
        if named == "websocket" {
            continue;
        }
        let mut s = TcpStream::connect(fwd.local_addr()).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let data = vec![0x42u8; 256 << 10];
        s.write_all(&data).expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let shut = Instant::now();
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("EOF");
        assert!(back == data, "{named}: {} bytes back", back.len());
        // The runtime's grace (one second), not kforward's 15 s linger.
        let took = shut.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{named}: EOF after {took:?}"
        );
        println!("{named}: EOF {took:?} after the shutdown");
    }
    let bad = tc
        .config("echo", 7000)
        .replacen('{', r#"{"transport":"spdy3","#, 1);
    let Err((code, message)) = rt.start(&bad) else {
        panic!("an unknown transport was taken");
    };
    assert_eq!(code, KF_INVALID_CONFIG, "{message}");
    assert!(
        message.contains("transport") && message.contains("spdy3"),
        "{message}"
    );
}
