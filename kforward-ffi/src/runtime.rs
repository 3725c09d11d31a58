//! `kf_runtime`: the tokio runtime whose worker threads run every forward started on it.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use kforward_core::{Supervisor, SupervisorOptions};
use tokio::runtime::{Handle, Runtime};

use crate::boundary::{guard, guard_void, out_arg};
use crate::result::{Fail, kf_result};

/// The most worker threads a runtime may have.
const MAX_WORKER_THREADS: u32 = 1024;
/// How long freeing the last handle waits for the runtime's threads to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A tokio runtime (a pool of worker threads) that runs forwards. Create it with
/// `kf_runtime_new`, free it with `kf_runtime_free`. Forwards started on it keep it alive:
/// its threads end when the runtime and every forward started on it have been freed.
///
/// One runtime can be shared by any number of forwards and used from any thread.
pub struct kf_runtime {
    pub(crate) owner: Arc<RuntimeOwner>,
}

/// Owns the runtime and the supervisor every forward started on it runs under; the last
/// owner to go shuts them down.
pub(crate) struct RuntimeOwner {
    supervisor: Option<Supervisor>,
    rt: Option<Runtime>,
}

impl RuntimeOwner {
    pub(crate) fn handle(&self) -> Option<&Handle> {
        self.rt.as_ref().map(Runtime::handle)
    }

    /// The supervisor of this runtime's forwards.
    pub(crate) fn supervisor(&self) -> Option<&Supervisor> {
        self.supervisor.as_ref()
    }
}

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        // Every forward was freed (each holds this owner), so the supervisor has none left.
        drop(self.supervisor.take());
        if let Some(rt) = self.rt.take() {
            if on_async_thread() {
                // A runtime cannot wait for threads from inside an async context.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(SHUTDOWN_WAIT);
            }
        }
    }
}

thread_local! {
    /// Whether this thread is inside an event callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as inside an event callback until dropped.
pub(crate) struct CallbackScope(bool);

impl CallbackScope {
    pub(crate) fn enter() -> Self {
        CallbackScope(IN_CALLBACK.replace(true))
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.set(self.0);
    }
}

/// Whether the calling thread must not block on a runtime: inside an event callback, or on
/// any thread that is running async code (ours or another tokio runtime's).
pub(crate) fn on_async_thread() -> bool {
    IN_CALLBACK.get() || Handle::try_current().is_ok()
}

/// `KF_WRONG_THREAD` unless the calling thread may block.
pub(crate) fn check_may_block(what: &str) -> Result<(), Fail> {
    if on_async_thread() {
        return Err(Fail::new(
            kf_result::KF_WRONG_THREAD,
            format!(
                "{what} blocks, and cannot be called from an event callback or another async \
                 runtime's thread; call it from another thread"
            ),
        ));
    }
    Ok(())
}

/// Creates a runtime with `worker_threads` worker threads (0 means one per CPU core) and
/// writes it to `*out`. Free it with `kf_runtime_free`.
///
/// Returns `KF_OK`; `KF_NULL_ARGUMENT` when `out` is NULL; `KF_INVALID_ARGUMENT` for more
/// than 1024 threads; `KF_INTERNAL` when the threads cannot be started. `*out` is written
/// only on `KF_OK`.
///
/// # Safety
///
/// `out` is NULL or points to a writable `kf_runtime *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_runtime_new(
    worker_threads: u32,
    out: *mut *mut kf_runtime,
) -> kf_result {
    guard(|| {
        out_arg(out, "out")?;
        if worker_threads > MAX_WORKER_THREADS {
            return Err(Fail::new(
                kf_result::KF_INVALID_ARGUMENT,
                format!(
                    "worker_threads is {worker_threads}; it must be at most {MAX_WORKER_THREADS} \
                     (0 means one per CPU core)"
                ),
            ));
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("kforward-worker");
        if worker_threads > 0 {
            builder.worker_threads(worker_threads as usize);
        }
        let rt = builder.build().map_err(|e| {
            Fail::new(
                kf_result::KF_INTERNAL,
                format!("cannot start the runtime's threads: {e}"),
            )
        })?;
        // A forward whose first start fails reports it, as `kubectl port-forward` would;
        // once started, it is kept up (probes, reconnects) like every supervised forward.
        let supervisor = {
            let _entered = rt.enter();
            Supervisor::new(SupervisorOptions {
                retry_start: false,
                ..Default::default()
            })
        };
        let handle = Box::new(kf_runtime {
            owner: Arc::new(RuntimeOwner {
                supervisor: Some(supervisor),
                rt: Some(rt),
            }),
        });
        // SAFETY: `out` is not NULL (checked above) and points to a writable pointer (the
        // caller's promise).
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a runtime. NULL is allowed and does nothing. Forwards started on it go on running
/// until they are freed; the threads end when the last of them is freed (waiting up to 5
/// seconds for them).
///
/// # Safety
///
/// `rt` is NULL or a runtime from `kf_runtime_new` not freed yet; it must not be used after
/// this call, nor be in use by another thread during it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_runtime_free(rt: *mut kf_runtime) {
    guard_void(|| {
        if !rt.is_null() {
            // SAFETY: `rt` came from Box::into_raw in kf_runtime_new and is freed only once
            // (the caller's promise).
            drop(unsafe { Box::from_raw(rt) });
        }
    });
}
