//! The life of one supervised forward: start with backoff, probe, reconnect when unhealthy
//! or when the kubeconfig changed, stop on request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{debug, info};

use super::backoff::{Backoff, ExponentialBackoff};
use super::health::{Health, Transition};
use super::{ForwardStatus, SupervisorEvent, SupervisorOptions};
use crate::error::Error;
use crate::event::Event;
use crate::forwarder::{ForwardState, Forwarder, TcpForwarder};
use crate::spec::ForwardSpec;
use crate::{KubeContext, KubeconfigSource};

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
    /// This forward's own settings (the relay pods it shares, for one).
    pub(crate) forward: crate::forwarder::ForwardOptions,
    pub(crate) events: broadcast::Sender<SupervisorEvent>,
    pub(crate) status: Arc<Mutex<ForwardStatus>>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    fn set_state(&self, state: ForwardState) {
        {
            let mut st = lock(&self.status);
            if st.state == state {
                return;
            }
            st.state = state.clone();
            if let ForwardState::Reconnecting { error, .. } | ForwardState::Failed { error } =
                &state
            {
                st.last_error = Some(error.clone());
            }
        }
        self.emit(Event::State {
            forward: self.label(),
            state,
        });
    }

    /// Waits `delay`, or less when told to recheck; `false` when told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            cmd = self.commands.recv() => match cmd {
                None | Some(Command::Stop) => false,
                Some(Command::Recheck | Command::KubeconfigChanged) => true,
            },
        }
    }

    async fn try_start(&self) -> Result<TcpForwarder, Error> {
        let ctx = KubeContext::load(&self.source()).await?;
        let mut fwd = TcpForwarder::new(ctx, self.spec.clone(), self.forward.clone());
        // Relay the forwarder's own events under this forward's id.
        let mut rx = fwd.subscribe();
        let events = self.events.clone();
        let id = self.id;
        tokio::spawn(async move {
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
        let bound = fwd.start().await?;
        let mut st = lock(&self.status);
        st.local_addrs = bound.iter().map(|b| b.local_addr).collect();
        st.stats_handle = Some(fwd.stats_handle());
        Ok(fwd)
    }

    /// Starts the forward, retrying with backoff; `None` when stopped before it could.
    async fn start(&mut self, backoff: &mut ExponentialBackoff) -> Option<TcpForwarder> {
        let mut attempt = 0u32;
        loop {
            self.set_state(ForwardState::Starting);
            match self.try_start().await {
                Ok(f) => return Some(f),
                Err(e) if is_fatal(&e) => {
                    self.set_state(ForwardState::Failed {
                        error: e.to_string(),
                    });
                    // Wait for a stop; a fatal error needs the user.
                    loop {
                        match self.commands.recv().await {
                            None | Some(Command::Stop) => return None,
                            Some(_) => {}
                        }
                    }
                }
                Err(e) => {
                    attempt += 1;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    self.set_state(ForwardState::Reconnecting {
                        attempt,
                        next_delay_ms: delay.as_millis() as u64,
                        error: e.to_string(),
                    });
                    if !self.pause(delay).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Reconnects until a probe passes; `false` when stopped meanwhile.
    async fn recover(
        &mut self,
        fwd: &mut TcpForwarder,
        backoff: &mut ExponentialBackoff,
        first: Error,
    ) -> bool {
        let mut error = first;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
            self.set_state(ForwardState::Reconnecting {
                attempt,
                next_delay_ms: delay.as_millis() as u64,
                error: error.to_string(),
            });
            if !self.pause(delay).await {
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

    /// UDP and proxy forwards: started with backoff like any other; their tunnels go to a
    /// relay pod that the relay connector replaces by itself when it goes away.
    async fn run_relayed(mut self) {
        let mut backoff = ExponentialBackoff::default();
        let mut attempt = 0u32;
        let mut fwd = loop {
            self.set_state(ForwardState::Starting);
            let started = async {
                let ctx = KubeContext::load(&self.source()).await?;
                let mut f =
                    crate::forwarder::forwarder_for(ctx, self.spec.clone(), self.forward.clone())?;
                let mut rx = f.subscribe();
                let (events, id) = (self.events.clone(), self.id);
                tokio::spawn(async move {
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
                let bound = f.start().await?;
                lock(&self.status).local_addrs = bound.iter().map(|b| b.local_addr).collect();
                Ok::<_, Error>(f)
            }
            .await;
            match started {
                Ok(f) => break f,
                Err(e) if is_fatal(&e) => {
                    self.set_state(ForwardState::Failed {
                        error: e.to_string(),
                    });
                    while let Some(c) = self.commands.recv().await {
                        if matches!(c, Command::Stop) {
                            break;
                        }
                    }
                    self.set_state(ForwardState::Stopped);
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    self.set_state(ForwardState::Reconnecting {
                        attempt,
                        next_delay_ms: delay.as_millis() as u64,
                        error: e.to_string(),
                    });
                    if !self.pause(delay).await {
                        self.set_state(ForwardState::Stopped);
                        return;
                    }
                }
            }
        };
        self.set_state(ForwardState::Ready);
        while let Some(c) = self.commands.recv().await {
            if matches!(c, Command::Stop) {
                break;
            }
        }
        fwd.stop().await;
        self.set_state(ForwardState::Stopped);
    }

    pub(crate) async fn run(self) {
        let relayed = self.spec.protocol == crate::spec::Protocol::Udp
            || matches!(self.spec.target, crate::spec::Target::Proxy { .. });
        if relayed {
            self.run_relayed().await;
        } else {
            self.run_tcp().await;
        }
    }

    async fn run_tcp(mut self) {
        let mut backoff = ExponentialBackoff::default();
        let Some(mut fwd) = self.start(&mut backoff).await else {
            self.set_state(ForwardState::Stopped);
            return;
        };
        self.set_state(ForwardState::Ready);
        let mut ready_since = Instant::now();
        let mut health = Health::new(self.opts.unhealthy_after);
        let reload = fwd.reload_requested();
        let mut probe = tokio::time::interval(self.opts.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
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
                _ = reload.notified() => {
                    info!(forward = %self.label(), "credentials rejected; reading the kubeconfig again");
                    if let Err(e) = fwd.reconnect(None).await {
                        self.emit(Event::Error { forward: self.label(), message: e.to_string() });
                        check_now = true;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(Command::Recheck) => check_now = true,
                    Some(Command::KubeconfigChanged) => {
                        match KubeContext::load(&self.source()).await {
                            Ok(ctx) if ctx.fingerprint() != fwd.context().fingerprint() => {
                                info!(forward = %self.label(), context = ctx.context(), server = ctx.server(), "kubeconfig changed; reconnecting");
                                if let Err(e) = fwd.reconnect(Some(ctx)).await {
                                    self.emit(Event::Error { forward: self.label(), message: e.to_string() });
                                    check_now = true;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => debug!(error = %e, "kubeconfig unreadable for now"),
                        }
                    }
                },
            }
            if !check_now {
                continue;
            }
            let result = fwd.probe(self.opts.probe_timeout).await;
            if let Err(e) = &result {
                debug!(forward = %self.label(), error = %e, "probe failed");
            }
            let ok = result.is_ok();
            match health.record(ok) {
                Transition::BecameUnhealthy => {
                    if ready_since.elapsed() >= self.opts.healthy_period {
                        backoff.reset();
                    }
                    let Err(e) = result else { continue };
                    if !self.recover(&mut fwd, &mut backoff, e).await {
                        break;
                    }
                    health = Health::new(self.opts.unhealthy_after);
                    self.set_state(ForwardState::Ready);
                    ready_since = Instant::now();
                }
                Transition::None | Transition::BecameHealthy => {}
            }
        }
        fwd.stop().await;
        self.set_state(ForwardState::Stopped);
    }
}
