//! Helpers: a demo cluster on its own runtime, safe wrappers over the ABI, bounded waits.

use std::ffi::{CStr, CString, c_char, c_void};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kforward_ffi::{
    kf_forward, kf_forward_free, kf_forward_start, kf_forward_status, kf_last_error_message,
    kf_result, kf_runtime, kf_runtime_free, kf_runtime_new, kf_string_free,
};
use kforward_testkit::Cluster;
use serde_json::Value;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);
/// The same, in milliseconds, for `kf_forward_wait_ready`.
pub const WAIT_MS: u32 = 30_000;

/// A demo cluster served by its own runtime's threads, so that test threads may block.
pub struct TestCluster {
    pub cluster: Cluster,
    _rt: tokio::runtime::Runtime,
}

impl TestCluster {
    pub fn demo() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let cluster = rt
            .block_on(async { tokio::time::timeout(WAIT, Cluster::demo()).await })
            .expect("demo cluster in time")
            .expect("demo cluster starts");
        TestCluster { cluster, _rt: rt }
    }

    pub fn kubeconfig(&self) -> &Path {
        self.cluster.kubeconfig_path()
    }

    /// A config for `svc/NAME` in namespace demo on a free local port.
    pub fn config(&self, service: &str, remote_port: u16) -> String {
        serde_json::json!({
            "service": service,
            "namespace": "demo",
            "local_port": 0,
            "remote_port": remote_port,
            "kubeconfig": self.kubeconfig(),
        })
        .to_string()
    }
}

/// Aborts the test binary if the guarded test has not finished in time, so that a hang
/// fails instead of stalling the run.
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    pub fn new(limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("test {name} did not finish in {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The calling thread's last error message.
pub fn last_error() -> String {
    let mut buf = vec![0u8; 4096];
    let mut len = 0usize;
    // SAFETY: `buf` has buf.len() writable bytes and `len` is a writable usize.
    let r = unsafe { kf_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut len) };
    assert_eq!(r, kf_result::KF_OK);
    String::from_utf8(buf[..len].to_vec()).expect("UTF-8 message")
}

/// A runtime, freed on drop.
pub struct Runtime(pub *mut kf_runtime);

impl Runtime {
    pub fn new(threads: u32) -> Self {
        let mut rt = std::ptr::null_mut();
        // SAFETY: `rt` is a writable pointer.
        let r = unsafe { kf_runtime_new(threads, &mut rt) };
        assert_eq!(r, kf_result::KF_OK, "{}", last_error());
        Runtime(rt)
    }

    /// Starts a forward; the failure's code and message otherwise.
    pub fn start(&self, config: &str) -> Result<Forward, (kf_result, String)> {
        self.start_with(config, None, std::ptr::null_mut())
    }

    pub fn start_with(
        &self,
        config: &str,
        cb: kforward_ffi::kf_event_callback,
        userdata: *mut c_void,
    ) -> Result<Forward, (kf_result, String)> {
        let json = CString::new(config).expect("no NUL");
        let mut fwd = std::ptr::null_mut();
        // SAFETY: the runtime is live, `json` a NUL-terminated string, `fwd` writable;
        // callers keep `userdata` alive and thread-safe until the forward is freed.
        let r = unsafe { kf_forward_start(self.0, json.as_ptr(), cb, userdata, &mut fwd) };
        if r == kf_result::KF_OK {
            Ok(Forward(fwd))
        } else {
            Err((r, last_error()))
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: the runtime came from kf_runtime_new and is freed once.
        unsafe { kf_runtime_free(self.0) };
    }
}

/// A forward, freed on drop.
pub struct Forward(pub *mut kf_forward);

impl Forward {
    pub fn status(&self) -> Value {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: the forward is live and `out` writable.
        let r = unsafe { kf_forward_status(self.0, &mut out) };
        assert_eq!(r, kf_result::KF_OK, "{}", last_error());
        // SAFETY: on KF_OK `out` is a NUL-terminated string from kforward.
        let text = unsafe { CStr::from_ptr(out) }
            .to_str()
            .expect("UTF-8")
            .to_owned();
        // SAFETY: `out` came from kforward and is freed once.
        unsafe { kf_string_free(out) };
        serde_json::from_str(&text).expect("status is JSON")
    }

    pub fn wait_ready(&self, timeout_ms: u32) -> kf_result {
        // SAFETY: the forward is live.
        unsafe { kforward_ffi::kf_forward_wait_ready(self.0, timeout_ms) }
    }

    pub fn stop(&self) -> kf_result {
        // SAFETY: the forward is live.
        unsafe { kforward_ffi::kf_forward_stop(self.0) }
    }

    /// The first local address in the status.
    pub fn local_addr(&self) -> SocketAddr {
        self.status()["local_addrs"][0]
            .as_str()
            .expect("a local address")
            .parse()
            .expect("an address")
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // SAFETY: the forward came from kf_forward_start and is freed once.
        unsafe { kf_forward_free(self.0) };
    }
}

/// Events a callback collected, as JSON values.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<Value>>);

impl Events {
    /// The kinds of the events so far, leaving out the informational ones (`state`, `stats`,
    /// `endpoints`) whose number depends on timing.
    pub fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("events")
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
            .filter(|k| !matches!(k.as_str(), "state" | "stats" | "endpoints"))
            .collect()
    }

    pub fn userdata(&self) -> *mut c_void {
        std::ptr::from_ref(self).cast_mut().cast()
    }
}

/// A callback that appends each event to the `Events` behind `userdata`.
pub unsafe extern "C" fn collect(userdata: *mut c_void, json: *const c_char) {
    // SAFETY: the tests pass an `Events` that outlives the forward; `json` is a valid
    // NUL-terminated string for this call.
    let (events, json) = unsafe { (&*userdata.cast::<Events>(), CStr::from_ptr(json)) };
    let value = serde_json::from_slice(json.to_bytes()).expect("events are JSON");
    events.0.lock().expect("events").push(value);
}

/// One HTTP/1.1 GET with `Connection: close`; returns the body.
pub fn http_get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    // Up to the Content-Length, then closed, as curl does: reading to EOF would wait for
    // the container runtime's one-second grace on SPDY, which passes the pod's close on
    // only then.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let out = String::from_utf8_lossy(&raw).to_string();
    assert!(out.starts_with("HTTP/1.1 200"), "unexpected reply: {out:?}");
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// Polls `check` until it holds, for at most `WAIT`.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the libraries of this build are: `cargo test` writes `libkforward_ffi.so` and
/// `libkforward_ffi.a` next to this test binary (`target/<profile>/deps`); only `cargo
/// build` copies them up to `target/<profile>`.
pub fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("target/<profile>/deps");
    let lib = deps.join(name);
    assert!(
        lib.exists(),
        "{} is missing: cargo test -p kforward-ffi builds it",
        lib.display()
    );
    lib
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command to completion with a time limit; kills it when the limit passes.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // Kill the child we started, by its id.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish in {limit:?}");
        }
    }
}
