//! What every forward keeps, whatever its front ends: its state, its events, its counters,
//! the request to read the kubeconfig again, and its relay pods; and how a forward fails
//! and stops. [`Forward`](super::Forward) and the forward proxy both hold one, and the
//! [`Forwarder`](super::Forwarder) trait reads it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use super::event::Event;
use super::frontend::Tasks;
use super::state::ForwardState;
use super::stats::{Stats, StatsSnapshot};
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::relay::{RelayOptions, RelayPods, SharedRelayPods};

/// Events a forward buffers for a slow subscriber before it starts missing some (told
/// as `RecvError::Lagged`). tokio's broadcast channel allocates every slot up front, about
/// 170 bytes each: 1,024 of them were 33 of the 60 MiB that a `kforward run` of 200 idle
/// forwards held (`compare --only idle`). A subscriber that keeps up (the supervisor, the
/// CLI) never has more than a few waiting.
const EVENT_BUFFER: usize = 256;

/// The state, events and counters of one forward, and its relay pods.
///
/// # Example
///
/// ```
/// let shell = kforward_core::Shell::default();
/// assert_eq!(shell.state(), kforward_core::ForwardState::Idle);
/// assert_eq!(shell.stats().connections_open, 0);
/// ```
#[derive(Debug)]
pub struct Shell {
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    reload: Arc<Notify>,
    /// The relay pods in use, and whether this forward owns (and so deletes) them.
    relay: Option<(Arc<RelayPods>, bool)>,
}

impl Default for Shell {
    fn default() -> Self {
        Shell {
            events: broadcast::channel(EVENT_BUFFER).0,
            state: watch::channel(ForwardState::Idle).0,
            stats: Arc::new(Stats::default()),
            reload: Arc::new(Notify::new()),
            relay: None,
        }
    }
}

impl Shell {
    /// The current state.
    pub fn state(&self) -> ForwardState {
        self.state.borrow().clone()
    }

    /// A receiver of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters, readable while the forward is owned elsewhere.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Fires when a connection met rejected credentials.
    pub fn reload_requested(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<ForwardState> {
        self.state.subscribe()
    }

    /// The sender of the events, for the forward's tasks.
    pub(crate) fn events(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    /// Publishes `event` (nobody listening is fine).
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn set_state(&self, state: ForwardState) {
        self.state.send_replace(state);
    }

    /// Takes `shared` relay pods, or makes pods of its own with `ctx` and `opts` (deleted
    /// when the forward stops).
    pub(crate) fn use_relay(
        &mut self,
        shared: Option<&SharedRelayPods>,
        ctx: &KubeContext,
        opts: &RelayOptions,
    ) -> Arc<RelayPods> {
        let pods = match shared {
            Some(s) => (s.0.clone(), false),
            None => (RelayPods::new(ctx.clone(), opts.clone()), true),
        };
        let p = pods.0.clone();
        self.relay = Some(pods);
        p
    }

    /// The relay pods in use, once started.
    pub(crate) fn relay_pods(&self) -> Option<Arc<RelayPods>> {
        self.relay.as_ref().map(|(p, _)| p.clone())
    }

    /// Deletes the relay pods this forward owns.
    pub(crate) async fn release_relay(&mut self) {
        if let Some((pods, true)) = self.relay.take() {
            pods.delete_all().await;
        }
    }

    /// Ends a start: `ready` when it succeeded, else `failed` (with an `error` event naming
    /// `label`, and owned relay pods deleted).
    ///
    /// # Errors
    ///
    /// The start's.
    pub(crate) async fn started<T>(&mut self, label: &str, start: Result<T>) -> Result<T> {
        match start {
            Ok(t) => {
                self.set_state(ForwardState::Ready);
                Ok(t)
            }
            Err(e) => {
                self.failed(label, &e).await;
                Err(e)
            }
        }
    }

    /// Records a failed start.
    pub(crate) async fn failed(&mut self, label: &str, e: &Error) {
        self.release_relay().await;
        self.set_state(ForwardState::Failed {
            error: e.to_string(),
        });
        self.emit(Event::Error {
            forward: label.to_string(),
            message: e.to_string(),
        });
    }

    /// Stops `tasks` (open connections get `grace` to finish), deletes owned relay pods,
    /// and says so.
    pub(crate) async fn stop(&mut self, tasks: Tasks, grace: Duration, label: &str) {
        tasks.drain(grace).await;
        self.release_relay().await;
        self.set_state(ForwardState::Stopped);
        self.emit(Event::Stopped {
            forward: label.to_string(),
        });
    }
}
