//! The boundary itself: the panic guard every exported function runs in, the per-thread last
//! error message, checked arguments, and the strings kforward hands out.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::result::{Fail, kf_result};

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: impl Into<String>) {
    let message = message.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// This thread's last error message (empty when no call has failed on it).
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|e| e.borrow().clone())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs the body of an exported function: a panic becomes `KF_PANIC` and a failure its code,
/// each with the message recorded for `kf_last_error_message`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Fail>) -> kf_result {
    // Nothing the body touches is left half-updated in a way a later call could observe
    // unsafely: shared state sits behind mutexes that recover from poisoning.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => kf_result::KF_OK,
        Ok(Err(fail)) => {
            set_last_error(fail.message);
            fail.code
        }
        Err(payload) => {
            set_last_error(format!(
                "kforward panicked (please report this): {}",
                panic_message(payload.as_ref())
            ));
            kf_result::KF_PANIC
        }
    }
}

/// Like [`guard`], for functions that return nothing (the `_free` functions).
pub(crate) fn guard_void(body: impl FnOnce()) {
    let _ = guard(|| {
        body();
        Ok(())
    });
}

/// A borrowed UTF-8 string argument.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: `p` is not NULL, and the caller guarantees it points to a NUL-terminated
    // string valid for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        Fail::new(
            kf_result::KF_INVALID_UTF8,
            format!(
                "{what} is not valid UTF-8: {e} (byte {} of {})",
                e.valid_up_to(),
                s.to_bytes().len()
            ),
        )
    })
}

/// Checks that an out-parameter is not NULL, before any work is done.
pub(crate) fn out_arg<T>(p: *mut T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        Err(Fail::null(what))
    } else {
        Ok(())
    }
}

/// A string for the caller, who frees it with `kf_string_free`.
pub(crate) fn owned_string(s: String) -> Result<*mut c_char, Fail> {
    CString::new(s)
        .map(CString::into_raw)
        .map_err(|e| Fail::new(kf_result::KF_INTERNAL, format!("text with a NUL byte: {e}")))
}

/// Copies the message of the last failed call on the calling thread into `buf`, with a
/// terminating NUL, and writes its length (without the NUL) to `*out_len`.
///
/// Every call that returns anything but `KF_OK` records its message for the thread it ran
/// on; successful calls leave it as it is, and so does this function, even when it fails.
/// With no failure yet on this thread the message is empty.
///
/// To ask for the size first, pass `buf = NULL` and `len = 0`: `*out_len` gets the length
/// and nothing else is written. Otherwise `len` must be at least the length plus one.
///
/// Returns `KF_OK`; `KF_NULL_ARGUMENT` when `out_len` is NULL, or `buf` is NULL with `len`
/// above 0; `KF_BUFFER_TOO_SMALL` when the message and its NUL do not fit in `len` bytes
/// (then nothing is written, `*out_len` included).
///
/// # Safety
///
/// `buf` is NULL or points to `len` writable bytes; `out_len` is NULL or points to a
/// writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> kf_result {
    // Reading the message must not replace it, so failures here are not recorded.
    let result = catch_unwind(AssertUnwindSafe(|| {
        if out_len.is_null() || (buf.is_null() && len > 0) {
            return kf_result::KF_NULL_ARGUMENT;
        }
        let message = last_error();
        let n = message.len();
        if !buf.is_null() {
            if n >= len {
                return kf_result::KF_BUFFER_TOO_SMALL;
            }
            // SAFETY: `buf` points to `len` writable bytes (the caller's promise), and
            // n + 1 <= len bytes are written; the source is a separate Rust allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
        }
        // SAFETY: `out_len` is not NULL and points to a writable size_t (the caller's promise).
        unsafe { out_len.write(n) };
        kf_result::KF_OK
    }));
    result.unwrap_or(kf_result::KF_PANIC)
}

/// Frees a string that a kforward function returned (such as the JSON of
/// `kf_forward_status`). NULL is allowed and does nothing.
///
/// # Safety
///
/// `s` is NULL or a string returned by kforward and not freed yet; it must not be used
/// after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: `s` came from CString::into_raw in `owned_string` and is freed only
            // once (the caller's promise).
            drop(unsafe { CString::from_raw(s) });
        }
    });
}

/// The version of this library, such as `"0.1.0"`. The string is static: do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn kf_version() -> *const c_char {
    const VERSION: &CStr = {
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        }
    };
    // Nothing here can panic; the guard is there so that the rule has no exception.
    catch_unwind(|| VERSION.as_ptr()).unwrap_or(c"unknown".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_kf_panic_with_its_message() {
        let code = guard(|| panic!("boom in the body"));
        assert_eq!(code, kf_result::KF_PANIC);
        assert!(
            last_error().contains("boom in the body"),
            "{}",
            last_error()
        );
        let code = guard(|| Err(Fail::new(kf_result::KF_TIMEOUT, "slow")));
        assert_eq!(code, kf_result::KF_TIMEOUT);
        assert_eq!(last_error(), "slow");
        assert_eq!(guard(|| Ok(())), kf_result::KF_OK);
        assert_eq!(last_error(), "slow", "success leaves the last error alone");
    }

    #[test]
    fn the_last_error_is_per_thread() {
        set_last_error("here");
        let there = std::thread::spawn(last_error).join().expect("thread");
        assert_eq!(there, "");
        assert_eq!(last_error(), "here");
    }
}
