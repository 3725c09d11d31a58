//! `examples/c/forward.c` builds with `-Wall -Wextra -Werror` against the header and the
//! static library, and runs against the demo cluster; built with AddressSanitizer against
//! the shared library, it runs clean.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{TestCluster, Watchdog, library, run_bounded, workspace_root};

/// How long compiling and running the example may take.
const LIMIT: Duration = Duration::from_secs(120);

/// The C compiler: `$CC`, else `cc`.
fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Compiles the example with the warnings that must not appear, plus `extra`.
fn build(out: &Path, extra: &[&str], link: &[String]) {
    let root = workspace_root();
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(extra)
        .arg("-I")
        .arg(root.join("kforward-ffi/include"))
        .arg(root.join("examples/c/forward.c"))
        .args(link)
        .arg("-o")
        .arg(out);
    let built = run_bounded(cmd, LIMIT);
    assert!(
        built.status.success(),
        "cc failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Runs the example against a fresh demo cluster; returns its stdout.
fn run_example(exe: &Path, env: &[(&str, &str)]) -> (String, String) {
    let tc = TestCluster::demo();
    let mut cmd = Command::new(exe);
    cmd.arg(tc.kubeconfig()).args(["web", "demo", "80"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(cmd, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the C example failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("body: web-"), "{stdout}");
    assert!(stdout.contains(r#""state":"ready""#), "{stdout}");
    assert!(stdout.contains(r#""connections_total":1"#), "{stdout}");
    (stdout, stderr)
}

#[test]
fn c_example_builds_warning_free_and_forwards() {
    let _w = Watchdog::new(LIMIT * 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("forward");
    let link = [
        library("libkforward_ffi.a").display().to_string(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ];
    build(&exe, &[], &link);
    let (stdout, stderr) = run_example(&exe, &[]);
    assert!(stderr.contains(r#"event: {"event":"ready""#), "{stderr}");
    assert!(stderr.contains(r#"event: {"event":"stopped""#), "{stderr}");
    assert!(stdout.contains(&format!("kforward {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn c_example_is_clean_under_address_sanitizer() {
    let _w = Watchdog::new(LIMIT * 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("forward-asan");
    // The shared library: ASan's runtime must come first, which a static Rust archive
    // cannot promise.
    let so = library("libkforward_ffi.so");
    let lib_dir = so.parent().expect("its directory");
    let link = [
        format!("-L{}", lib_dir.display()),
        "-lkforward_ffi".into(),
        format!("-Wl,-rpath,{}", lib_dir.display()),
    ];
    build(
        &exe,
        &["-fsanitize=address", "-fno-omit-frame-pointer"],
        &link,
    );
    // Leak checking is on; any report makes the exit code nonzero.
    let (_, stderr) = run_example(
        &exe,
        &[(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=23",
        )],
    );
    assert!(!stderr.contains("Sanitizer"), "{stderr}");
}
