//! `kf_result`, the code every call returns, and the one mapping from core errors to codes.

use std::ffi::{CStr, c_char, c_int};

use kforward_core::Error;

/// What a call did: `KF_OK`, or why it failed. Numbers are stable and never reused; new
/// codes are only ever added. 1-19 are mistakes in the call itself, 20-49 come from the
/// cluster, the kubeconfig or this machine, 90 and up are bugs in kforward.
///
/// After any code but `KF_OK`, `kf_last_error_message` gives the message on the same
/// thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum kf_result {
    /// Success.
    KF_OK = 0,
    /// A pointer argument that must not be NULL was NULL.
    KF_NULL_ARGUMENT = 1,
    /// A string argument is not valid UTF-8.
    KF_INVALID_UTF8 = 2,
    /// A JSON argument is not JSON (a syntax error, or it ends too early).
    KF_INVALID_JSON = 3,
    /// The forward config is JSON but not a valid config: a field of the wrong type, a bad
    /// name or port, a missing field. The message names every field at fault.
    KF_INVALID_CONFIG = 4,
    /// Another argument is out of range (such as a thread count above 1024).
    KF_INVALID_ARGUMENT = 5,
    /// The caller's buffer is too small for the text; nothing was written.
    KF_BUFFER_TOO_SMALL = 6,
    /// The cluster cannot do what was asked: the API server answered 501 Not Implemented.
    /// (Builds before the relay also gave it for UDP and `proxy` configs, which now run.)
    KF_UNSUPPORTED = 7,
    /// The forward was already stopped: by an earlier `kf_forward_stop`, or before
    /// `kf_forward_wait_ready` saw it ready.
    KF_ALREADY_STOPPED = 8,
    /// The wait ended before the forward was ready or had failed.
    KF_TIMEOUT = 9,
    /// A blocking call (`kf_forward_stop`) was made on a thread that must not block: an
    /// event callback, or any other thread running an async runtime.
    KF_WRONG_THREAD = 10,
    /// The kubeconfig cannot be found, read or used.
    KF_KUBECONFIG = 20,
    /// The context asked for is not in the kubeconfig.
    KF_UNKNOWN_CONTEXT = 21,
    /// The local address cannot be listened on (the port is in use, or needs privileges).
    KF_BIND_FAILED = 22,
    /// The pod, service, namespace or named port does not exist.
    KF_NOT_FOUND = 23,
    /// No pod of the target was ready in time.
    KF_NO_READY_POD = 24,
    /// The API server refused for lack of permission (403).
    KF_FORBIDDEN = 25,
    /// The API server rejected the credentials (401).
    KF_UNAUTHORIZED = 26,
    /// The API server cannot be reached.
    KF_UNREACHABLE = 27,
    /// The API server answered with another error.
    KF_API = 28,
    /// The port-forward stream to the pod failed.
    KF_TUNNEL = 29,
    /// The in-cluster relay of a UDP or proxy forward failed: its pod could not be made
    /// ready (an image the cluster cannot pull, say), the destination's name did not
    /// resolve inside the cluster, or the destination refused or timed out.
    KF_RELAY = 30,
    /// kforward panicked; the panic was caught at the boundary. Please report it.
    KF_PANIC = 90,
    /// Any other failure inside kforward. Please report it.
    KF_INTERNAL = 99,
}

/// Every code, for tests and for `kf_result_name`.
pub(crate) const ALL: [kf_result; 24] = {
    use kf_result::*;
    [
        KF_OK,
        KF_NULL_ARGUMENT,
        KF_INVALID_UTF8,
        KF_INVALID_JSON,
        KF_INVALID_CONFIG,
        KF_INVALID_ARGUMENT,
        KF_BUFFER_TOO_SMALL,
        KF_UNSUPPORTED,
        KF_ALREADY_STOPPED,
        KF_TIMEOUT,
        KF_WRONG_THREAD,
        KF_KUBECONFIG,
        KF_UNKNOWN_CONTEXT,
        KF_BIND_FAILED,
        KF_NOT_FOUND,
        KF_NO_READY_POD,
        KF_FORBIDDEN,
        KF_UNAUTHORIZED,
        KF_UNREACHABLE,
        KF_API,
        KF_TUNNEL,
        KF_RELAY,
        KF_PANIC,
        KF_INTERNAL,
    ]
};

