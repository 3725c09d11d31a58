//! Opening one stream per connection along its [`Route`]: a port-forward to the pod, a
//! relay stream, or a TCP connection from this machine. This is the one seam the
//! forwarding pipeline will replace (its dialers bring the Supervisor's recovery and
//! counters); everything above it only sees a byte stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::route::Route;
use crate::client::KubeContext;
use crate::relay::protocol::Transport;
use crate::relay::{RelayConnector, RelayPods};
use crate::tunnel::{OPEN_TIMEOUT, Tunnel};

/// A byte stream to a destination.
pub trait Upstream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Upstream for T {}

/// Opens the streams routes lead to.
#[derive(Debug, Clone)]
pub struct Dialer {
    ctx: KubeContext,
    relay: Option<RelayConnector>,
    connect_timeout: Duration,
}

impl Dialer {
    /// A dialer through `ctx`, with `relay` for the relay route (none: refused), and
    /// `connect_timeout` for direct connections.
    pub fn new(
        ctx: KubeContext,
        relay: Option<(Arc<RelayPods>, String)>,
        connect_timeout: Duration,
    ) -> Dialer {
        Dialer {
            ctx,
            relay: relay.map(|(pods, ns)| RelayConnector::new(pods, &ns)),
            connect_timeout,
        }
    }

    /// The relay's connector, when the relay may be used.
    pub fn relay(&self) -> Option<&RelayConnector> {
        self.relay.as_ref()
    }

    /// A stream along `route` for the client `peer`.
    ///
    /// # Errors
    ///
    /// [`ProxyError`]: refused, timed out, not resolved (by the relay or this machine's
    /// resolver), forbidden, or the cluster's errors.
    pub async fn dial(
        &self,
        route: &Route,
        peer: SocketAddr,
    ) -> Result<Box<dyn Upstream>, ProxyError> {
        match route {
            Route::Pod {
                namespace,
                pod,
                port,
                ..
            } => {
                let target = format!("pod {namespace}/{pod}:{port}");
                let open = async {
                    let mut t = Tunnel::open(&self.ctx, namespace, pod, *port).await?;
                    t.ready().await?;
                    Ok::<_, crate::Error>(t)
                };
                match tokio::time::timeout(OPEN_TIMEOUT, open).await {
                    Ok(Ok(t)) => Ok(Box::new(t)),
                    Ok(Err(e)) => Err(ProxyError::from_cluster(e, &target)),
                    Err(_) => Err(ProxyError::TimedOut {
                        target,
                        message: format!("no port-forward within {}s", OPEN_TIMEOUT.as_secs()),
                    }),
                }
            }
            Route::Relay { host, port } => {
                let target = format!("{host}:{port}");
                let Some(relay) = &self.relay else {
                    return Err(ProxyError::RelayDisabled { target });
                };
                relay
                    .connect(Transport::Tcp, host, *port, &peer.to_string())
                    .await
                    .map(|t| Box::new(t) as Box<dyn Upstream>)
                    .map_err(|e| ProxyError::from_cluster(e, &target))
            }
            Route::Direct { host, port } => {
                let target = format!("{host}:{port}");
                let fail = |source| ProxyError::Direct {
                    target: target.clone(),
                    source,
                };
                let addrs: Vec<SocketAddr> =
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(a) => a.collect(),
                        Err(e) => {
                            return Err(ProxyError::NotResolved {
                                host: host.clone(),
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
                        Ok(Box::new(s))
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Err(ProxyError::Refused {
                            target: target.clone(),
                            message: e.to_string(),
                        })
                    }
                    Ok(Err(e)) => Err(fail(e)),
                    Err(_) => Err(ProxyError::TimedOut {
                        target: target.clone(),
                        message: format!(
                            "no connection within {}s",
                            self.connect_timeout.as_secs()
                        ),
                    }),
                }
            }
        }
    }
}

/// Bytes read at once each way while splicing: large enough that a bulk transfer through a
/// port-forward goes in few WebSocket messages, small enough for a thousand connections.
pub(crate) const SPLICE_BUF: usize = 64 * 1024;

/// Carries bytes both ways between the client and the upstream until both ends are done
/// (a half-close passes on), returning the bytes each way.
pub(crate) async fn splice<C, U>(
    client: &mut C,
    upstream: &mut U,
) -> (u64, u64, Option<std::io::Error>)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match tokio::io::copy_bidirectional_with_sizes(client, upstream, SPLICE_BUF, SPLICE_BUF).await {
        Ok((up, down)) => (up, down, None),
        Err(e) => (0, 0, Some(e)),
    }
}
