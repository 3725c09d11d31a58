//! Opening one stream per connection along its [`Route`]: pod and relay streams through
//! the forwarding pipeline's dialer (the relay pods are the forward's, shared with the
//! session's other forwards under a supervisor), or a TCP connection from this machine for
//! `--direct` destinations.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::route::Route;
use crate::forward::{Destination, Dialer};
use crate::relay::protocol::Transport;
use crate::transport::Stream;

/// How long a stream to a pod may take to open and be up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to a destination: a pipeline stream, or a TCP connection.
pub(crate) trait Upstream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Upstream for T {}

/// A stream opened for one connection.
pub(crate) enum Opened {
    /// Through the cluster: a port-forward to a pod, or a stream through the relay.
    Stream(Stream),
    /// A TCP connection from this machine (`--direct`).
    Tcp(TcpStream),
}

impl Opened {
    /// The stream as one byte stream, for a client of its own (the HTTP side's).
    pub(crate) fn into_upstream(self) -> Box<dyn Upstream> {
        match self {
            Opened::Stream(s) => Box::new(s),
            Opened::Tcp(s) => Box::new(s),
        }
    }
}

/// Opens the streams routes lead to.
#[derive(Debug, Clone)]
pub(crate) struct Ways {
    /// The pipeline's dialer (with relay pods unless the relay is off).
    pub(crate) dialer: Dialer,
    /// The namespace whose relay pod carries relayed streams.
    pub(crate) namespace: String,
    /// How long a direct connection may take.
    pub(crate) connect_timeout: Duration,
}

impl Ways {
    /// A stream along `route` for the client `peer`.
    ///
    /// # Errors
    ///
    /// [`ProxyError`]: refused, timed out, not resolved (by the relay or this machine's
    /// resolver), forbidden, or the cluster's errors.
    pub(crate) async fn open(&self, route: &Route, peer: SocketAddr) -> Result<Opened, ProxyError> {
        match route {
            Route::Pod {
                namespace,
                pod,
                port,
                ..
            } => {
                let target = format!("pod {namespace}/{pod}:{port}");
                let dest = Destination::Pod {
                    namespace: namespace.clone(),
                    pod: pod.clone(),
                    port: *port,
                };
                let open = async {
                    let mut s = self.dialer.dial(&dest, peer).await?;
                    s.ready().await?;
                    Ok::<_, crate::Error>(s)
                };
                match tokio::time::timeout(OPEN_TIMEOUT, open).await {
                    Ok(Ok(s)) => Ok(Opened::Stream(s)),
                    Ok(Err(e)) => Err(ProxyError::from_cluster(e, &target)),
                    Err(_) => Err(ProxyError::TimedOut {
                        target,
                        message: format!("no port-forward within {}s", OPEN_TIMEOUT.as_secs()),
                    }),
                }
            }
            Route::Relay { host, port } => {
                let target = format!("{host}:{port}");
                let dest = Destination::Relay {
                    namespace: self.namespace.clone(),
                    host: host.clone(),
                    port: *port,
                    transport: Transport::Tcp,
                };
                match self.dialer.dial(&dest, peer).await {
                    Ok(s) => Ok(Opened::Stream(s)),
                    Err(e) => Err(ProxyError::from_cluster(e, &target)),
                }
            }
            Route::Direct { host, port } => self.direct(host, *port).await,
        }
    }

    /// A TCP connection from this machine to `host:port`.
    async fn direct(&self, host: &str, port: u16) -> Result<Opened, ProxyError> {
        let target = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                return Err(ProxyError::NotResolved {
                    host: host.to_string(),
                    message: format!("this machine's resolver: {e}"),
                });
            }
        };
        let connect = async {
            let mut last = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("the name has no address")))
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(Opened::Tcp(s))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ProxyError::Refused {
                    target,
                    message: e.to_string(),
                })
            }
            Ok(Err(source)) => Err(ProxyError::Direct { target, source }),
            Err(_) => Err(ProxyError::TimedOut {
                target,
                message: format!("no connection within {}s", self.connect_timeout.as_secs()),
            }),
        }
    }
}