impl kf_result {
    /// The name as written in C, NUL-terminated.
    pub(crate) fn name_c(self) -> &'static CStr {
        use kf_result::*;
        match self {
            KF_OK => c"KF_OK",
            KF_NULL_ARGUMENT => c"KF_NULL_ARGUMENT",
            KF_INVALID_UTF8 => c"KF_INVALID_UTF8",
            KF_INVALID_JSON => c"KF_INVALID_JSON",
            KF_INVALID_CONFIG => c"KF_INVALID_CONFIG",
            KF_INVALID_ARGUMENT => c"KF_INVALID_ARGUMENT",
            KF_BUFFER_TOO_SMALL => c"KF_BUFFER_TOO_SMALL",
            KF_UNSUPPORTED => c"KF_UNSUPPORTED",
            KF_ALREADY_STOPPED => c"KF_ALREADY_STOPPED",
            KF_TIMEOUT => c"KF_TIMEOUT",
            KF_WRONG_THREAD => c"KF_WRONG_THREAD",
            KF_KUBECONFIG => c"KF_KUBECONFIG",
            KF_UNKNOWN_CONTEXT => c"KF_UNKNOWN_CONTEXT",
            KF_BIND_FAILED => c"KF_BIND_FAILED",
            KF_NOT_FOUND => c"KF_NOT_FOUND",
            KF_NO_READY_POD => c"KF_NO_READY_POD",
            KF_FORBIDDEN => c"KF_FORBIDDEN",
            KF_UNAUTHORIZED => c"KF_UNAUTHORIZED",
            KF_UNREACHABLE => c"KF_UNREACHABLE",
            KF_API => c"KF_API",
            KF_TUNNEL => c"KF_TUNNEL",
            KF_RELAY => c"KF_RELAY",
            KF_PANIC => c"KF_PANIC",
            KF_INTERNAL => c"KF_INTERNAL",
        }
    }

    /// The name as written in C.
    pub(crate) fn name(self) -> &'static str {
        self.name_c().to_str().unwrap_or("KF_INTERNAL")
    }
}

/// The code for a core error: the one place that decides it, from the error's variant and
/// classification, never from its message.
pub(crate) fn code_of(e: &Error) -> kf_result {
    use kf_result::*;
    if e.is_permission_denied() {
        return KF_FORBIDDEN;
    }
    if e.is_unauthorized() {
        return KF_UNAUTHORIZED;
    }
    match e {
        Error::Config(_) | Error::Spec(_) | Error::RelayPodPatch { .. } => KF_INVALID_CONFIG,
        Error::BindLocal { .. } => KF_BIND_FAILED,
        Error::Kubeconfig { .. } => KF_KUBECONFIG,
        Error::UnknownContext { .. } => KF_UNKNOWN_CONTEXT,
        Error::NotFound { .. } | Error::PortNotFound { .. } => KF_NOT_FOUND,
        Error::NoReadyPod { .. } => KF_NO_READY_POD,
        Error::Forbidden { .. } => KF_FORBIDDEN,
        Error::Unauthorized { .. } => KF_UNAUTHORIZED,
        // Through the proxy toward the API server: unreachable as far as the caller goes;
        // the message names the proxy and what to check.
        Error::Unreachable { .. } | Error::Proxy { .. } => KF_UNREACHABLE,
        Error::Api { code: 501, .. } => KF_UNSUPPORTED,
        Error::Api { .. } => KF_API,
        Error::Tunnel { .. } => KF_TUNNEL,
        Error::RelayNameNotResolved { .. }
        | Error::RelayConnect { .. }
        | Error::RelayRejected { .. }
        | Error::RelayHandshake { .. }
        | Error::RelayPod { .. } => KF_RELAY,
        // Every forward is started once here, so this is a bug.
        Error::AlreadyStarted => KF_INTERNAL,
        _ => KF_INTERNAL,
    }
}

/// A failed call: its code and the message for `kf_last_error_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub(crate) code: kf_result,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(code: kf_result, message: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
        }
    }

    /// `KF_NULL_ARGUMENT` for the argument named `what`.
    pub(crate) fn null(what: &str) -> Self {
        Fail::new(
            kf_result::KF_NULL_ARGUMENT,
            format!("{what} is NULL; it must point to a valid value"),
        )
    }
}

