//! The client half of the relay handshake, and [`RelayConnector`], which opens a tunnel to
//! the namespace's relay pod and asks it for a destination.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::RelayPods;
use super::protocol::{Request, Response, Status, Transport, decode_response, encode_request};
use crate::error::{Error, Result};
use crate::transport::websocket::Tunnel;

/// How long the relay may take to answer a handshake (it resolves and connects within it).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Relay pods tried for one connection (a deleted pod is replaced in between).
const ATTEMPTS: usize = 3;

/// Sends the handshake on `stream` and reads the relay's answer, reading no byte past it.
///
/// `pod` only names the relay in errors.
///
/// # Errors
///
/// [`Error::RelayRejected`] for a request that cannot be encoded, [`Error::RelayHandshake`]
/// (the stream failed or the answer was not understood).
async fn exchange<S>(stream: &mut S, pod: &str, req: &Request) -> Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let broken = |message: String| Error::RelayHandshake {
        pod: pod.to_string(),
        message,
    };
    let wire = encode_request(req).map_err(|e| Error::RelayRejected {
        pod: pod.to_string(),
        message: e.to_string(),
    })?;
    let exchange = async {
        stream.write_all(&wire).await?;
        stream.flush().await?;
        // Status and message length, then exactly the message: bytes after it are the
        // destination's and must stay in the stream.
        let mut head = [0u8; 3];
        stream.read_exact(&mut head).await?;
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let mut buf = vec![0u8; 3 + len];
        buf[..3].copy_from_slice(&head);
        stream.read_exact(&mut buf[3..]).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| broken(format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs())))?
        .map_err(|e| broken(e.to_string()))?;
    let (resp, _) = decode_response(&buf)
        .map_err(|e| broken(e.to_string()))?
        .ok_or_else(|| broken("incomplete answer".into()))?;
    Ok(resp)
}

/// The relay's answer to `req` as a result: the error of each status but `ok`.
fn answered(resp: Response, pod: &str, req: &Request) -> Result<()> {
    let target = format!("{}:{}/{}", req.host, req.port, req.transport.as_str());
    match resp.status {
        Status::Ok => Ok(()),
        Status::NameNotResolved => Err(Error::RelayNameNotResolved {
            host: req.host.clone(),
            message: resp.message,
        }),
        Status::Refused | Status::TimedOut => Err(Error::RelayConnect {
            target,
            message: resp.message,
            timed_out: resp.status == Status::TimedOut,
        }),
        Status::NotAllowed | Status::BadRequest => Err(Error::RelayRejected {
            pod: pod.to_string(),
            message: resp.message,
        }),
    }
}

/// Opens streams to destinations through the relay pod of one namespace, creating the pod
/// when needed and replacing it when it is gone.
#[derive(Clone)]
pub struct RelayConnector {
    pods: Arc<RelayPods>,
    namespace: String,
}

