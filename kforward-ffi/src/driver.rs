//! What follows one forward on the runtime: the forward itself runs under the runtime's
//! `Supervisor` (probes, reconnects, shared relay pods, as everywhere else); this module
//! hands its events to the callback in order and keeps the state that `kf_forward_status`
//! and `kf_forward_wait_ready` read.

use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kforward_core::{Event, ForwardState, ForwardStatus, Supervisor, SupervisorEvent};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::result::{Fail, kf_result};
use crate::runtime::CallbackScope;

/// Events queued for a forward's callback before further ones are counted as missed.
const CALLBACK_QUEUE: usize = 1024;

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

/// Where a forward is, as the C ABI tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Loading the kubeconfig, resolving the target, binding.
    Starting,
    /// Listening.
    Ready,
    /// Listening, and reconnecting to the cluster after a failure.
    Reconnecting,
    /// `kf_forward_stop` was called and the forward is closing.
    Stopping,
    /// Stopped by request; nothing is listening.
    Stopped,
    /// Could not start; nothing is listening.
    Failed,
}

impl Phase {
    fn of(state: &ForwardState) -> Phase {
        match state {
            ForwardState::Ready => Phase::Ready,
            ForwardState::Reconnecting { .. } => Phase::Reconnecting,
            ForwardState::Stopped => Phase::Stopped,
            ForwardState::Failed { .. } => Phase::Failed,
            _ => Phase::Starting,
        }
    }
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
    /// The supervisor's last word on the forward, once it is removed from it.
    last: Option<ForwardStatus>,
}

/// A forward's state, shared by its handle and its tasks.
pub(crate) struct Shared {
    label: String,
    supervisor: Supervisor,
    id: usize,
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
    pub(crate) fn new(
        label: String,
        supervisor: Supervisor,
        id: usize,
        callback: Option<Callback>,
    ) -> Self {
        Shared {
            label,
            supervisor,
            id,
            state: Mutex::new(State {
                phase: Phase::Starting,
                failure: None,
                last_error: None,
                last: None,
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

    /// Takes the supervisor's view of the forward: its phase, and why it failed.
    fn follow(&self, status: &ForwardStatus) {
        let phase = Phase::of(&status.state);
        let failure = match (&status.state, status.failure()) {
            (ForwardState::Failed { .. }, Some(e)) => Some((Fail::from(e), e.is_retryable())),
            (ForwardState::Failed { error }, None) => {
                Some((Fail::new(kf_result::KF_INTERNAL, error.clone()), false))
            }
            _ => None,
        };
        self.update(|s| {
            // While kf_forward_stop runs, only the end of the stop changes the phase.
            if s.phase != Phase::Stopping || matches!(phase, Phase::Stopped | Phase::Failed) {
                s.phase = phase;
            }
            if let Some((fail, retryable)) = failure
                && s.failure.is_none()
            {
                s.last_error = Some(LastError {
                    code: Some(fail.code),
                    retryable: Some(retryable),
                    message: fail.message.clone(),
                });
                s.failure = Some(fail);
            }
        });
    }

    /// Stops any further callback call from starting.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// The status as JSON.
    pub(crate) fn status_json(&self) -> String {
        let s = self.lock();
        let status = s
            .last
            .clone()
            .or_else(|| self.supervisor.status_of(self.id));
        let (local_addrs, ports, stats) = match &status {
            Some(st) => (
                st.local_addrs.iter().map(ToString::to_string).collect(),
                json!(st.ports),
                json!(st.stats),
            ),
            None => (
                Vec::new(),
                json!([]),
                json!(kforward_core::StatsSnapshot::default()),
            ),
        };
        json!({
            "forward": self.label,
            "state": s.phase,
            "local_addrs": local_addrs,
            "ports": ports,
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
            Phase::Ready | Phase::Reconnecting => Ok(()),
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

/// What the callback task is handed.
enum Item {
    Event(Event),
    /// Events dropped because the queue was full.
    Lagged(u64),
}

/// Hands the queued events to the callback, one at a time and in order. The status agrees
/// with each event when the callback reads it: `ready` and `error` wait for the start's
/// outcome to be recorded, `stopped` for the stop to be.
async fn callback_loop(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Item>,
    finish: CancellationToken,
) {
    let mut phase = shared.phase.subscribe();
    let mut stopped = false;
    while let Some(item) = queue.recv().await {
        let event = match item {
            Item::Event(e) => e,
            Item::Lagged(missed) => {
                shared.emit_json(
                    json!({ "event": "lagged", "forward": shared.label, "missed": missed })
                        .to_string(),
                );
                continue;
            }
        };
        let is_stop = matches!(event, Event::Stopped { .. });
        let caught_up = phase.wait_for(|p| {
            if is_stop {
                *p == Phase::Stopped
            } else {
                *p != Phase::Starting
            }
        });
        tokio::select! {
            _ = caught_up => {}
            () = finish.cancelled() => {}
        }
        stopped |= is_stop;
        shared.deliver(&event);
    }
    // Stopped before it started: nothing else says so.
    if !stopped && shared.lock().phase == Phase::Stopped {
        shared.emit(&Event::Stopped {
            forward: shared.label.clone(),
        });
    }
}

/// Queues `event` for the callback, or counts it as missed when the callback is too far
/// behind; returns the count still to report.
fn queue_event(queue: &mpsc::Sender<Item>, event: Event, mut missed: u64) -> u64 {
    if missed > 0 && queue.try_send(Item::Lagged(missed)).is_ok() {
        missed = 0;
    }
    if missed == 0 && queue.try_send(Item::Event(event)).is_ok() {
        return 0;
    }
    missed + 1
}

/// Whether the C ABI hands `event` to callbacks: the forward's own events; state changes
/// and counters are in the status instead.
fn for_callback(event: &Event) -> bool {
    !matches!(event, Event::State { .. } | Event::Stats { .. })
}

/// Follows forward `shared.id` (already added to the supervisor, whose events `rx`
/// receives from before the add) until `stop`, then stops it and delivers what is left.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    mut rx: broadcast::Receiver<SupervisorEvent>,
    stop: CancellationToken,
) {
    let (queue, queued) = mpsc::channel(CALLBACK_QUEUE);
    let finish = CancellationToken::new();
    let callbacks = tokio::spawn(callback_loop(shared.clone(), queued, finish.clone()));
    let mut missed = 0u64;
    if let Some(mut status) = shared.supervisor.watch_status(shared.id) {
        let first = status.borrow_and_update().clone();
        shared.follow(&first);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                r = status.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let st = status.borrow_and_update().clone();
                    shared.follow(&st);
                }
                r = rx.recv() => match r {
                    Ok(e) if e.id == shared.id && for_callback(&e.event) => {
                        missed = queue_event(&queue, e.event, missed);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
    shared.update(|s| {
        if s.phase != Phase::Failed {
            s.phase = Phase::Stopping;
        }
    });
    let last = shared.supervisor.stop(shared.id).await;
    if let Some(st) = &last {
        shared.follow(st);
    }
    shared.update(|s| {
        if s.phase == Phase::Stopping {
            s.phase = Phase::Stopped;
        }
        s.last = last;
    });
    // What the stop produced.
    loop {
        match rx.try_recv() {
            Ok(e) if e.id == shared.id && for_callback(&e.event) => {
                missed = queue_event(&queue, e.event, missed);
            }
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(n)) => missed += n,
            Err(_) => break,
        }
    }
    if missed > 0 {
        let _ = queue.send(Item::Lagged(missed)).await;
    }
    drop(queue);
    finish.cancel();
    let _ = callbacks.await;
}
