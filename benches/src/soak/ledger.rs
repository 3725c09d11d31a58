//! What became of every connection, and which ends the faults explain.
//!
//! A connection may end early only because a fault cut it: its pod was killed, or its
//! port-forward stream was cut (dropped, or the API server restarted). The harness learns
//! which pod each connection reached from kforward's own `connection_opened` events (their
//! `peer` is the harness's local address, their `pod` the pod kforward chose), and the
//! fault by time: an early end is expected when, while the connection was open and at most
//! [`CUT_WINDOW`] before it ended, a stream-cutting fault happened, or its pod was killed
//! (any pod it went to: kforward's `connection_moved` event names the next one when the
//! runtime said the first was gone).
//! For connections through the relay pod (whose event names the relay, not the echo pod
//! behind it) and any whose event was not seen, a killed pod of an app behind the forward
//! counts. Any other early end is unexpected. A connection that never got a byte back
//! (refused or reset at once) is a refusal, allowed only inside the API server's down
//! windows (a restart or the pause, plus [`RECOVERY`] for kforward to reconnect).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::chaos::{Fault, Happened};

/// How long after a fault an end it caused may be noticed: a cut stream is seen at once,
/// a killed pod's connections close after its grace period, a dropped stream under a
/// slow reader after its buffered bytes are read.
pub const CUT_WINDOW: Duration = Duration::from_secs(15);
/// How long after the API server is back kforward may take to reconnect (its backoff).
pub const RECOVERY: Duration = Duration::from_secs(15);

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// It ran its course: half-closed and read everything back.
    Completed,
    /// It ended before that, after bytes came back, for this reason.
    Early(String),
    /// No byte ever came back: the connect failed, or the stream was reset or closed.
    Refused(String),
}

/// One connection (or UDP flow, or short external request) and its fate.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The forward's alias.
    pub forward: String,
    /// The `app` labels of the pods behind it (plus `relay` for relay-pod forwards).
    pub apps: Vec<&'static str>,
    /// The pods kforward sent it to, from its `connection_opened` event and any
    /// `connection_moved` after it (empty when none was seen).
    pub pods: Vec<String>,
    /// When it began.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// How.
    pub how: End,
}

/// The verdict on all outcomes.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Connections that ran their course.
    pub completed: u64,
    /// Early ends a fault explains, by the fault's name.
    pub expected_ends: BTreeMap<&'static str, u64>,
    /// Early ends no fault explains, with a sample of reasons.
    pub unexpected_ends: u64,
    /// Refusals inside the API server's down windows (or explained by a cut).
    pub refused_while_down: u64,
    /// Refusals outside them.
    pub refused: u64,
    /// Up to ten descriptions of unexpected ends and refusals, for the report.
    pub samples: Vec<String>,
}

/// The fault that explains an early end of `o`, if any.
fn explained_by<'a>(o: &Outcome, faults: &'a [Happened]) -> Option<&'a Fault> {
    faults
        .iter()
        .filter(|h| {
            h.start
                >= o.start
                    .checked_sub(Duration::from_millis(100))
                    .unwrap_or(o.start)
        })
        .filter(|h| h.start <= o.end && o.end <= h.end + CUT_WINDOW)
        .map(|h| &h.fault)
        .find(|f| match f {
            Fault::DropStreams | Fault::RestartApi => true,
            Fault::KillPod { app, pod } => {
                if o.pods.is_empty() || o.apps.contains(&"relay") {
                    o.apps.iter().any(|a| a == app)
                } else {
                    o.pods.contains(pod)
                }
            }
            Fault::Pause | Fault::ExpireToken => false,
        })
}

/// Whether `at` is inside a down window of the API server.
fn while_down(at: Instant, faults: &[Happened]) -> bool {
    faults.iter().any(|h| {
        matches!(h.fault, Fault::RestartApi | Fault::Pause)
            && h.start <= at
            && at <= h.end + RECOVERY
    })
}

/// Classifies every outcome against the faults that happened; the samples give times as
/// seconds since `origin` (the start of the traffic).
pub fn judge(outcomes: &[Outcome], faults: &[Happened], origin: Instant) -> Verdict {
    let mut v = Verdict::default();
    let secs = |t: Instant| t.saturating_duration_since(origin).as_secs_f64();
    let sample = |v: &mut Verdict, o: &Outcome, what: &str| {
        if v.samples.len() < 10 {
            v.samples.push(format!(
                "{} (t={:.1}s to {:.1}s): {what}",
                o.forward,
                secs(o.start),
                secs(o.end)
            ));
        }
    };
    for o in outcomes {
        match &o.how {
            End::Completed => v.completed += 1,
            End::Early(why) => match explained_by(o, faults) {
                Some(f) => *v.expected_ends.entry(f.name()).or_default() += 1,
                None => {
                    v.unexpected_ends += 1;
                    let pods = if o.pods.is_empty() {
                        "no connection_opened event seen".to_string()
                    } else {
                        o.pods.join(", then ")
                    };
                    sample(&mut v, o, &format!("ended early: {why} (its pods: {pods})"));
                }
            },
            End::Refused(why) => {
                if while_down(o.start, faults)
                    || while_down(o.end, faults)
                    || explained_by(o, faults).is_some()
                {
                    v.refused_while_down += 1;
                } else {
                    v.refused += 1;
                    sample(&mut v, o, &format!("refused: {why}"));
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(apps: Vec<&'static str>, start: Instant, end: Instant, how: End) -> Outcome {
        Outcome {
            forward: "f".into(),
            apps,
            pods: Vec::new(),
            start,
            end,
            how,
        }
    }

    #[test]
    fn only_a_fault_on_the_connections_path_explains_its_end() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let kill = Happened {
            fault: Fault::KillPod {
                app: "echo-a".into(),
                pod: "echo-a-x".into(),
            },
            start: at(10),
            end: at(10),
        };
        let restart = Happened {
            fault: Fault::RestartApi,
            start: at(100),
            end: at(101),
        };
        let faults = vec![kill, restart];
        let early = || End::Early("reset".into());
        let outcomes = vec![
            outcome(vec!["echo-a"], at(1), at(11), early()),
            outcome(vec!["echo-b"], at(1), at(11), early()),
            outcome(vec!["echo-a"], at(1), at(50), early()),
            outcome(vec!["echo-b"], at(90), at(102), early()),
            outcome(
                vec!["echo-b"],
                at(105),
                at(105),
                End::Refused("reset".into()),
            ),
            outcome(
                vec!["echo-b"],
                at(150),
                at(150),
                End::Refused("reset".into()),
            ),
            outcome(vec!["echo-b"], at(1), at(150), End::Completed),
        ];
        let mut on_other_pod = outcome(vec!["echo-a"], at(1), at(11), early());
        on_other_pod.pods = vec!["echo-a-y".into()];
        // Moved from a gone pod to the one killed later: its end is explained.
        let mut moved_to_it = outcome(vec!["echo-a"], at(1), at(11), early());
        moved_to_it.pods = vec!["echo-a-y".into(), "echo-a-x".into()];
        let mut outcomes = outcomes;
        outcomes.push(on_other_pod);
        outcomes.push(moved_to_it);
        let v = judge(&outcomes, &faults, t0);
        assert_eq!(v.completed, 1);
        assert_eq!(v.expected_ends.get("pod killed"), Some(&2));
        assert_eq!(v.expected_ends.get("api restarted"), Some(&1));
        assert_eq!(v.unexpected_ends, 3, "{:?}", v.samples);
        assert_eq!(v.refused_while_down, 1);
        assert_eq!(v.refused, 1);
    }
}
