//! The life of one supervised forward, of any kind: start with backoff, probe, reconnect
//! when unhealthy or when the kubeconfig changed, stop on request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::backoff::{Backoff, ExponentialBackoff};
use super::health::{Health, Transition};
use super::relays::{Lease, RelayPool};
use super::{ForwardStatus, SupervisorEvent, SupervisorOptions};
use crate::client::{KubeContext, KubeconfigSource};
use crate::error::Error;
use crate::forward::{Event, Forward, ForwardOptions, ForwardState, Forwarder};
use crate::forward_proxy::ForwardProxy;
use crate::relay::SharedRelayPods;
use crate::spec::{ForwardSpec, Protocol, Target};

/// How often a running forward's counters are published when they changed.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// The delay when the backoff has none left (the default never runs out).
const MAX_DELAY: Duration = Duration::from_secs(30);

/// What the supervisor asks of a forward's task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Probe now (after sleep or a network change).
    Recheck,
    /// The kubeconfig changed: reload and reconnect when this forward's entries differ.
    KubeconfigChanged,
    /// Stop and end.
    Stop,
}

/// Errors that need the user rather than another attempt.
fn is_fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::BindLocal { .. }
            | Error::Config(_)
            | Error::Spec(_)
            | Error::UnknownContext { .. }
            | Error::AlreadyStarted
    )
}

pub(crate) struct ForwardTask {
    pub(crate) id: usize,
    pub(crate) spec: ForwardSpec,
    pub(crate) opts: SupervisorOptions,
    /// This forward's own settings.
    pub(crate) forward: ForwardOptions,
    pub(crate) events: broadcast::Sender<SupervisorEvent>,
    pub(crate) status: watch::Sender<ForwardStatus>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// Cancelled to stop the forward wherever it is, even in the middle of a start.
    pub(crate) cancel: CancellationToken,
    pub(crate) relays: Arc<RelayPool>,
    /// The shared relay pods this forward uses, once it started.
    pub(crate) lease: Option<Lease>,
    /// The task passing the running forward's events on, awaited at the end so that every
    /// event is out when the supervisor says the forward stopped.
    pub(crate) relay_events: Option<tokio::task::JoinHandle<()>>,
}

impl ForwardTask {
    fn label(&self) -> String {
        self.spec.label()
    }

