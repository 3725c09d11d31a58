//! The chaos loop: which fault comes when, and the log of when each one really happened,
//! which [`super::ledger`] reads to tell an expected end of a connection from a bug.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kforward_testkit::Cluster;
use rand::Rng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use super::setup::{KILLABLE_APPS, NAMESPACE};

/// A fault the chaos loop injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A pod of this app (`app=` label) was deleted.
    KillPod {
        /// The pod's `app` label.
        app: String,
        /// The pod's name.
        pod: String,
    },
    /// Every port-forward stream was cut.
    DropStreams,
    /// The API server restarted (every connection to it cut).
    RestartApi,
    /// The API server stopped answering for a while.
    Pause,
    /// The token expired; a new one is in the kubeconfig.
    ExpireToken,
}

impl Fault {
    /// The short name used in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillPod { .. } => "pod killed",
            Fault::DropStreams => "streams dropped",
            Fault::RestartApi => "api restarted",
            Fault::Pause => "api paused",
            Fault::ExpireToken => "token expired",
        }
    }
}

/// A fault as it happened: from `start` to `end` (a restart or a pause lasts a while).
#[derive(Debug, Clone)]
pub struct Happened {
    /// The fault.
    pub fault: Fault,
    /// When the harness began injecting it.
    pub start: Instant,
    /// When it was over (the API server back, the pause lifted).
    pub end: Instant,
}

/// The faults that happened, shared between the chaos loop and the traffic.
#[derive(Debug, Clone, Default)]
pub struct FaultLog(Arc<Mutex<Vec<Happened>>>);

impl FaultLog {
    fn push(&self, h: Happened) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(h);
    }

    /// Every fault so far.
    pub fn all(&self) -> Vec<Happened> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The periods of the faults, scaled down for short runs so that each happens at least once.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Between pod kills (10 s in a long run).
    pub kill_every: Duration,
    /// Between drops of every port-forward stream (30 s).
    pub drop_every: Duration,
    /// Between API server restarts (60 s).
    pub restart_every: Duration,
    /// When the one pause begins, after the start.
    pub pause_at: Duration,
    /// How long the pause lasts (5 s).
    pub pause_for: Duration,
    /// When the token expires, after the start.
    pub expire_at: Duration,
}

impl Schedule {
    /// The schedule for a run of `total`: the long-run periods, shortened for runs under
    /// ten minutes to fit every fault in at least once (kills 6 times, drops 3 times,
    /// restarts twice) with each restart and the pause apart.
    pub fn for_run(total: Duration) -> Schedule {
        let min = |a: Duration, b: Duration| a.min(b);
        Schedule {
            kill_every: min(Duration::from_secs(10), total / 6),
            drop_every: min(Duration::from_secs(30), total / 3),
            restart_every: min(Duration::from_secs(60), total / 2),
            pause_at: total / 4 + Duration::from_secs(2),
            pause_for: min(Duration::from_secs(5), total / 12),
            expire_at: total * 3 / 4 + Duration::from_secs(2),
        }
    }

    /// Every fault in order, as offsets from the start, for a run of `total`; the kinds
    /// are offset from each other (kills at +1 s, drops at +3 s, restarts at +5 s of their
    /// periods) so that two never start together.
    pub fn plan(&self, total: Duration) -> Vec<(Duration, Planned)> {
        let mut plan = Vec::new();
        let mut every = |period: Duration, offset: Duration, what: Planned| {
            let mut t = period + offset;
            while t < total {
                plan.push((t, what));
                t += period;
            }
        };
        every(self.kill_every, Duration::from_secs(1), Planned::KillPod);
        every(
            self.drop_every,
            Duration::from_secs(3),
            Planned::DropStreams,
        );
        every(
            self.restart_every,
            Duration::from_secs(5),
            Planned::RestartApi,
        );
        plan.push((self.pause_at, Planned::Pause));
        plan.push((self.expire_at, Planned::ExpireToken));
        plan.sort_by_key(|(t, _)| *t);
        plan
    }
}

/// A fault to come, before the harness knows which pod it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// Delete a random pod of the soak's workloads.
    KillPod,
    /// [`Cluster::drop_port_forwards`].
    DropStreams,
    /// [`Cluster::restart_api`].
    RestartApi,
    /// [`Cluster::pause`], then [`Cluster::resume`].
    Pause,
    /// [`Cluster::expire_token`].
    ExpireToken,
}

/// Runs the plan from `start` until it is done or `stop` fires, logging every fault.
///
/// # Errors
///
/// When a fault cannot be injected (the API server does not come back).
pub async fn run(
    cluster: &Cluster,
    schedule: &Schedule,
    total: Duration,
    start: Instant,
    log: FaultLog,
    mut rng: StdRng,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    for (at, what) in schedule.plan(total) {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep_until((start + at).into()) => {}
        }
        let begin = Instant::now();
        let fault = match what {
            Planned::KillPod => {
                let app = KILLABLE_APPS[rng.random_range(0..KILLABLE_APPS.len())];
                let pods = cluster.ready_pods(NAMESPACE, &format!("app={app}"));
                if pods.is_empty() {
                    continue;
                }
                let pod = pods[rng.random_range(0..pods.len())]
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_default();
                cluster.delete_pod(NAMESPACE, &pod)?;
                Fault::KillPod {
                    app: app.to_string(),
                    pod,
                }
            }
            Planned::DropStreams => {
                cluster.drop_port_forwards();
                Fault::DropStreams
            }
            Planned::RestartApi => {
                cluster.restart_api().await?;
                Fault::RestartApi
            }
            Planned::Pause => {
                cluster.pause();
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(schedule.pause_for) => {}
                }
                cluster.resume();
                Fault::Pause
            }
            Planned::ExpireToken => {
                cluster.expire_token()?;
                Fault::ExpireToken
            }
        };
        let end = Instant::now();
        eprintln!(
            "soak: t={:.0}s {}{}",
            (begin - start).as_secs_f64(),
            fault.name(),
            match &fault {
                Fault::KillPod { pod, .. } => format!(" ({pod})"),
                _ => String::new(),
            }
        );
        log.push(Happened {
            fault,
            start: begin,
            end,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_gets_every_fault_and_a_long_one_the_full_periods() {
        for secs in [60, 600] {
            let total = Duration::from_secs(secs);
            let s = Schedule::for_run(total);
            let plan = s.plan(total);
            for kind in [
                Planned::KillPod,
                Planned::DropStreams,
                Planned::RestartApi,
                Planned::Pause,
                Planned::ExpireToken,
            ] {
                assert!(plan.iter().any(|(_, p)| *p == kind), "{secs}s: {kind:?}");
            }
            assert!(plan.iter().all(|(t, _)| *t < total));
        }
        let long = Schedule::for_run(Duration::from_secs(600));
        assert_eq!(long.kill_every, Duration::from_secs(10));
        assert_eq!(long.restart_every, Duration::from_secs(60));
        assert_eq!(long.pause_for, Duration::from_secs(5));
    }
}
