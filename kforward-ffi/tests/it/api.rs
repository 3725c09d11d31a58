//! The C ABI called from Rust: the happy path against the demo cluster, and every kind of
//! bad input.

use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kforward_ffi::kf_result::*;
use kforward_ffi::{
    kf_forward, kf_forward_free, kf_forward_start, kf_forward_status, kf_forward_stop,
    kf_forward_wait_ready, kf_last_error_message, kf_result, kf_result_name, kf_runtime,
    kf_runtime_free, kf_runtime_new, kf_string_free, kf_version,
};

use crate::common::{
    Events, Runtime, TestCluster, WAIT, WAIT_MS, Watchdog, collect, eventually, http_get,
    last_error,
};

#[test]
fn version_is_the_crate_version() {
    // SAFETY: kf_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(kf_version()) };
    assert_eq!(v.to_str(), Ok(env!("CARGO_PKG_VERSION")));
}

#[test]
fn result_numbers_never_change() {
    let pinned = [
        (KF_OK, 0, "KF_OK"),
        (KF_NULL_ARGUMENT, 1, "KF_NULL_ARGUMENT"),
        (KF_INVALID_UTF8, 2, "KF_INVALID_UTF8"),
        (KF_INVALID_JSON, 3, "KF_INVALID_JSON"),
        (KF_INVALID_CONFIG, 4, "KF_INVALID_CONFIG"),
        (KF_INVALID_ARGUMENT, 5, "KF_INVALID_ARGUMENT"),
        (KF_BUFFER_TOO_SMALL, 6, "KF_BUFFER_TOO_SMALL"),
        (KF_UNSUPPORTED, 7, "KF_UNSUPPORTED"),
        (KF_ALREADY_STOPPED, 8, "KF_ALREADY_STOPPED"),
        (KF_TIMEOUT, 9, "KF_TIMEOUT"),
        (KF_WRONG_THREAD, 10, "KF_WRONG_THREAD"),
        (KF_KUBECONFIG, 20, "KF_KUBECONFIG"),
        (KF_UNKNOWN_CONTEXT, 21, "KF_UNKNOWN_CONTEXT"),
        (KF_BIND_FAILED, 22, "KF_BIND_FAILED"),
        (KF_NOT_FOUND, 23, "KF_NOT_FOUND"),
        (KF_NO_READY_POD, 24, "KF_NO_READY_POD"),
        (KF_FORBIDDEN, 25, "KF_FORBIDDEN"),
        (KF_UNAUTHORIZED, 26, "KF_UNAUTHORIZED"),
        (KF_UNREACHABLE, 27, "KF_UNREACHABLE"),
        (KF_API, 28, "KF_API"),
        (KF_TUNNEL, 29, "KF_TUNNEL"),
        (KF_RELAY, 30, "KF_RELAY"),
        (KF_PANIC, 90, "KF_PANIC"),
        (KF_INTERNAL, 99, "KF_INTERNAL"),
    ];
    for (code, number, name) in pinned {
        assert_eq!(code as i32, number, "{name}");
        // SAFETY: kf_result_name returns a static NUL-terminated string for any number.
        let got = unsafe { CStr::from_ptr(kf_result_name(number)) };
        assert_eq!(got.to_str(), Ok(name));
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(kf_result_name(-1)) };
    assert_eq!(unknown.to_str(), Ok("KF_UNKNOWN"));
}

