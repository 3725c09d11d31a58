//! Noticing that the machine slept (the wall clock jumped against the monotonic clock) or
//! that its network changed (its local addresses differ), so every forward is checked at
//! once instead of at its next probe.

use std::time::{Duration, Instant, SystemTime};

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct ClockReading {
    wall: SystemTime,
    mono: Instant,
}

impl ClockReading {
    /// Reads both clocks now.
    pub fn now() -> Self {
        ClockReading {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// A reading from explicit values (for tests).
    pub fn at(wall: SystemTime, mono: Instant) -> Self {
        ClockReading { wall, mono }
    }
}

/// Whether the wall clock moved more than `threshold` beyond the monotonic clock between
/// two readings: a suspended machine's monotonic clock stands still while its wall clock
/// does not (and a clock set by hand or by NTP shows the same way).
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use kforward_core::supervisor::{ClockReading, clock_jumped};
/// let (w, m) = (SystemTime::now(), Instant::now());
/// let before = ClockReading::at(w, m);
/// let slept = ClockReading::at(w + Duration::from_secs(600), m + Duration::from_secs(2));
/// assert!(clock_jumped(before, slept, Duration::from_secs(5)));
/// ```
pub fn clock_jumped(before: ClockReading, after: ClockReading, threshold: Duration) -> bool {
    let mono = after.mono.saturating_duration_since(before.mono);
    let wall = match after.wall.duration_since(before.wall) {
        Ok(d) => d,
        // The wall clock went backwards: a jump too.
        Err(e) => return e.duration() > threshold,
    };
    wall.saturating_sub(mono) > threshold
}

/// A digest of this machine's local addresses; `None` where it cannot be read.
pub fn network_fingerprint() -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut any = false;
    // Linux: local IPv4 addresses in the FIB, and the IPv6 address table.
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut lines: Vec<&str> = trie
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("|--"))
            .collect();
        lines.sort_unstable();
        lines.dedup();
        lines.hash(&mut h);
        any = true;
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        let mut lines: Vec<&str> = v6.lines().collect();
        lines.sort_unstable();
        lines.hash(&mut h);
        any = true;
    }
    any.then(|| h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_clocks_are_no_jump() {
        let (w, m) = (SystemTime::now(), Instant::now());
        let a = ClockReading::at(w, m);
        let b = ClockReading::at(w + Duration::from_secs(2), m + Duration::from_secs(2));
        assert!(!clock_jumped(a, b, Duration::from_secs(5)));
        let back = ClockReading::at(w - Duration::from_secs(60), m + Duration::from_secs(1));
        assert!(clock_jumped(a, back, Duration::from_secs(5)));
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(network_fingerprint(), network_fingerprint());
    }
}
