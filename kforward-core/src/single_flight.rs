//! One run of a check for everyone asking the same question at once.
//!
//! A `kforward run` of 200 forwards to one service starts them together, and each asks the
//! same things: its endpoint watch (list, then watch) and, every probe round, whether the
//! API server answers and a tunnel to the pod opens. Asked 200 times at once, that is 200
//! lists and watches, 200 `/version` calls and 200 tunnels held open for a probe's
//! listening time: an API server load and a memory peak for questions with one answer.
//! Here a run that is in progress is waited for instead of repeated, and its success
//! stands for [`FRESH_FOR`]. A failure is never shared: whoever saw one run fail runs the
//! check itself, so its error (a 401 to reload credentials on, a missing pod) is its own,
//! and failing callers retry side by side rather than one after another.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a run's success answers for everyone asking the same question. Well under the
/// supervisor's probe interval (10 s by default), so a forward's probe still reflects the
/// last seconds.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(2);

/// The runs of one context, by what they answer (`version`, a pod's port, a watch's key).
#[derive(Default)]
pub(crate) struct SingleFlight {
    checks: Mutex<HashMap<String, Check>>,
}

#[derive(Default)]
struct Check {
    /// When it last succeeded.
    ok_at: Option<Instant>,
    /// The run in progress: `Some(ok)` once it ended.
    running: Option<watch::Receiver<Option<bool>>>,
}

impl Check {
    fn fresh(&self) -> bool {
        self.ok_at.is_some_and(|t| t.elapsed() < FRESH_FOR)
    }
}

enum Plan {
    Fresh,
    Wait(watch::Receiver<Option<bool>>),
    Run(watch::Sender<Option<bool>>),
}

impl SingleFlight {
    /// The result of `check` for `key`: a recent success of someone else's run, the success
    /// of one running now, or else this caller's own run of `check`.
    pub(crate) async fn run<E, F, Fut>(&self, key: String, check: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let plan = {
            let mut checks = self.lock();
            // Forget what is neither running nor fresh: keys name pods, which come and go
            // over a long-running forward's life.
            checks.retain(|_, c| c.running.is_some() || c.fresh());
            let c = checks.entry(key.clone()).or_default();
            if c.fresh() {
                Plan::Fresh
            } else if let Some(rx) = c.running.clone() {
                Plan::Wait(rx)
            } else {
                let (tx, rx) = watch::channel(None);
                c.running = Some(rx);
                Plan::Run(tx)
            }
        };
        match plan {
            Plan::Fresh => Ok(()),
            Plan::Wait(mut rx) => {
                // The running check is bounded by its caller's timeout; should its forward
                // be dropped mid-way, the sender goes and this one probes itself.
                let shared = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
                if shared == Some(true) {
                    Ok(())
                } else {
                    check().await
                }
            }
            Plan::Run(tx) => {
                // Clears `running` even if this future is dropped before the check ends.
                let guard = Running { share: self, key };
                let result = check().await;
                if result.is_ok() {
                    guard.succeeded();
                }
                drop(guard);
                let _ = tx.send(Some(result.is_ok()));
                result
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Check>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A run in progress; dropping it (at the end, or when the probing future is dropped)
/// marks the check as not running.
struct Running<'a> {
    share: &'a SingleFlight,
    key: String,
}

impl Running<'_> {
    fn succeeded(&self) {
        if let Some(c) = self.share.lock().get_mut(&self.key) {
            c.ok_at = Some(Instant::now());
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.share.lock().get_mut(&self.key) {
            c.running = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn concurrent_checks_of_one_thing_run_once_and_a_success_is_reused() {
        let share = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = watch::channel(false);
        let mut all = Vec::new();
        for _ in 0..50 {
            let (share, runs, mut gate) = (share.clone(), runs.clone(), gate.clone());
            all.push(tokio::spawn(async move {
                share
                    .run::<(), _, _>("demo/web-1:8080".into(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(())
                    })
                    .await
            }));
        }
        // Every task is waiting on the one run (or is that run) before it may end.
        tokio::time::timeout(WAIT, async {
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a run started");
        release.send(true).expect("gate");
        for t in all {
            let r = tokio::time::timeout(WAIT, t).await.expect("in time");
            assert!(r.expect("task").is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one check for 50 forwards");
        // Fresh: answered without running.
        let again = share
            .run::<(), _, _>("demo/web-1:8080".into(), || async {
                panic!("a fresh success is reused")
            })
            .await;
        assert!(again.is_ok());
        // Another pod is another question.
        let other = share
            .run("demo/web-2:8080".into(), || async { Err("refused") })
            .await;
        assert_eq!(other, Err("refused"));
    }

    #[tokio::test]
    async fn a_failure_is_not_shared_each_waiter_checks_for_itself() {
        let share = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = watch::channel(false);
        let first = {
            let (share, runs, mut gate) = (share.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                share
                    .run("k".into(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Err("401")
                    })
                    .await
            })
        };
        tokio::time::timeout(WAIT, async {
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first run started");
        let second = {
            let (share, runs) = (share.clone(), runs.clone());
            tokio::spawn(async move {
                share
                    .run("k".into(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Err("its own error")
                    })
                    .await
            })
        };
        release.send(true).expect("gate");
        let a = tokio::time::timeout(WAIT, first).await.expect("in time");
        let b = tokio::time::timeout(WAIT, second).await.expect("in time");
        assert_eq!(a.expect("task"), Err("401"));
        assert_eq!(b.expect("task"), Err("its own error"));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Nothing fresh after failures: the next check runs.
        let next = share
            .run::<&str, _, _>("k".into(), || async { Ok(()) })
            .await;
        assert!(next.is_ok());
    }

    #[tokio::test]
    async fn a_run_dropped_midway_lets_the_next_caller_check() {
        let share = Arc::new(SingleFlight::default());
        let stuck = {
            let share = share.clone();
            tokio::spawn(async move {
                share
                    .run::<(), _, _>("k".into(), std::future::pending)
                    .await
            })
        };
        tokio::time::timeout(WAIT, async {
            while share
                .checks
                .lock()
                .expect("lock")
                .get("k")
                .is_none_or(|c| c.running.is_none())
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the run started");
        stuck.abort();
        let _ = stuck.await;
        let r = tokio::time::timeout(WAIT, share.run::<(), _, _>("k".into(), || async { Ok(()) }))
            .await
            .expect("not left waiting on the dropped run");
        assert!(r.is_ok());
        // What is neither running nor fresh is forgotten: pods come and go.
        let gone = share
            .run("gone-pod".into(), || async { Err("refused") })
            .await;
        assert_eq!(gone, Err("refused"));
        let _ = share
            .run::<(), _, _>("next".into(), || async { Ok(()) })
            .await;
        assert!(!share.lock().contains_key("gone-pod"));
    }
}
