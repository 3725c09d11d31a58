//! kforward-ffi: kforward's C ABI, for C, Python (`ctypes`), Go, Swift and anything else
//! that can call C.
//!
//! The header is `include/kforward.h`, generated from this crate by cbindgen. The shape
//! follows rustls-ffi:
//!
//! - opaque handles: a `kf_runtime` (the worker threads) and `kf_forward`s started on it;
//!   every handle has a `_free` function that accepts NULL;
//! - JSON in and out: a forward is started from one entry of a kftray config, its status
//!   and its events are JSON objects;
//! - every function returns a `kf_result` with stable numbers (or is a `_free`, or returns
//!   a static string); after a failure `kf_last_error_message` gives the message on the
//!   same thread; out-parameters are written only on success;
//! - strings handed out are freed with `kf_string_free`, static strings are never freed;
//! - nothing panics across the boundary: every function runs inside `catch_unwind`, and a
//!   caught panic is `KF_PANIC`;
//! - events reach a callback `(userdata, event_json)` on a runtime worker thread.
//!
//! A typical session, in C:
//!
//! ```c
//! kf_runtime *rt;
//! kf_forward *fwd;
//! char *status;
//! kf_runtime_new(0, &rt);
//! kf_forward_start(rt, "{\"service\":\"web\",\"namespace\":\"demo\",\"local_port\":0,"
//!                      "\"remote_port\":80}", NULL, NULL, &fwd);
//! if (kf_forward_wait_ready(fwd, 30000) == KF_OK && kf_forward_status(fwd, &status) == KF_OK) {
//!     puts(status);            // {"state":"ready","local_addrs":["127.0.0.1:40123"],...}
//!     kf_string_free(status);
//! }
//! kf_forward_stop(fwd);
//! kf_forward_free(fwd);
//! kf_runtime_free(rt);
//! ```
//!
//! Rust callers should use `kforward-core` directly; this crate's Rust items exist for its
//! tests.

// The C names (`kf_runtime`, `KF_OK`) are the API; Rust's casing rules do not apply.
#![allow(non_camel_case_types)]

// In the order the header presents them (cbindgen follows the declarations).
mod result;

mod boundary;

mod runtime;

mod driver;

mod forward;

pub use boundary::{kf_last_error_message, kf_string_free, kf_version};
pub use driver::kf_event_callback;
pub use forward::{
    kf_forward, kf_forward_free, kf_forward_start, kf_forward_status, kf_forward_stop,
    kf_forward_wait_ready,
};
pub use result::{kf_result, kf_result_name};
pub use runtime::{kf_runtime, kf_runtime_free, kf_runtime_new};
