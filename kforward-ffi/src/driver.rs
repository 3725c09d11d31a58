//! What runs one forward on the runtime: loading its kubeconfig, starting the forwarder,
//! handing its events to the callback in order, and stopping it; plus the state the status
//! JSON is made from.

use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kforward_core::spec::ForwardSpec;
use kforward_core::{
    BoundPort, Error, Event, ForwardOptions, Forwarder, KubeContext, KubeconfigSource,
    StatsSnapshot, forwarder_for,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::result::{Fail, kf_result};
use crate::runtime::CallbackScope;

/// A function kforward calls with each event of a forward, as JSON.
///
/// `userdata` is the pointer given to `kf_forward_start`, passed through untouched.
/// `event_json` is one event, a NUL-terminated UTF-8 JSON object with an `"event"` field
/// such as `ready`, `endpoints`, `connection_opened`, `connection_closed`, `error`,
/// `stopped`, or `lagged` (`{"event":"lagged","forward":...,"missed":N}` when the callback
/// fell so far behind that N events were dropped); ignore kinds you do not know, as new ones
/// may be added. The last event of a forward that was started and then stopped is
/// `stopped`; a forward that fails to start ends with `error`. It is borrowed for the call
/// only: copy what you keep, and do not free it.
///
/// The callback runs on one of the runtime's worker threads, never on a thread of the
/// caller's. The calls for one forward come one at a time, in order; calls
/// for different forwards can run at the same time on different threads, so anything
/// `userdata` points to that several forwards share needs a lock. A slow callback delays
/// only the events of its own forward (the worker hands its other work to another thread
/// while the callback runs); if it falls more than 1024 events behind, it gets a `lagged`
/// event. A callback may call `kf_forward_status` and `kf_forward_start`, and
/// `kf_forward_free` (which then does not wait), but not `kf_forward_stop` (it returns
/// `KF_WRONG_THREAD`). It must not unwind (no C++ exceptions or `longjmp` out of it).
pub type kf_event_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event_json: *const c_char)>;

