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
    /// The same refusals by the fault that cut them or whose window holds them.
    pub refused_by_fault: BTreeMap<&'static str, FaultRefusals>,
    /// Refusals outside them.
    pub refused: u64,
    /// Up to ten descriptions of unexpected ends and refusals, for the report.
    pub samples: Vec<String>,
}

/// The refusals one fault explains.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FaultRefusals {
    /// How many.
    pub count: u64,
    /// The latest start of one, in seconds after the fault began (0 for one begun
    /// before it): near 0,
    /// they were all caught by the fault as it struck (in flight, no byte back yet);
    /// larger, a connection that began while the API server was down failed instead of
    /// waiting for it.
    pub latest_start_s: f64,
    /// Up to three: the forward, when it began relative to the fault, and the reason.
    pub samples: Vec<String>,
}

/// The fault that explains an early end of `o`, if any.
fn explained_by<'a>(o: &Outcome, faults: &'a [Happened]) -> Option<&'a Happened> {
    faults
        .iter()
        .filter(|h| {
            h.start
                >= o.start
                    .checked_sub(Duration::from_millis(100))
                    .unwrap_or(o.start)
        })
        .filter(|h| h.start <= o.end && o.end <= h.end + CUT_WINDOW)
        .find(|h| match &h.fault {
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

/// The down window of the API server (a restart or the pause, plus [`RECOVERY`]) that
/// holds `at`, if any.
fn down_window(at: Instant, faults: &[Happened]) -> Option<&Happened> {
    faults.iter().find(|h| {
        matches!(h.fault, Fault::RestartApi | Fault::Pause)
            && h.start <= at
            && at <= h.end + RECOVERY
    })
}

/// Where `at` lies against `h`, for a refusal's sample: seconds before its start, after
/// it, or after its end once it is over.
fn relative(at: Instant, h: &Happened) -> String {
    let since = |t: Instant| at.saturating_duration_since(t).as_secs_f64();
    if at < h.start {
        format!(
            "{:.2}s before it",
            h.start.saturating_duration_since(at).as_secs_f64()
        )
    } else if at <= h.end {
        format!("{:.2}s into it", since(h.start))
    } else {
        format!("{:.2}s after it ended", since(h.end))
    }
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
                Some(h) => *v.expected_ends.entry(h.fault.name()).or_default() += 1,
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
                // A cut on its path comes first: a connection that began during the pause
                // and waited it out, then was cut by a stream drop (the chaos loop runs a
                // drop that fell due during the pause right after it), was cut, not refused
                // by the pause.
                let fault = explained_by(o, faults)
                    .or_else(|| down_window(o.start, faults))
                    .or_else(|| down_window(o.end, faults));
                if let Some(h) = fault {
                    let (name, when) = (h.fault.name(), relative(o.start, h));
                    let into = o.start.saturating_duration_since(h.start);
                    v.refused_while_down += 1;
                    let r = v.refused_by_fault.entry(name).or_default();
                    r.count += 1;
                    r.latest_start_s = r.latest_start_s.max(into.as_secs_f64());
                    if r.samples.len() < 3 {
                        r.samples.push(format!(
                            "{} at t={:.1}s ({when}): {why}",
                            o.forward,
                            secs(o.start)
                        ));
                    }
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

    /// A connection that began during the pause, waited it out and was cut by the stream
    /// drop that ran right after it counts against the drop; one that failed during the
    /// pause with no cut, against the pause, with how far into it it began.
    #[test]
    fn a_refusal_goes_to_the_cut_that_ended_it_before_the_window_that_holds_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let faults = vec![
            Happened {
                fault: Fault::Pause,
                start: at(30_000),
                end: at(35_000),
            },
            Happened {
                fault: Fault::DropStreams,
                start: at(35_010),
                end: at(35_020),
            },
        ];
        let refused = || End::Refused("closed before any byte came back".into());
        let outcomes = vec![
            outcome(vec!["echo-a"], at(32_000), at(35_030), refused()),
            outcome(vec!["echo-a"], at(33_500), at(33_600), refused()),
        ];
        let v = judge(&outcomes, &faults, t0);
        assert_eq!(v.refused, 0);
        assert_eq!(v.refused_while_down, 2);
        assert_eq!(v.refused_by_fault["streams dropped"].count, 1);
        let paused = &v.refused_by_fault["api paused"];
        assert_eq!(paused.count, 1);
        assert_eq!(paused.latest_start_s, 3.5);
        assert!(paused.samples[0].contains("3.50s into it"));
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
        // The refusal at t=105 lies 4 s after the restart ended, inside its recovery.
        let restarted = &v.refused_by_fault["api restarted"];
        assert_eq!(restarted.count, 1);
        assert_eq!(v.refused_by_fault.len(), 1);
        let samples = &restarted.samples;
        assert!(samples[0].contains("4.00s after it ended"), "{samples:?}");
        assert_eq!(restarted.latest_start_s, 5.0);
        assert_eq!(v.refused, 1);
    }
}
