//! Why the forward proxy could not reach a destination, and how each reason is told to a
//! SOCKS5 client (a reply code) and to an HTTP client (a status and a body).

use std::io;

use http::StatusCode;

use super::socks::Reply;
use crate::error::Error as ClusterError;

/// Why one connection through the proxy failed. Each variant maps to the SOCKS5 reply
/// ([`ProxyError::socks5_reply`]) and the HTTP status ([`ProxyError::http_status`]) a client
/// understands; the message is the HTTP body.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::{ProxyError, socks::Reply};
/// let e = ProxyError::UnknownService { service: "wbe".into(), namespace: "demo".into() };
/// assert_eq!(e.socks5_reply(), Reply::HostUnreachable);
/// assert_eq!(e.http_status(), http::StatusCode::BAD_GATEWAY);
/// assert!(e.to_string().contains("\"wbe\""));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A cluster service name whose service does not exist.
    #[error("service {service:?} not found in namespace {namespace:?}")]
    UnknownService {
        /// The service named.
        service: String,
        /// The namespace it was looked for in.
        namespace: String,
    },
    /// A name the cluster's DNS does not know (NXDOMAIN).
    #[error("{host:?} does not resolve inside the cluster: {message}")]
    NotResolved {
        /// The name.
        host: String,
        /// What the resolver said.
        message: String,
    },
    /// A service port that the service does not declare.
    #[error(
        "service {service:?} in namespace {namespace:?} has no TCP port {port} (ports there: {available})"
    )]
    NoSuchPort {
        /// The service.
        service: String,
        /// Its namespace.
        namespace: String,
        /// The port asked for.
        port: u16,
        /// The ports it has.
        available: String,
    },
    /// The service has no ready pod.
    #[error("service {service:?} in namespace {namespace:?} has no ready pod")]
    NoReadyPod {
        /// The service.
        service: String,
        /// Its namespace.
        namespace: String,
    },
    /// The destination refused the connection.
    #[error("{target} refused the connection: {message}")]
    Refused {
        /// `host:port`.
        target: String,
        /// What was said.
        message: String,
    },
    /// The destination did not answer in time.
    #[error("{target} did not answer in time: {message}")]
    TimedOut {
        /// `host:port`.
        target: String,
        /// What timed out.
        message: String,
    },
    /// The cluster does not allow what the route needs (creating the relay pod, or a
    /// port-forward): the message names the missing permission.
    #[error("{0}")]
    Forbidden(ClusterError),
    /// The destination needs the relay, and `--no-relay` forbids it.
    #[error(
        "{target} is not a service, ClusterIP or pod of the cluster, and reaching it needs the relay pod, which --no-relay turns off"
    )]
    RelayDisabled {
        /// `host:port`.
        target: String,
    },
    /// Reaching the cluster failed otherwise.
    #[error("{0}")]
    Cluster(ClusterError),
    /// A direct connection (`--direct`) failed otherwise.
    #[error("cannot connect to {target} from this machine: {source}")]
    Direct {
        /// `host:port`.
        target: String,
        /// The error.
        source: io::Error,
    },
}

impl ProxyError {
    /// The SOCKS5 reply code for this failure (RFC 1928 section 6).
    pub fn socks5_reply(&self) -> Reply {
        match self {
            ProxyError::UnknownService { .. } | ProxyError::NotResolved { .. } => {
                Reply::HostUnreachable
            }
            ProxyError::NoSuchPort { .. }
            | ProxyError::NoReadyPod { .. }
            | ProxyError::Refused { .. } => Reply::ConnectionRefused,
            ProxyError::TimedOut { .. } => Reply::TtlExpired,
            ProxyError::Forbidden(_) | ProxyError::RelayDisabled { .. } => Reply::NotAllowed,
            ProxyError::Cluster(_) => Reply::GeneralFailure,
            ProxyError::Direct { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                io::ErrorKind::TimedOut => Reply::TtlExpired,
                io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
                _ => Reply::GeneralFailure,
            },
        }
    }

    /// The HTTP status for this failure: 502 when the destination cannot be reached, 504
    /// when it timed out, 403 when the cluster or `--no-relay` forbids the route.
    pub fn http_status(&self) -> StatusCode {
        match self.socks5_reply() {
            Reply::TtlExpired => StatusCode::GATEWAY_TIMEOUT,
            Reply::NotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Sorts an error of the cluster side into the variants above.
    /// For a stream to a pod that failed: whether another ready pod may do, as a forward
    /// tries one (`Some(true)` when the pod is gone, `Some(false)` when it refused or its
    /// stream broke); `None` when no pod would do better (forbidden, timed out...).
    pub(crate) fn another_pod_may_do(&self) -> Option<bool> {
        match self {
            ProxyError::Refused { .. } => Some(false),
            ProxyError::Cluster(e) if e.is_retryable() => {
                Some(matches!(e, ClusterError::NotFound { .. }))
            }
            _ => None,
        }
    }

    pub(crate) fn from_cluster(e: ClusterError, target: &str) -> ProxyError {
        match e {
            ClusterError::RelayNameNotResolved { host, message } => {
                ProxyError::NotResolved { host, message }
            }
            ClusterError::RelayConnect {
                target,
                message,
                timed_out: true,
            } => ProxyError::TimedOut { target, message },
            ClusterError::RelayConnect {
                target, message, ..
            } => ProxyError::Refused { target, message },
            ClusterError::Tunnel { message, .. } => ProxyError::Refused {
                target: target.to_string(),
                message,
            },
            e if e.is_permission_denied() => ProxyError::Forbidden(e),
            e => ProxyError::Cluster(e),
        }
    }
}