#[test]
fn null_arguments_are_refused_and_free_null_is_fine() {
    let rt = Runtime::new(1);
    let json = c"{}";
    let mut fwd: *mut kf_forward = std::ptr::null_mut();
    let mut text: *mut c_char = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: every pointer is NULL or valid; NULLs are what is being tested.
    unsafe {
        assert_eq!(kf_runtime_new(1, std::ptr::null_mut()), KF_NULL_ARGUMENT);
        assert!(last_error().contains("out is NULL"), "{}", last_error());
        let nowhere: *const kf_runtime = std::ptr::null();
        let start = |rt, json, out| kf_forward_start(rt, json, None, std::ptr::null_mut(), out);
        assert_eq!(start(nowhere, json.as_ptr(), &mut fwd), KF_NULL_ARGUMENT);
        assert!(last_error().contains("rt is NULL"));
        assert_eq!(start(rt.0, std::ptr::null(), &mut fwd), KF_NULL_ARGUMENT);
        assert!(last_error().contains("config_json is NULL"));
        assert_eq!(
            start(rt.0, json.as_ptr(), std::ptr::null_mut()),
            KF_NULL_ARGUMENT
        );
        assert!(fwd.is_null());
        assert_eq!(
            kf_forward_status(std::ptr::null(), &mut text),
            KF_NULL_ARGUMENT
        );
        assert!(text.is_null());
        assert_eq!(kf_forward_wait_ready(std::ptr::null(), 0), KF_NULL_ARGUMENT);
        assert_eq!(kf_forward_stop(std::ptr::null()), KF_NULL_ARGUMENT);
        assert_eq!(
            kf_last_error_message(std::ptr::null_mut(), 10, &mut len),
            KF_NULL_ARGUMENT
        );
        assert_eq!(
            kf_last_error_message(std::ptr::null_mut(), 0, std::ptr::null_mut()),
            KF_NULL_ARGUMENT
        );
        kf_forward_free(std::ptr::null_mut());
        kf_runtime_free(std::ptr::null_mut());
        kf_string_free(std::ptr::null_mut());
    }
}

#[test]
fn bad_configs_get_their_own_codes_and_leave_out_alone() {
    let rt = Runtime::new(1);
    let cases: [(&[u8], kf_result, &str); 8] = [
        (
            b"{\"service\":\"w\xffb\"}\0",
            KF_INVALID_UTF8,
            "not valid UTF-8",
        ),
        (b"{\"service\":\0", KF_INVALID_JSON, "not JSON"),
        (b"not json at all\0", KF_INVALID_JSON, "not JSON"),
        (b"[1, 2]\0", KF_INVALID_CONFIG, "not a valid forward config"),
        (
            b"{\"service\":\"web\",\"remote_port\":\"http\"}\0",
            KF_INVALID_CONFIG,
            "remote_port",
        ),
        (
            b"{\"service\":\"Web!\",\"remote_port\":0}\0",
            KF_INVALID_CONFIG,
            "remote_port",
        ),
        (
            b"{\"protocol\":\"sctp\",\"service\":\"web\",\"remote_port\":80}\0",
            KF_INVALID_CONFIG,
            "protocol",
        ),
        (
            b"{\"workload_type\":\"proxy\",\"remote_port\":5432}\0",
            KF_INVALID_CONFIG,
            "remote_address",
        ),
    ];
    for (json, code, says) in cases {
        let sentinel = std::ptr::dangling_mut::<kf_forward>();
        let mut fwd = sentinel;
        // SAFETY: `json` is NUL-terminated and `fwd` writable.
        let r = unsafe {
            kf_forward_start(
                rt.0,
                json.as_ptr().cast(),
                None,
                std::ptr::null_mut(),
                &mut fwd,
            )
        };
        let message = last_error();
        let shown = String::from_utf8_lossy(json);
        assert_eq!(r, code, "{shown}: {message}");
        assert!(
            message.contains(says),
            "{shown}: {message:?} lacks {says:?}"
        );
        assert_eq!(fwd, sentinel, "{shown}: out was written on failure");
    }
}

#[test]
fn last_error_message_sizes_and_buffers() {
    let rt = Runtime::new(1);
    let (code, message) = rt.start("{oops").err().expect("invalid JSON");
    assert_eq!(code, KF_INVALID_JSON);
    let mut len = 0usize;
    // SAFETY: NULL with length 0 asks for the size; `len` is writable.
    let r = unsafe { kf_last_error_message(std::ptr::null_mut(), 0, &mut len) };
    assert_eq!((r, len), (KF_OK, message.len()));
    let mut small = vec![b'x'; message.len()];
    let mut small_len = 12345usize;
    // SAFETY: `small` has small.len() writable bytes.
    let r =
        unsafe { kf_last_error_message(small.as_mut_ptr().cast(), small.len(), &mut small_len) };
    assert_eq!(r, KF_BUFFER_TOO_SMALL);
    assert_eq!(small_len, 12345, "out_len untouched on failure");
    assert!(
        small.iter().all(|b| *b == b'x'),
        "buffer untouched on failure"
    );
    assert_eq!(last_error(), message, "a failed read keeps the message");
    let mut exact = vec![b'x'; message.len() + 1];
    // SAFETY: as above.
    let r = unsafe { kf_last_error_message(exact.as_mut_ptr().cast(), exact.len(), &mut len) };
    assert_eq!(r, KF_OK);
    assert_eq!(&exact[..len], message.as_bytes());
    assert_eq!(exact[len], 0);
}