/// A callback and the caller's pointer.
pub(crate) struct Callback {
    f: unsafe extern "C" fn(*mut c_void, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: `userdata` is only ever passed back to the caller's callback, and the contract of
// kf_forward_start says the callback may run on any worker thread with it, so the caller
// has made it safe to use from other threads. kforward never dereferences it.
unsafe impl Send for Callback {}
// SAFETY: as for Send: kforward only copies the pointer; the calls for one forward never
// overlap, and the caller accepts that callbacks of different forwards may.
unsafe impl Sync for Callback {}

impl Callback {
    pub(crate) fn new(f: kf_event_callback, userdata: *mut c_void) -> Option<Self> {
        f.map(|f| Callback { f, userdata })
    }
}

/// Where a forward is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Loading the kubeconfig, resolving the target, binding.
    Starting,
    /// Listening.
    Ready,
    /// `kf_forward_stop` was called and the forward is closing.
    Stopping,
    /// Stopped by request; nothing is listening.
    Stopped,
    /// Could not start; nothing is listening.
    Failed,
}

/// An error shown in the status: its code when the error came from a call kforward made
/// (an error event of a single connection has none).
#[derive(Debug, Clone)]
struct LastError {
    code: Option<kf_result>,
    retryable: Option<bool>,
    message: String,
}

impl LastError {
    fn to_json(&self) -> serde_json::Value {
        let mut v = json!({ "message": self.message });
        if let Some(code) = self.code {
            v["code"] = json!(code as i32);
            v["name"] = json!(code.name());
        }
        if let Some(r) = self.retryable {
            v["retryable"] = json!(r);
        }
        v
    }
}

struct State {
    phase: Phase,
    /// Why the forward failed, when it did.
    failure: Option<Fail>,
    last_error: Option<LastError>,
    ports: Vec<BoundPort>,
    /// The counters when the forwarder is not live (before the start, after the stop).
    stats: StatsSnapshot,
    /// The forwarder while it is ready (TCP, UDP or proxy).
    live: Option<Box<dyn Forwarder>>,
}

/// A forward's state, shared by its handle and its tasks.
pub(crate) struct Shared {
    label: String,
    state: Mutex<State>,
    /// Signalled on every phase change, for threads waiting without a runtime.
    changed: Condvar,
    /// The phase, for tasks.
    phase: watch::Sender<Phase>,
    callback: Option<Callback>,
    /// Set when the handle is freed without waiting: no further callback call starts.
    detached: AtomicBool,
}

impl Shared {
    pub(crate) fn new(label: String, callback: Option<Callback>) -> Self {
        Shared {
            label,
            state: Mutex::new(State {
                phase: Phase::Starting,
                failure: None,
                last_error: None,
                ports: Vec::new(),
                stats: StatsSnapshot::default(),
                live: None,
            }),
            changed: Condvar::new(),
            phase: watch::Sender::new(Phase::Starting),
            callback,
            detached: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere leaves
        // nothing half-done here.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state under the lock and wakes every waiter.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.lock();
        let out = f(&mut s);
        let phase = s.phase;
        drop(s);
        self.phase.send_replace(phase);
        self.changed.notify_all();
        out
    }

    /// Marks the forward failed because of `e`.
    fn fail(&self, e: &Error) {
        let fail = Fail::from(e);
        let last = LastError {
            code: Some(fail.code),
            retryable: Some(e.is_retryable()),
            message: fail.message.clone(),
        };
        self.update(|s| {
            s.phase = Phase::Failed;
            s.failure = Some(fail);
            s.last_error = Some(last);
        });
    }

    /// Stops any further callback call from starting.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// The status as JSON.
    pub(crate) fn status_json(&self) -> String {
        let s = self.lock();
        let stats = s.live.as_ref().map_or(s.stats, |f| f.stats());
        // While it runs, the forwarder knows best (it may be reconnecting, say).
        let state = match &s.live {
            Some(f) => serde_json::to_value(f.state())
                .ok()
                .and_then(|v| v.get("state").cloned())
                .unwrap_or_else(|| json!(s.phase)),
            None => json!(s.phase),
        };
        let local_addrs: Vec<String> = s.ports.iter().map(|p| p.local_addr.to_string()).collect();
        json!({
            "forward": self.label,
            "state": state,
            "local_addrs": local_addrs,
            "ports": s.ports,
            "stats": stats,
            "last_error": s.last_error.as_ref().map(LastError::to_json),
        })
        .to_string()
    }

    /// Waits until the forward is no longer starting.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<(), Fail> {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.phase == Phase::Starting)
            .unwrap_or_else(PoisonError::into_inner);
        match s.phase {
            Phase::Ready => Ok(()),
            Phase::Starting => Err(Fail::new(
                kf_result::KF_TIMEOUT,
                format!(
                    "{} is still starting after {} ms",
                    self.label,
                    timeout.as_millis()
                ),
            )),
            Phase::Failed => Err(s.failure.clone().unwrap_or_else(|| {
                Fail::new(kf_result::KF_INTERNAL, format!("{} failed", self.label))
            })),
            Phase::Stopping | Phase::Stopped => Err(Fail::new(
                kf_result::KF_ALREADY_STOPPED,
                format!("{} has been stopped", self.label),
            )),
        }
    }

    /// Calls the callback with one JSON event, unless the handle is gone.
    fn emit_json(&self, json: String) {
        let Some(cb) = &self.callback else { return };
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        // serde_json escapes NUL inside strings, so this cannot fail; skip rather than lie.
        let Ok(text) = CString::new(json) else { return };
        let call = || {
            let _scope = CallbackScope::enter();
            // SAFETY: `f` is the caller's callback and `userdata` its pointer, used as the
            // contract of kf_forward_start allows; `text` is a valid NUL-terminated string
            // that outlives the call.
            unsafe { (cb.f)(cb.userdata, text.as_ptr()) }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Let the runtime move this worker's other tasks elsewhere while the callback runs.
            tokio::task::block_in_place(call);
        } else {
            call();
        }
    }

    fn emit(&self, event: &Event) {
        if let Ok(json) = serde_json::to_string(event) {
            self.emit_json(json);
        }
    }