    fn source(&self) -> KubeconfigSource {
        KubeconfigSource {
            path: self.spec.kubeconfig.clone(),
            context: self.spec.context.clone(),
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(SupervisorEvent { id: self.id, event });
    }

    fn set_state(&self, state: ForwardState, failure: Option<Error>) {
        let changed = self.status.send_if_modified(|st| {
            if let ForwardState::Reconnecting { error, .. } | ForwardState::Failed { error } =
                &state
            {
                st.last_error = Some(error.clone());
            }
            if let Some(e) = failure {
                st.failure = Some(Arc::new(e));
            }
            if st.state == state {
                return false;
            }
            st.state = state.clone();
            true
        });
        if changed {
            self.emit(Event::State {
                forward: self.label(),
                state,
            });
        }
    }

    /// Waits `delay`, or less when told to recheck; `false` when told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            cmd = self.commands.recv() => match cmd {
                None | Some(Command::Stop) => false,
                Some(Command::Recheck | Command::KubeconfigChanged) => true,
            },
        }
    }

    /// Loads the kubeconfig and starts a forward; the error says whether the forward
    /// already reported it as an event.
    async fn try_start(&mut self) -> Result<Box<dyn Forwarder>, (Error, bool)> {
        let ctx = KubeContext::load(&self.source())
            .await
            .map_err(|e| (e, false))?;
        let mut forward = self.forward.clone();
        let relayed = match &self.spec.target {
            Target::Socks(settings) => settings.relay,
            t => self.spec.protocol == Protocol::Udp || t.is_remote(),
        };
        if relayed && forward.relay_pods.is_none() {
            // UDP, remote-address and forward proxy forwards of one cluster share one
            // relay pod per namespace.
            let lease = match self.lease.take() {
                Some(l) => l,
                None => self.relays.acquire(&self.spec, &ctx, &forward.relay),
            };
            forward.relay_pods = Some(SharedRelayPods(lease.pods.clone()));
            self.lease = Some(lease);
        }
        let mut fwd: Box<dyn Forwarder> = match &self.spec.target {
            Target::Socks(_) => Box::new(ForwardProxy::from_spec(ctx, &self.spec, &forward)),
            _ => Box::new(Forward::new(ctx, self.spec.clone(), forward)),
        };
        // Relay the forward's own events under this forward's id.
        let mut rx = fwd.subscribe();
        let (events, id) = (self.events.clone(), self.id);
        let relaying = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        let _ = events.send(SupervisorEvent { id, event });
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let bound = fwd.start().await.map_err(|e| (e, true))?;
        self.relay_events = Some(relaying);
        let handle = fwd.stats_handle();
        self.status.send_modify(|st| {
            st.local_addrs = bound.iter().map(|b| b.local_addr).collect();
            st.ports = bound;
            st.stats_handle = Some(handle);
        });
        Ok(fwd)
    }

    /// Starts the forward, retrying with backoff; `None` when it failed for good or was
    /// stopped before it could start.
    async fn start(&mut self, backoff: &mut ExponentialBackoff) -> Option<Box<dyn Forwarder>> {
        let mut attempt = 0u32;
        loop {
            self.set_state(ForwardState::Starting, None);
            let (e, reported) = match self.try_start().await {
                Ok(f) => return Some(f),
                Err(failed) => failed,
            };
            if !reported {
                self.emit(Event::Error {
                    forward: self.label(),
                    message: e.to_string(),
                });
            }
            if is_fatal(&e) || !self.opts.retry_start {
                let error = e.to_string();
                self.set_state(ForwardState::Failed { error }, Some(e));
                // Wait for a stop: this needs the user.
                while let Some(c) = self.commands.recv().await {
                    if matches!(c, Command::Stop) {
                        break;
                    }
                }
                return None;
            }
            attempt += 1;
            if !self.wait_to_retry(backoff, attempt, &e).await {
                self.set_state(ForwardState::Stopped, None);
                return None;
            }
        }
    }

    /// Reports attempt `attempt` as coming after `error` and waits the backoff's next
    /// delay (less when told to recheck); `false` when told to stop.
    async fn wait_to_retry(
        &mut self,
        backoff: &mut ExponentialBackoff,
        attempt: u32,
        error: &Error,
    ) -> bool {
        let delay = backoff.next().unwrap_or(MAX_DELAY);
        self.set_state(
            ForwardState::Reconnecting {
                attempt,
                next_delay_ms: delay.as_millis() as u64,
                error: error.to_string(),
            },
            None,
        );
        self.pause(delay).await
    }

    /// Reconnects until a probe passes; `false` when stopped meanwhile.
    async fn recover(
        &mut self,
        fwd: &mut Box<dyn Forwarder>,
        backoff: &mut ExponentialBackoff,
        first: Error,
    ) -> bool {
        let mut error = first;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if !self.wait_to_retry(backoff, attempt, &error).await {
                return false;
            }
            let r = match fwd.reconnect(None).await {
                Ok(()) => fwd.probe(self.opts.probe_timeout).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => return true,
                Err(e) => {
                    debug!(forward = %self.label(), error = %e, "reconnect failed");
                    error = e;
                }
            }
        }
    }

    /// Reconnects when the kubeconfig now names another server or other credentials.
    async fn follow_kubeconfig(&self, fwd: &mut Box<dyn Forwarder>) -> bool {
        match KubeContext::load(&self.source()).await {
            Ok(ctx) if ctx.fingerprint() != fwd.context().fingerprint() => {
                info!(forward = %self.label(), context = ctx.context(), server = ctx.server(), "kubeconfig changed; reconnecting");
                if let Err(e) = fwd.reconnect(Some(ctx)).await {
                    self.emit(Event::Error {
                        forward: self.label(),
                        message: e.to_string(),
                    });
                    return true;
                }
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "kubeconfig unreadable for now"),
        }
        false
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = ExponentialBackoff::default();
        let cancel = self.cancel.clone();
        let started = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            f = self.start(&mut backoff) => f,
        };
        if let Some(mut fwd) = started {
            self.set_state(ForwardState::Ready, None);
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = self.supervise(&mut fwd, &mut backoff) => {}
            }
            fwd.stop().await;
            drop(fwd);
            if let Some(relaying) = self.relay_events.take() {
                let _ = relaying.await;
            }
            self.set_state(ForwardState::Stopped, None);
        } else if !matches!(self.status.borrow().state, ForwardState::Failed { .. }) {
            // A forward that failed stays failed; one stopped while starting is stopped.
            self.set_state(ForwardState::Stopped, None);
        }
        if let Some(lease) = self.lease.take() {
            self.relays.release(lease).await;
        }
    }

    /// Keeps a started forward healthy until told to stop.
    async fn supervise(&mut self, fwd: &mut Box<dyn Forwarder>, backoff: &mut ExponentialBackoff) {
        let mut ready_since = Instant::now();
        let mut health = Health::new(self.opts.unhealthy_after);
        let reload = fwd.reload_requested();
        let mut probe = tokio::time::interval(self.opts.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let mut stats_tick = tokio::time::interval(STATS_EVERY);
        let mut last_stats = fwd.stats();
        loop {
            let mut check_now = false;
            tokio::select! {
                _ = probe.tick() => check_now = true,
                _ = stats_tick.tick() => {
                    let now = fwd.stats();
                    if now != last_stats {
                        last_stats = now;
                        self.emit(Event::Stats { forward: self.label(), stats: now });
                    }
                }
                () = reload.notified() => {
                    info!(forward = %self.label(), "credentials rejected; reading the kubeconfig again");
                    if let Err(e) = fwd.reconnect(None).await {
                        self.emit(Event::Error { forward: self.label(), message: e.to_string() });
                        check_now = true;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Stop) => return,
                    Some(Command::Recheck) => check_now = true,
                    Some(Command::KubeconfigChanged) => check_now = self.follow_kubeconfig(fwd).await,
                },
            }
            if !check_now {
                continue;
            }
            let result = fwd.probe(self.opts.probe_timeout).await;
            if let Err(e) = &result {
                debug!(forward = %self.label(), error = %e, "probe failed");
            }
            match health.record(result.is_ok()) {
                Transition::BecameUnhealthy => {
                    if ready_since.elapsed() >= self.opts.healthy_period {
                        backoff.reset();
                    }
                    let Err(e) = result else { continue };
                    if !self.recover(fwd, backoff, e).await {
                        return;
                    }
                    health = Health::new(self.opts.unhealthy_after);
                    self.set_state(ForwardState::Ready, None);
                    ready_since = Instant::now();
                }
                Transition::None | Transition::BecameHealthy => {}
            }
        }
    }
}
