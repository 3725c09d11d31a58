//! Per-cluster allocation of loopback IPv4 addresses for pods, services and external hosts.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;

/// Second octets pods are drawn from (`127.A.B.x`).
const POD_OCTETS: RangeInclusive<u8> = 64..=127;
/// Second octets service ClusterIPs are drawn from.
const SERVICE_OCTETS: RangeInclusive<u8> = 128..=191;
/// Second octets external hosts and the DNS server are drawn from.
const EXTERNAL_OCTETS: RangeInclusive<u8> = 192..=250;
/// Usable host numbers per /24 (`.1` to `.254`).
const HOSTS_PER_24: u32 = 254;

/// Hands out loopback addresses for one fake cluster, never reusing one.
///
/// Linux routes all of `127.0.0.0/8` to `lo`, so every pod, service and external host can
/// have its own address. At creation each kind picks a random `127.A.B.0/24` start in its own
/// range of `A` (pods 64..=127, services 128..=191, external 192..=250), so clusters in the
/// same process or in parallel test processes rarely meet; when they do, binding fails and
/// the caller retries on the next address. Addresses are sequential from that start,
/// skipping `.0` and `.255` and rolling into the next /24.
///
/// Cloning is cheap and clones share the same counters.
///
/// # Example
///
/// ```
/// use kforward_testkit::network::AddressPool;
///
/// let pool = AddressPool::new();
/// let pod = pool.next_pod_ip();
/// assert!(pod.is_loopback());
/// assert!(pool.is_pod_ip(pod.into()));
/// assert!(!pool.is_pod_ip(pool.next_service_ip().into()));
/// ```
#[derive(Debug, Clone)]
pub struct AddressPool {
    inner: Arc<Blocks>,
}

#[derive(Debug)]
struct Blocks {
    pods: Block,
    services: Block,
    external: Block,
}

impl AddressPool {
    /// Creates a pool with random, distinct starting blocks.
    pub fn new() -> Self {
        let mut rng = rand::rng();
        let mut pick = |octets: RangeInclusive<u8>| {
            let a = rng.random_range(octets.clone());
            Block::new(octets, a, rng.random::<u8>())
        };
        Self {
            inner: Arc::new(Blocks {
                pods: pick(POD_OCTETS),
                services: pick(SERVICE_OCTETS),
                external: pick(EXTERNAL_OCTETS),
            }),
        }
    }

    /// The next unused pod address.
    pub fn next_pod_ip(&self) -> Ipv4Addr {
        self.inner.pods.next()
    }

    /// The next unused service ClusterIP.
    pub fn next_service_ip(&self) -> Ipv4Addr {
        self.inner.services.next()
    }

    /// The next unused address for an external host or the DNS server.
    pub fn next_external_ip(&self) -> Ipv4Addr {
        self.inner.external.next()
    }

    /// True when `ip` was handed out by [`next_pod_ip`](Self::next_pod_ip) of this pool.
    pub fn is_pod_ip(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(v4) => self.inner.pods.contains(v4),
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.inner.pods.contains(v4)),
        }
    }
}

impl Default for AddressPool {
    fn default() -> Self {
        Self::new()
    }
}

/// A sequence of addresses starting at `127.A.B.1`, wrapping inside its range of `A`.
#[derive(Debug)]
struct Block {
    /// The second octets this block may use.
    octets: RangeInclusive<u8>,
    /// The first /24, as an index into the /24s of `octets`.
    start: u32,
    /// How many addresses were handed out.
    issued: AtomicU32,
}

impl Block {
    fn new(octets: RangeInclusive<u8>, a: u8, b: u8) -> Self {
        let start = u32::from(a.saturating_sub(*octets.start())) * 256 + u32::from(b);
        Self {
            octets,
            start,
            issued: AtomicU32::new(0),
        }
    }

    /// How many /24s the block's range holds.
    fn subnets(&self) -> u32 {
        (u32::from(*self.octets.end()) - u32::from(*self.octets.start()) + 1) * 256
    }

    fn next(&self) -> Ipv4Addr {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        self.address_at(n)
    }