impl std::fmt::Debug for RelayConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConnector")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl RelayConnector {
    /// A connector through `pods`' relay in `namespace`.
    pub fn new(pods: Arc<RelayPods>, namespace: &str) -> Self {
        RelayConnector {
            pods,
            namespace: namespace.to_string(),
        }
    }

    /// The relay pods used.
    pub fn pods(&self) -> &Arc<RelayPods> {
        &self.pods
    }

    /// Makes sure the namespace's relay pod exists and is ready.
    ///
    /// # Errors
    ///
    /// See [`RelayPods::pod_for`].
    pub async fn ensure(&self) -> Result<String> {
        self.pods.pod_for(&self.namespace).await
    }

    /// A stream to `host:port` over `transport`, handshake done.
    ///
    /// # Errors
    ///
    /// The errors of [`RelayPods::pod_for`], [`Tunnel::open`] and the handshake; a relay
    /// pod that went away is replaced and tried again first.
    pub async fn connect(
        &self,
        transport: Transport,
        host: &str,
        port: u16,
        client_addr: &str,
    ) -> Result<Tunnel> {
        let req =
            Request::new(self.pods.token(), transport, host, port).with_client_addr(client_addr);
        self.open(req, false).await.map(|(t, _)| t)
    }

    /// A TCP stream to `host:port`, handshake done, and whether it is framed
    /// ([`Transport::TcpFramed`], so that each side's end of writes reaches the other):
    /// it is unless a relay refused framing once (an image from before it), after which
    /// every stream of these relay pods is plain TCP.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub(crate) async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        client_addr: &str,
    ) -> Result<(Tunnel, bool)> {
        let transport = if self.pods.plain_tcp_only() {
            Transport::Tcp
        } else {
            Transport::TcpFramed
        };
        let req =
            Request::new(self.pods.token(), transport, host, port).with_client_addr(client_addr);
        let (t, used) = self.open(req, true).await?;
        Ok((t, used == Transport::TcpFramed))
    }

    /// Opens a tunnel to the relay and sends it `req`; with `plain_after_refusal`, a
    /// framed TCP request the relay refuses as bad is sent again as plain TCP. The tunnel
    /// and the transport the relay took.
    async fn open(
        &self,
        mut req: Request,
        plain_after_refusal: bool,
    ) -> Result<(Tunnel, Transport)> {
        let ctx = self.pods.context();
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let pod = self.pods.pod_for(&self.namespace).await?;
            let opened = Tunnel::open(&ctx, &self.namespace, &pod, self.pods.port()).await;
            let err = match opened {
                Ok(mut t) => match exchange(&mut t, &pod, &req).await {
                    // A relay from before framed TCP refuses its protocol byte as a bad
                    // request (and closes the stream): plain TCP from now on.
                    Ok(resp)
                        if plain_after_refusal
                            && req.transport == Transport::TcpFramed
                            && resp.status == Status::BadRequest =>
                    {
                        debug!(%pod, message = %resp.message, "the relay refused framed TCP; plain TCP from now on");
                        self.pods.set_plain_tcp_only();
                        req.transport = Transport::Tcp;
                        last = Some(Error::RelayRejected {
                            pod,
                            message: resp.message,
                        });
                        continue;
                    }
                    Ok(resp) => {
                        answered(resp, &pod, &req)?;
                        return Ok((t, req.transport));
                    }
                    Err(e @ Error::RelayHandshake { .. }) => e,
                    Err(e) => return Err(e),
                },
                Err(e) if e.is_retryable() => e,
                // A relay that exited when idle leaves a completed pod, and a port-forward
                // to a pod that is not running is refused (400 from the API server, or 500
                // from the kubelet's runtime): worth another pod, when that is the cause.
                Err(e @ Error::Api { .. }) => {
                    if self.pods.check(&self.namespace, &pod).await {
                        last = Some(e);
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            debug!(%pod, error = %err, "relay unusable; checking the pod");
            self.pods.check(&self.namespace, &pod).await;
            last = Some(err);
        }
        Err(last.unwrap_or(Error::RelayPod {
            namespace: self.namespace.clone(),
            message: "no relay pod could be used".into(),
            retryable: true,
        }))
    }

    /// Checks the namespace's relay pod for a health probe: makes it when there is none,
    /// opens a stream to it (no handshake, so no destination is reached) and listens
    /// `listen` for an error from its port. A pod found gone or exited is forgotten, so that
    /// the next use makes a new one.
    ///
    /// # Errors
    ///
    /// The errors of [`RelayPods::pod_for`] and [`Tunnel::open`], or [`Error::Tunnel`].
    pub async fn probe(&self, listen: Duration) -> Result<()> {
        let pod = self.pods.pod_for(&self.namespace).await?;
        let ctx = self.pods.context();
        let checked = async {
            let mut t = Tunnel::open(&ctx, &self.namespace, &pod, self.pods.port()).await?;
            t.ready().await?;
            let (mut rx, _tx) = t.into_split();
            match tokio::time::timeout(listen, rx.read_chunk()).await {
                Ok(Err(e)) => Err(Error::Tunnel {
                    pod: pod.clone(),
                    port: self.pods.port(),
                    message: e.to_string(),
                }),
                _ => Ok(()),
            }
        };
        let result = checked.await;
        if result.is_err() {
            self.pods.check(&self.namespace, &pod).await;
        }
        result
    }
}