#[test]
fn thread_counts_are_checked() {
    let mut rt = std::ptr::dangling_mut::<kf_runtime>();
    // SAFETY: `rt` is writable.
    let r = unsafe { kf_runtime_new(100_000, &mut rt) };
    assert_eq!(r, KF_INVALID_ARGUMENT);
    assert_eq!(rt, std::ptr::dangling_mut(), "out untouched on failure");
    drop(Runtime::new(3));
    drop(Runtime::new(0));
}

#[test]
fn forward_fetches_reports_and_stops_once() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    let events = Events::default();
    let fwd = rt
        .start_with(&tc.config("web", 80), Some(collect), events.userdata())
        .expect("starts");
    assert_eq!(fwd.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let status = fwd.status();
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["forward"], "svc/web 0:80");
    assert_eq!(status["ports"][0]["remote"], "80");
    assert_eq!(status["ports"][0]["pod_port"], 8080);
    assert_eq!(status["last_error"], serde_json::Value::Null);
    let body = http_get(fwd.local_addr());
    assert!(body.starts_with("web-"), "a web pod answered: {body:?}");
    eventually("the connection to be counted", || {
        let s = fwd.status()["stats"].clone();
        s["connections_total"] == 1
            && s["connections_open"] == 0
            && s["bytes_in"].as_u64() > Some(0)
    });
    assert_eq!(fwd.stop(), KF_OK, "{}", last_error());
    assert_eq!(fwd.stop(), KF_ALREADY_STOPPED);
    assert!(last_error().contains("already stopped"));
    let status = fwd.status();
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["stats"]["connections_total"], 1, "{status}");
    assert_eq!(fwd.wait_ready(0), KF_ALREADY_STOPPED);
    // Every event was delivered by the time stop returned, in order.
    let kinds = events.kinds();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("ready"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("stopped"),
        "{kinds:?}"
    );
    let opened = kinds.iter().position(|k| k == "connection_opened");
    let closed = kinds.iter().position(|k| k == "connection_closed");
    assert!(opened.is_some() && opened < closed, "{kinds:?}");
    let ready = events
        .0
        .lock()
        .expect("events")
        .iter()
        .find(|e| e["event"] == "ready")
        .cloned()
        .expect("a ready event");
    assert_eq!(ready["local_addr"], status["local_addrs"][0]);
    let delivered = events.0.lock().expect("events").len();
    drop(fwd);
    assert_eq!(
        events.0.lock().expect("events").len(),
        delivered,
        "no events after stop"
    );
}

/// Sleeps 200 ms per event, counting them.
unsafe extern "C" fn slow(userdata: *mut c_void, json: *const c_char) {
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as for `collect`: the test's Events outlives the forward.
    unsafe { collect(userdata, json) };
}

#[test]
fn a_slow_callback_does_not_stall_the_forward() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    // One worker: the callback's sleeps would stall everything if they held it.
    let rt = Runtime::new(1);
    let events = Events::default();
    let fwd = rt
        .start_with(&tc.config("web", 80), Some(slow), events.userdata())
        .expect("starts");
    assert_eq!(fwd.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let addr = fwd.local_addr();
    let began = Instant::now();
    for _ in 0..5 {
        assert!(http_get(addr).starts_with("web-"));
    }
    // 5 connections make at least 10 events, 2 s of callbacks; the fetches do not wait
    // for them.
    let took = began.elapsed();
    eprintln!("5 fetches took {took:?}");
    assert!(took < Duration::from_millis(1000), "fetches took {took:?}");
    assert_eq!(fwd.stop(), KF_OK, "{}", last_error());
    let kinds = events.kinds();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("ready"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("stopped"),
        "{kinds:?}"
    );
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("connection_opened"), 5, "{kinds:?}");
    assert_eq!(count("connection_closed"), 5, "{kinds:?}");
}