    /// Records what an event says about the forward, then hands it to the callback.
    fn deliver(&self, event: &Event) {
        if let Event::Error { message, .. } = event {
            self.update(|s| {
                // The error that failed the start is already there, with its code.
                if s.last_error.as_ref().is_none_or(|e| &e.message != message) {
                    s.last_error = Some(LastError {
                        code: None,
                        retryable: None,
                        message: message.clone(),
                    });
                }
            });
        }
        self.emit(event);
    }
}

/// Hands the forwarder's events to the callback, one at a time and in order, until
/// `finish` is cancelled and nothing is left.
async fn pump(shared: Arc<Shared>, mut rx: broadcast::Receiver<Event>, finish: CancellationToken) {
    let mut phase = shared.phase.subscribe();
    loop {
        let next = tokio::select! {
            biased;
            r = rx.recv() => r,
            () = finish.cancelled() => break,
        };
        match next {
            Ok(event) => {
                // The status must agree with the event when the callback reads it: the
                // forwarder announces itself ready or failed just before the driver records
                // it, and stopped just before the driver does.
                let stopped = matches!(event, Event::Stopped { .. });
                let caught_up = phase.wait_for(|p| {
                    if stopped {
                        *p == Phase::Stopped
                    } else {
                        *p != Phase::Starting
                    }
                });
                tokio::select! {
                    _ = caught_up => {}
                    () = finish.cancelled() => {}
                }
                shared.deliver(&event);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => lagged(&shared, missed),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
    loop {
        match rx.try_recv() {
            Ok(event) => shared.deliver(&event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => lagged(&shared, missed),
            Err(_) => return,
        }
    }
}

fn lagged(shared: &Shared, missed: u64) {
    shared.emit_json(
        json!({ "event": "lagged", "forward": shared.label, "missed": missed }).to_string(),
    );
}

/// Runs one forward from its start to its stop.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    spec: ForwardSpec,
    opts: ForwardOptions,
    stop: CancellationToken,
) {
    let src = KubeconfigSource {
        path: spec.kubeconfig.clone(),
        context: spec.context.clone(),
    };
    let loaded = tokio::select! {
        biased;
        () = stop.cancelled() => None,
        r = KubeContext::load(&src) => Some(r),
    };
    let ctx = match loaded {
        None => {
            shared.update(|s| s.phase = Phase::Stopped);
            shared.emit(&Event::Stopped {
                forward: shared.label.clone(),
            });
            return;
        }
        Some(Err(e)) => {
            shared.fail(&e);
            shared.emit(&Event::Error {
                forward: shared.label.clone(),
                message: e.to_string(),
            });
            return;
        }
        Some(Ok(ctx)) => ctx,
    };
    // UDP and proxy forwards get their relay pod from the forwarder, which deletes it when
    // stopped (or dropped).
    let mut fwd = match forwarder_for(ctx, spec, opts) {
        Ok(f) => f,
        Err(e) => {
            shared.fail(&e);
            shared.emit(&Event::Error {
                forward: shared.label.clone(),
                message: e.to_string(),
            });
            return;
        }
    };
    let finish = CancellationToken::new();
    let events = tokio::spawn(pump(shared.clone(), fwd.subscribe(), finish.clone()));
    let started = tokio::select! {
        biased;
        () = stop.cancelled() => None,
        r = fwd.start() => Some(r),
    };
    match started {
        Some(Ok(ports)) => {
            shared.update(|s| {
                s.ports = ports;
                s.live = Some(fwd);
                s.phase = Phase::Ready;
            });
            stop.cancelled().await;
            let live = shared.update(|s| {
                s.phase = Phase::Stopping;
                if let Some(f) = &s.live {
                    s.stats = f.stats();
                }
                s.live.take()
            });
            if let Some(mut fwd) = live {
                fwd.stop().await;
                let stats = fwd.stats();
                shared.update(|s| s.stats = stats);
            }
            shared.update(|s| s.phase = Phase::Stopped);
            finish.cancel();
            let _ = events.await;
        }
        Some(Err(e)) => {
            shared.fail(&e);
            drop(fwd);
            finish.cancel();
            let _ = events.await;
        }
        None => {
            // Dropping the forwarder closes whatever the start had opened.
            drop(fwd);
            shared.update(|s| s.phase = Phase::Stopped);
            finish.cancel();
            let _ = events.await;
            shared.emit(&Event::Stopped {
                forward: shared.label.clone(),
            });
        }
    }
}
