//! How long to wait before the next attempt: a small trait and its default, exponential
//! with jitter, capped, and reset after a healthy period.

use std::time::Duration;

use rand::Rng;

/// A source of delays between attempts. `next()` gives the delay before the next attempt;
/// `reset()` starts over after success.
///
/// # Example
///
/// ```
/// use kforward_core::supervisor::{Backoff, ExponentialBackoff};
/// let mut b = ExponentialBackoff::default().without_jitter();
/// assert_eq!(b.next().map(|d| d.as_millis()), Some(200));
/// assert_eq!(b.next().map(|d| d.as_millis()), Some(400));
/// b.reset();
/// assert_eq!(b.next().map(|d| d.as_millis()), Some(200));
/// ```
pub trait Backoff: Iterator<Item = Duration> + Send {
    /// Starts over from the first delay.
    fn reset(&mut self);
}

/// The default backoff: 200 ms, doubling up to 30 s, each delay drawn within ±20% so many
/// forwards that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// The factor between delays.
    pub factor: f64,
    /// The spread around each delay, as a fraction (0.2 is ±20%).
    pub jitter: f64,
    current: Duration,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            current: Duration::ZERO,
        }
    }
}

impl ExponentialBackoff {
    /// The same backoff with no randomness (for tests and predictable tools).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }
}

impl Iterator for ExponentialBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.current = if self.current.is_zero() {
            self.initial
        } else {
            self.current.mul_f64(self.factor).min(self.max)
        };
        let spread = if self.jitter > 0.0 {
            rand::rng().random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Some(self.current.mul_f64(1.0 + spread).min(self.max))
    }
}

impl Backoff for ExponentialBackoff {
    fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = ExponentialBackoff::default().without_jitter();
        let ms: Vec<u128> = b.take(10).map(|d| d.as_millis()).collect();
        assert_eq!(
            ms,
            vec![200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut b = ExponentialBackoff::default();
        for _ in 0..3 {
            b.next();
        }
        for _ in 0..100 {
            let mut c = b.clone();
            let d = c.next().expect("delay").as_millis();
            assert!((1280..=1920).contains(&d), "{d}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_through_a_backoff_with_paused_time() {
        let mut b = ExponentialBackoff::default().without_jitter();
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(b.next().expect("delay")).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200 + 400 + 800 + 1600)
        );
    }
}
