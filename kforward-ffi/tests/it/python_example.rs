//! `examples/python/forward.py` drives the shared library through ctypes against the demo
//! cluster.

use std::process::Command;
use std::time::Duration;

use crate::common::{TestCluster, Watchdog, library, run_bounded, workspace_root};

#[test]
fn python_example_forwards_through_ctypes() {
    let limit = Duration::from_secs(120);
    let _w = Watchdog::new(limit * 2);
    let lib = library("libkforward_ffi.so");
    let tc = TestCluster::demo();
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("examples/python/forward.py"))
        .arg(tc.kubeconfig())
        .env("KFORWARD_LIB", &lib);
    let out = run_bounded(cmd, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python example failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("body: web-"), "{stdout}");
    assert!(stdout.contains("final state: stopped"), "{stdout}");
    assert!(stdout.contains(r#""connections_total": 1"#), "{stdout}");
}