    /// The `n`th address of the block.
    fn address_at(&self, n: u32) -> Ipv4Addr {
        let subnet = (self.start + n / HOSTS_PER_24) % self.subnets();
        let host = 1 + n % HOSTS_PER_24;
        let a = u32::from(*self.octets.start()) + subnet / 256;
        Ipv4Addr::from((127 << 24) | (a << 16) | ((subnet % 256) << 8) | host)
    }

    /// The inverse of [`address_at`](Self::address_at), for addresses inside the range.
    fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let [first, a, b, host] = ip.octets();
        if first != 127 || !self.octets.contains(&a) || host == 0 || host == 255 {
            return None;
        }
        let subnet = u32::from(a - *self.octets.start()) * 256 + u32::from(b);
        let k = (subnet + self.subnets() - self.start) % self.subnets();
        Some(k * HOSTS_PER_24 + u32::from(host) - 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.index_of(ip)
            .is_some_and(|n| n < self.issued.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sequential_hosts_skip_zero_and_broadcast() {
        let block = Block::new(POD_OCTETS, 70, 5);
        assert_eq!(block.address_at(0), Ipv4Addr::new(127, 70, 5, 1));
        assert_eq!(block.address_at(253), Ipv4Addr::new(127, 70, 5, 254));
        assert_eq!(block.address_at(254), Ipv4Addr::new(127, 70, 6, 1));
    }

    #[test]
    fn rolls_over_inside_its_own_range() {
        let block = Block::new(POD_OCTETS, 127, 255);
        assert_eq!(block.address_at(0), Ipv4Addr::new(127, 127, 255, 1));
        assert_eq!(block.address_at(254), Ipv4Addr::new(127, 64, 0, 1));
    }

    #[test]
    fn index_inverts_address() {
        let block = Block::new(SERVICE_OCTETS, 191, 254);
        for n in [0, 1, 253, 254, 255, 600, 70_000] {
            assert_eq!(block.index_of(block.address_at(n)), Some(n));
        }
        assert_eq!(block.index_of(Ipv4Addr::new(127, 191, 0, 0)), None);
        assert_eq!(block.index_of(Ipv4Addr::new(127, 191, 0, 255)), None);
        assert_eq!(block.index_of(Ipv4Addr::new(127, 100, 0, 1)), None);
        assert_eq!(block.index_of(Ipv4Addr::new(10, 191, 254, 1)), None);
    }

    #[test]
    fn kinds_use_distinct_ranges_and_never_repeat() {
        let pool = AddressPool::new();
        let mut seen = HashSet::new();
        for _ in 0..600 {
            let pod = pool.next_pod_ip();
            let svc = pool.next_service_ip();
            let ext = pool.next_external_ip();
            assert!(POD_OCTETS.contains(&pod.octets()[1]), "{pod}");
            assert!(SERVICE_OCTETS.contains(&svc.octets()[1]), "{svc}");
            assert!(EXTERNAL_OCTETS.contains(&ext.octets()[1]), "{ext}");
            for ip in [pod, svc, ext] {
                assert!(ip.is_loopback());
                assert!(!matches!(ip.octets()[3], 0 | 255), "{ip}");
                assert!(seen.insert(ip), "{ip} handed out twice");
            }
        }
    }

    #[test]
    fn is_pod_ip_only_for_issued_pod_addresses() {
        let pool = AddressPool::new();
        let first = pool.next_pod_ip();
        let second = pool.next_pod_ip();
        assert!(pool.is_pod_ip(first.into()));
        assert!(pool.is_pod_ip(second.into()));
        assert!(pool.is_pod_ip(first.to_ipv6_mapped().into()));
        assert!(!pool.is_pod_ip(pool.inner.pods.address_at(2).into()));
        assert!(!pool.is_pod_ip(pool.next_service_ip().into()));
        assert!(!pool.is_pod_ip(pool.next_external_ip().into()));
        assert!(!pool.is_pod_ip(Ipv4Addr::LOCALHOST.into()));
        assert!(!AddressPool::new().is_pod_ip(first.into()));
    }
}