#[test]
fn start_failures_show_in_wait_status_and_events() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let kubeconfig = tc.kubeconfig().to_str().expect("UTF-8 path").to_owned();
    let cases = [
        (
            serde_json::json!({"service": "nope", "namespace": "demo", "remote_port": 80,
                "local_port": 0, "kubeconfig": kubeconfig}),
            KF_NOT_FOUND,
            "\"nope\"",
        ),
        (
            serde_json::json!({"service": "web", "namespace": "demo", "remote_port": 80,
                "local_port": 0, "kubeconfig": "/nonexistent/kubeconfig"}),
            KF_KUBECONFIG,
            "/nonexistent/kubeconfig",
        ),
        (
            serde_json::json!({"service": "web", "namespace": "demo", "remote_port": 80,
                "local_port": 0, "kubeconfig": kubeconfig, "context": "elsewhere"}),
            KF_UNKNOWN_CONTEXT,
            "elsewhere",
        ),
        (
            serde_json::json!({"service": "web", "namespace": "demo", "remote_port": 80,
                "local_port": taken_port, "kubeconfig": kubeconfig}),
            KF_BIND_FAILED,
            "already in use",
        ),
    ];
    for (config, code, says) in cases {
        let events = Events::default();
        let fwd = rt
            .start_with(&config.to_string(), Some(collect), events.userdata())
            .expect("starting is asynchronous");
        assert_eq!(fwd.wait_ready(WAIT_MS), code, "{config}: {}", last_error());
        assert!(last_error().contains(says), "{config}: {}", last_error());
        let status = fwd.status();
        assert_eq!(status["state"], "failed", "{status}");
        assert_eq!(status["last_error"]["code"], code as i32, "{status}");
        assert_eq!(status["last_error"]["name"], format!("{code:?}"));
        assert_eq!(status["last_error"]["retryable"], false);
        assert_eq!(status["local_addrs"], serde_json::json!([]));
        eventually("the error event", || events.kinds() == ["error"]);
        // A failed forward still takes one stop, and frees cleanly.
        assert_eq!(fwd.stop(), KF_OK);
        assert_eq!(fwd.stop(), KF_ALREADY_STOPPED);
        assert_eq!(fwd.status()["state"], "failed");
    }
    drop(taken);
}

#[test]
fn a_forbidden_portforward_is_kf_forbidden() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    tc.cluster.deny("*", "services");
    let rt = Runtime::new(2);
    let fwd = rt.start(&tc.config("web", 80)).expect("starts");
    assert_eq!(fwd.wait_ready(WAIT_MS), KF_FORBIDDEN, "{}", last_error());
    assert!(
        last_error().contains("permission denied"),
        "{}",
        last_error()
    );
}

#[test]
fn stop_while_starting_and_wait_timeout() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    tc.cluster.pause();
    let rt = Runtime::new(2);
    let events = Events::default();
    let fwd = rt
        .start_with(&tc.config("web", 80), Some(collect), events.userdata())
        .expect("starts");
    let began = Instant::now();
    assert_eq!(fwd.wait_ready(300), KF_TIMEOUT);
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(last_error().contains("still starting"), "{}", last_error());
    assert_eq!(fwd.status()["state"], "starting");
    assert_eq!(fwd.stop(), KF_OK, "{}", last_error());
    assert_eq!(fwd.status()["state"], "stopped");
    assert_eq!(events.kinds(), ["stopped"]);
    tc.cluster.resume();
}

/// What the callback below shares with its test.
#[derive(Default)]
struct Reentry {
    fwd: AtomicPtr<kf_forward>,
    results: Mutex<Vec<(kf_result, kf_result)>>,
}

/// On `ready`, tries to stop its own forward (refused) and reads its status (allowed).
unsafe extern "C" fn reenter(userdata: *mut c_void, json: *const c_char) {
    // SAFETY: the test passes a Reentry that outlives the forward; `json` is valid.
    let (me, json) = unsafe { (&*userdata.cast::<Reentry>(), CStr::from_ptr(json)) };
    if !json.to_bytes().starts_with(br#"{"event":"ready""#) {
        return;
    }
    let deadline = Instant::now() + WAIT;
    let mut fwd = me.fwd.load(Ordering::Acquire);
    while fwd.is_null() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        fwd = me.fwd.load(Ordering::Acquire);
    }
    let mut status: *mut c_char = std::ptr::null_mut();
    // SAFETY: `fwd` is live: the test frees it only after stop, which waits for this call.
    let (stop, read) = unsafe { (kf_forward_stop(fwd), kf_forward_status(fwd, &mut status)) };
    // SAFETY: `status` is NULL or a string from kforward.
    unsafe { kf_string_free(status) };
    me.results.lock().expect("results").push((stop, read));
}

