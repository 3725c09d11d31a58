//! Why a SPDY stream or session ended early: the errors its reads and writes carry.

use std::io;
use std::time::Duration;

/// Why a stream's reads or writes fail. Carried inside the [`io::Error`]s of
/// [`SpdyStream`](super::SpdyStream) (`io::Error::get_ref` and `downcast_ref` reach it).
///
/// # Example
///
/// ```
/// use kforward_core::transport::spdy::SpdyError;
///
/// let e: std::io::Error = SpdyError::Refused {
///     pod: "web-0".into(),
///     port: 81,
///     message: "connection refused".into(),
/// }
/// .into();
/// assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
/// assert!(SpdyError::of(&e).is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpdyError {
    /// The kubelet reported an error for this connection on its error stream (the pod's
    /// port refused, or the container is gone).
    #[error("port-forward to pod {pod:?} port {port} failed: {message}")]
    Refused {
        /// The pod.
        pod: String,
        /// The pod's port.
        port: u16,
        /// The kubelet's message.
        message: String,
    },
    /// The server reset the stream (RST_STREAM).
    #[error(
        "the API server reset the port-forward stream to pod {pod:?} port {port} (SPDY status {status})"
    )]
    Reset {
        /// The pod.
        pod: String,
        /// The pod's port.
        port: u16,
        /// The RST_STREAM status code.
        status: u32,
    },
    /// The local reader fell too far behind while other connections shared the session:
    /// kforward reset this connection so that they keep flowing (SPDY has no flow control
    /// here, see [`SessionConfig::stream_buffer`](super::SessionConfig::stream_buffer)).
    #[error(
        "kforward reset the connection to pod {pod:?} port {port}: its local reader stopped taking data while {limit} bytes were waiting for it and {others} other connection(s) shared its port-forward session"
    )]
    Overflow {
        /// The pod.
        pod: String,
        /// The pod's port.
        port: u16,
        /// The bound that was reached, in bytes.
        limit: usize,
        /// How many other connections shared the session.
        others: usize,
    },
    /// The session carrying the stream ended.
    #[error("the port-forward session to pod {pod:?} ended: {end}")]
    SessionLost {
        /// The pod.
        pod: String,
        /// Why it ended.
        end: SessionEnd,
    },
    /// A write after the stream's write side was shut down.
    #[error("the connection to pod {pod:?} port {port} was already shut down for writing")]
    WriteAfterShutdown {
        /// The pod.
        pod: String,
        /// The pod's port.
        port: u16,
    },
}

impl SpdyError {
    /// The `SpdyError` inside an `io::Error` from a stream, if there is one.
    pub fn of(e: &io::Error) -> Option<&SpdyError> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }

    /// Whether the runtime says the pod's sandbox is gone: the pod was deleted (a
    /// session stays bound to the pod it was opened for, even when another pod takes its
    /// name, as a StatefulSet's does), so nothing of the connection reached a pod and it
    /// may be opened again where the forward routes now. The wording is containerd's
    /// (`pkg/cri/server/sandbox_portforward_linux.go`, checked before any dial: "failed to
    /// find sandbox", "network namespace for sandbox ... is closed"). A port that refused
    /// on a live pod is not this: that connection fails as it does with kubectl.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::transport::spdy::SpdyError;
    ///
    /// let gone = SpdyError::Refused {
    ///     pod: "db-0".into(),
    ///     port: 5432,
    ///     message: "failed to find sandbox \"4f1c\" in store: not found".into(),
    /// };
    /// assert!(gone.pod_gone());
    /// let closed = SpdyError::Refused {
    ///     pod: "db-0".into(),
    ///     port: 5433,
    ///     message: "failed to connect to localhost:5433 inside namespace \"4f1c\"".into(),
    /// };
    /// assert!(!closed.pod_gone());
    /// ```
    pub fn pod_gone(&self) -> bool {
        match self {
            SpdyError::Refused { message, .. } => {
                message.contains("failed to find sandbox")
                    || (message.contains("network namespace for sandbox")
                        && message.contains("is closed"))
            }
            _ => false,
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            SpdyError::Refused { .. } => io::ErrorKind::ConnectionRefused,
            SpdyError::Reset { .. } | SpdyError::Overflow { .. } => io::ErrorKind::ConnectionReset,
            SpdyError::SessionLost { .. } => io::ErrorKind::ConnectionAborted,
            SpdyError::WriteAfterShutdown { .. } => io::ErrorKind::BrokenPipe,
        }
    }
}

impl From<SpdyError> for io::Error {
    fn from(e: SpdyError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The API server closed the connection (an API server restart, a dropped
    /// port-forward, an idle timeout).
    #[error("the API server closed the connection")]
    Closed,
    /// Reading or writing the connection failed.
    #[error("the connection failed: {0}")]
    Io(String),
    /// The server sent bytes that are not SPDY/3.1.
    #[error("the server broke the SPDY protocol: {0}")]
    Protocol(String),
    /// Nothing came back for a PING in time (a dead network, a laptop that slept).
    #[error("no answer to a PING for {0:?}: the connection is dead")]
    PingTimeout(Duration),
    /// The server sent GOAWAY and every stream it still carried is done.
    #[error("the server sent GOAWAY (status {0})")]
    GoAway(u32),
    /// kforward closed the session (it was idle, or its pool was closed).
    #[error("kforward closed the session")]
    Local,
}