impl From<&Error> for Fail {
    fn from(e: &Error) -> Self {
        Fail::new(code_of(e), e.to_string())
    }
}

/// The name of a result code, such as `"KF_NOT_FOUND"`, or `"KF_UNKNOWN"` for a number
/// that is no code. The string is static: do not free it.
///
/// Takes an `int` rather than a `kf_result` so that any number is safe to pass.
#[unsafe(no_mangle)]
pub extern "C" fn kf_result_name(code: c_int) -> *const c_char {
    let name = std::panic::catch_unwind(|| {
        ALL.iter()
            .find(|r| **r as c_int == code)
            .map_or(c"KF_UNKNOWN", |r| r.name_c())
    });
    name.unwrap_or(c"KF_UNKNOWN").as_ptr()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use kforward_core::config::{ConfigError, FieldError};
    use kforward_core::spec::SpecError;

    use super::kf_result::*;
    use super::*;

    #[test]
    fn every_core_error_has_its_code() {
        let cases = [
            (
                Error::Config(ConfigError::new(vec![FieldError::new(
                    "remote_port",
                    "0",
                    "is not a port",
                )])),
                KF_INVALID_CONFIG,
            ),
            (Error::Spec(SpecError::EmptyTarget), KF_INVALID_CONFIG),
            (
                Error::BindLocal {
                    addr: SocketAddr::from(([127, 0, 0, 1], 80)),
                    source: std::io::ErrorKind::AddrInUse.into(),
                    suggestion: "0:80".into(),
                },
                KF_BIND_FAILED,
            ),
            (
                Error::Kubeconfig {
                    message: "x".into(),
                },
                KF_KUBECONFIG,
            ),
            (
                Error::UnknownContext {
                    context: "x".into(),
                    available: vec![],
                },
                KF_UNKNOWN_CONTEXT,
            ),
            (
                Error::NotFound {
                    kind: "service",
                    namespace: "demo".into(),
                    name: "x".into(),
                },
                KF_NOT_FOUND,
            ),
            (
                Error::PortNotFound {
                    target: "svc/web".into(),
                    port: "x".into(),
                    available: vec![],
                },
                KF_NOT_FOUND,
            ),
            (
                Error::NoReadyPod {
                    target: "svc/web".into(),
                    namespace: "demo".into(),
                    waited: Duration::from_secs(1),
                },
                KF_NO_READY_POD,
            ),
            (
                Error::Forbidden {
                    verb: "create".into(),
                    resource: "pods/portforward".into(),
                    namespace: "demo".into(),
                    message: "no".into(),
                },
                KF_FORBIDDEN,
            ),
            (
                Error::Unauthorized {
                    server: "https://x".into(),
                },
                KF_UNAUTHORIZED,
            ),
            (
                Error::Unreachable {
                    server: "https://x".into(),
                    message: "refused".into(),
                },
                KF_UNREACHABLE,
            ),
            (
                Error::Api {
                    action: "x".into(),
                    code: 501,
                    message: "not implemented".into(),
                },
                KF_UNSUPPORTED,
            ),
            (
                Error::Api {
                    action: "x".into(),
                    code: 500,
                    message: "boom".into(),
                },
                KF_API,
            ),
            (
                Error::Tunnel {
                    pod: "web-0".into(),
                    port: 80,
                    message: "refused".into(),
                },
                KF_TUNNEL,
            ),
            (
                Error::RelayPod {
                    namespace: "demo".into(),
                    message: "the cluster cannot pull the relay image".into(),
                    retryable: false,
                },
                KF_RELAY,
            ),
            (Error::AlreadyStarted, KF_INTERNAL),
        ];
        for (error, code) in cases {
            assert_eq!(code_of(&error), code, "{error:?}");
            let fail = Fail::from(&error);
            assert_eq!(fail.message, error.to_string());
        }
    }

    #[test]
    fn names_match_variants_and_numbers_are_unique() {
        let mut numbers: Vec<i32> = ALL.iter().map(|r| *r as i32).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), ALL.len());
        for r in ALL {
            assert_eq!(format!("{r:?}"), r.name());
            // SAFETY: kf_result_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(kf_result_name(r as c_int)) };
            assert_eq!(name.to_str(), Ok(r.name()));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(kf_result_name(12345)) };
        assert_eq!(unknown.to_str(), Ok("KF_UNKNOWN"));
    }
}