#[test]
fn callbacks_may_read_status_but_not_stop() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    let me = Arc::new(Reentry::default());
    let fwd = rt
        .start_with(
            &tc.config("echo", 7000),
            Some(reenter),
            Arc::as_ptr(&me).cast_mut().cast(),
        )
        .expect("starts");
    me.fwd.store(fwd.0, Ordering::Release);
    assert_eq!(fwd.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    eventually("the callback to run", || {
        !me.results.lock().expect("results").is_empty()
    });
    assert_eq!(
        *me.results.lock().expect("results"),
        [(KF_WRONG_THREAD, KF_OK)]
    );
    assert_eq!(fwd.stop(), KF_OK, "the refused stop did not count");
}

/// Counts calls.
unsafe extern "C" fn count(userdata: *mut c_void, _json: *const c_char) {
    // SAFETY: the test passes an AtomicUsize that outlives the forward.
    unsafe { &*userdata.cast::<AtomicUsize>() }.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn forwards_outlive_their_runtime_handle_and_free_stops_them() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let calls = AtomicUsize::new(0);
    let rt = Runtime::new(1);
    let fwd = rt
        .start_with(
            &tc.config("web", 80),
            Some(count),
            std::ptr::from_ref(&calls).cast_mut().cast(),
        )
        .expect("starts");
    drop(rt);
    assert_eq!(fwd.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let addr = fwd.local_addr();
    assert!(http_get(addr).starts_with("web-"));
    // Freeing without stopping stops, delivers the last events, then no more.
    drop(fwd);
    let after_free = calls.load(Ordering::SeqCst);
    assert!(
        after_free >= 4,
        "ready, opened, closed, stopped: {after_free}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(calls.load(Ordering::SeqCst), after_free);
    assert!(
        std::net::TcpStream::connect_timeout(&addr, WAIT).is_err(),
        "the listener is closed"
    );
}

/// What the callback below shares with its test.
#[derive(Default)]
struct SelfFree {
    fwd: AtomicPtr<kf_forward>,
    local_addr: Mutex<Option<std::net::SocketAddr>>,
    freed: std::sync::atomic::AtomicBool,
    calls_after_free: AtomicUsize,
}

/// On `ready`, notes the address and frees its own forward.
unsafe extern "C" fn free_self(userdata: *mut c_void, json: *const c_char) {
    // SAFETY: the test passes a SelfFree that outlives the forward; `json` is valid.
    let (me, json) = unsafe { (&*userdata.cast::<SelfFree>(), CStr::from_ptr(json)) };
    if me.freed.load(Ordering::SeqCst) {
        me.calls_after_free.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let event: serde_json::Value = serde_json::from_slice(json.to_bytes()).expect("JSON");
    if event["event"] != "ready" {
        return;
    }
    *me.local_addr.lock().expect("addr") =
        event["local_addr"].as_str().and_then(|a| a.parse().ok());
    let deadline = Instant::now() + WAIT;
    let mut fwd = me.fwd.load(Ordering::Acquire);
    while fwd.is_null() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        fwd = me.fwd.load(Ordering::Acquire);
    }
    // SAFETY: the forward is live and nothing else uses it: the test only stored it.
    unsafe { kf_forward_free(fwd) };
    me.freed.store(true, Ordering::SeqCst);
}

#[test]
fn a_callback_may_free_its_own_forward_even_holding_the_last_runtime_reference() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let me = SelfFree::default();
    let rt = Runtime::new(2);
    let fwd = rt
        .start_with(
            &tc.config("web", 80),
            Some(free_self),
            std::ptr::from_ref(&me).cast_mut().cast(),
        )
        .expect("starts");
    // From here the forward alone keeps the runtime alive, and the callback frees it.
    drop(rt);
    me.fwd.store(fwd.0, Ordering::Release);
    std::mem::forget(fwd);
    eventually("the callback to free the forward", || {
        me.freed.load(Ordering::SeqCst)
    });
    let addr = me
        .local_addr
        .lock()
        .expect("addr")
        .expect("the ready event's address");
    eventually("the listener to close", || {
        std::net::TcpStream::connect_timeout(&addr, WAIT).is_err()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(me.calls_after_free.load(Ordering::SeqCst), 0);
}
