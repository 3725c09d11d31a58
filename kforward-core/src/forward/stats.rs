//! The counters of a forward, kept in one place for every front end: a [`Connection`]
//! guard counts a TCP connection or a UDP session while it is open, and every byte carried
//! either way is added as it passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of a forward.
///
/// # Example
///
/// ```
/// let stats = kforward_core::Stats::default();
/// assert_eq!(stats.snapshot().connections_open, 0);
/// ```
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_failed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A copy of a forward's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Connections (TCP) and sessions (UDP peers) open now.
    pub connections_open: u64,
    /// Connections and sessions accepted since the start.
    pub connections_total: u64,
    /// Connections and sessions that could not reach the target.
    pub connections_failed: u64,
    /// Bytes from the target to local clients.
    pub bytes_in: u64,
    /// Bytes from local clients to the target.
    pub bytes_out: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_failed: self.connections_failed.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Counts a new connection (or UDP session) as open until the guard is dropped or
    /// [`Connection::close`]d.
    pub(crate) fn open(self: &Arc<Self>) -> Connection {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        Connection {
            stats: self.clone(),
            open: AtomicBool::new(true),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

/// One open connection or UDP session: open while this lives, its bytes counted into the
/// forward's counters as they pass (from both directions' tasks at once) and kept for its
/// own `connection_closed` event.
#[derive(Debug)]
pub(crate) struct Connection {
    stats: Arc<Stats>,
    open: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Connection {
    /// `n` bytes from the client to the target.
    pub(crate) fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes from the target to the client.
    pub(crate) fn received(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes from the client to the target so far.
    pub(crate) fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes from the target to the client so far.
    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// The connection could not reach the target.
    pub(crate) fn failed(&self) {
        self.failed_request();
        self.close();
    }

    /// One request of the connection could not reach its target, and the connection stays
    /// open (a forward proxy's HTTP client may go on with another request).
    pub(crate) fn failed_request(&self) {
        self.stats
            .connections_failed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// No longer counts as open (its client is gone), even if the guard lives on.
    pub(crate) fn close(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_while_open_and_its_bytes_stay() {
        let stats = Arc::new(Stats::default());
        let a = stats.open();
        let b = stats.open();
        a.sent(10);
        a.received(20);
        b.failed();
        assert_eq!(
            stats.snapshot(),
            StatsSnapshot {
                connections_open: 1,
                connections_total: 2,
                connections_failed: 1,
                bytes_in: 20,
                bytes_out: 10,
            }
        );
        a.close();
        drop(a);
        drop(b);
        assert_eq!(stats.snapshot().connections_open, 0);
    }
}
