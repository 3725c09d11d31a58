//! The soak (`kforward_benches::soak`) for a minute: a real `kforward run` of 20 forwards
//! under every fault of the chaos loop, with 40 checksummed streams (the full run,
//! `target/release/soak --minutes 10`, has 200; fewer here keep CI's two cores free).

use std::time::Duration;

use kforward_benches::soak::{SoakOptions, run};

#[tokio::test(flavor = "multi_thread")]
async fn a_minute_of_faults_corrupts_nothing_ends_only_cut_streams_and_leaves_no_relay_pod() {
    let o = SoakOptions {
        duration: Duration::from_secs(60),
        conns: 40,
        kforward: env!("CARGO_BIN_EXE_kforward").into(),
        seed: 17,
        report_every: Duration::from_secs(10),
        keep_log: false,
    };
    // The minute, the drain (at most a stall's 45 s and 30 s more), kforward's exit and
    // the relay pods' deletion (30 s each), setup.
    let report = tokio::time::timeout(Duration::from_secs(400), run(&o))
        .await
        .expect("the soak finishes in time")
        .expect("the soak runs");
    let json = &report.json;
    eprintln!("{json}");
    assert!(report.bytes_moved > 0, "{json}");
    assert!(report.verdict.completed > 0, "{json}");
    assert!(json["external_greetings"].as_u64() > Some(0), "{json}");
    assert_eq!(report.corrupted_bytes, 0, "{json}");
    assert_eq!(report.verdict.unexpected_ends, 0, "{json}");
    assert_eq!(report.verdict.refused, 0, "{json}");
    assert_eq!(report.relay_pods_left, 0, "{json}");
    for fault in [
        "pod killed",
        "streams dropped",
        "api restarted",
        "api paused",
        "token expired",
    ] {
        assert!(json["faults"][fault].as_u64() >= Some(1), "{fault}: {json}");
    }
}
