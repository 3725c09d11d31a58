//! Health that flips only after N consecutive results the other way, so one lost probe
//! does not restart a forward and one lucky probe does not declare it well.

/// What a recorded probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The forward just turned unhealthy.
    BecameUnhealthy,
    /// The forward just turned healthy again.
    BecameHealthy,
}

/// Counts consecutive probe results.
///
/// # Example
///
/// ```
/// use kforward_core::supervisor::{Health, Transition};
/// let mut h = Health::new(2);
/// assert_eq!(h.record(false), Transition::None);
/// assert_eq!(h.record(false), Transition::BecameUnhealthy);
/// assert_eq!(h.record(true), Transition::None);
/// assert_eq!(h.record(true), Transition::BecameHealthy);
/// ```
#[derive(Debug, Clone)]
pub struct Health {
    threshold: u32,
    healthy: bool,
    streak: u32,
}

impl Health {
    /// Starts healthy; flips after `threshold` (at least 1) results the other way.
    pub fn new(threshold: u32) -> Self {
        Health {
            threshold: threshold.max(1),
            healthy: true,
            streak: 0,
        }
    }

    /// Whether the forward counts as healthy now.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one probe result.
    pub fn record(&mut self, ok: bool) -> Transition {
        if ok == self.healthy {
            self.streak = 0;
            return Transition::None;
        }
        self.streak += 1;
        if self.streak < self.threshold {
            return Transition::None;
        }
        self.streak = 0;
        self.healthy = ok;
        if ok {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_failure_between_successes_changes_nothing() {
        let mut h = Health::new(3);
        for ok in [true, false, true, false, false, true] {
            assert_eq!(h.record(ok), Transition::None);
        }
        assert!(h.is_healthy());
        assert_eq!(h.record(false), Transition::None);
        assert_eq!(h.record(false), Transition::None);
        assert_eq!(h.record(false), Transition::BecameUnhealthy);
        assert!(!h.is_healthy());
    }
}
