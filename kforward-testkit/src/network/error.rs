//! Errors of the loopback network: binding servers, workload configuration and DNS.

use std::io;
use std::net::SocketAddr;

use super::protocol::Protocol;

/// Result alias for the network module.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// A failure while starting a pod workload, a service proxy, the DNS server or an external host.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A server could not listen on its address.
    #[error("could not listen on {protocol} {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address the server tried to listen on.
        addr: SocketAddr,
        /// TCP or UDP.
        protocol: Protocol,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A bound socket could not report its own address.
    #[error("could not read the local address of the socket bound for {addr}: {source}")]
    LocalAddr {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A pod's image or environment does not describe a workload that can run.
    #[error("pod {pod} (image {image}) is misconfigured: {reason}")]
    BadImageConfig {
        /// The container image.
        image: String,
        /// The pod, as `namespace/name`.
        pod: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl NetworkError {
    /// True when a bind failed because the address is taken, so the caller can retry on a
    /// fresh IP from its [`AddressPool`](super::AddressPool).
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, Self::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }

    /// True when a bind failed for lack of permission, typically a port below 1024 without
    /// root or `CAP_NET_BIND_SERVICE` (see `net.ipv4.ip_unprivileged_port_start`); retrying
    /// on another IP will not help.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Bind { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// What to do about a failed bind, appended to its message.
fn bind_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => " (the address is taken; retry on another IP)",
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; use a higher port)"
        }
        io::ErrorKind::AddrNotAvailable => {
            " (not a local address; on Linux every 127.x.y.z is, elsewhere add it to lo)"
        }
        _ => "",
    }
}

/// A failure to decode a DNS message or to resolve a name.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The message ended before a field it announces.
    #[error("DNS message is truncated: {what} needs more bytes")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The message is well-formed DNS but not something this server handles, or malformed.
    #[error("malformed DNS message: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A name cannot be encoded (empty label, label over 63 bytes, name over 253 bytes).
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No candidate name exists (NXDOMAIN for every search-list expansion).
    #[error("name {name:?} does not exist (NXDOMAIN after trying {tried:?})")]
    NxDomain {
        /// The name as asked.
        name: String,
        /// The absolute names queried, in order.
        tried: Vec<String>,
    },
    /// The name exists but has no address records.
    #[error("name {name:?} exists but has no IPv4 address")]
    NoData {
        /// The name as asked.
        name: String,
    },
    /// The server answered with an error code other than NXDOMAIN.
    #[error("DNS server {server} answered {name:?} with rcode {rcode}")]
    ServerFailure {
        /// The DNS server.
        server: SocketAddr,
        /// The absolute name queried.
        name: String,
        /// The response code.
        rcode: u8,
    },
    /// Every attempt timed out.
    #[error("DNS server {server} did not answer {name:?} after {attempts} attempts")]
    Timeout {
        /// The DNS server.
        server: SocketAddr,
        /// The absolute name queried.
        name: String,
        /// How many queries were sent.
        attempts: u32,
    },
    /// A socket operation failed.
    #[error("DNS query to {server} failed: {source}")]
    Io {
        /// The DNS server.
        server: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl DnsError {
    /// True for a definitive "no such name" answer (as opposed to a timeout or failure).
    pub fn is_nxdomain(&self) -> bool {
        matches!(self, Self::NxDomain { .. })
    }
}
