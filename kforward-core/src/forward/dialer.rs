//! The dialer: opens one stream per connection or UDP peer, to a port of a pod through a
//! transport, or to any host and port through the relay pod of a namespace.
//!
//! A front end names the [`Destination`] of each connection itself, so one forward can
//! send its connections to different places (the forward proxy does, per request).
//!
//! Pod streams go through the [`SessionPool`] of each namespace that every forward of the
//! cluster connection with the same `transport` option shares ([`SessionPool::shared`]):
//! SPDY sessions kept ready to the pods the forwards route to (a new connection costs two
//! SYN_STREAMs sent with its first bytes), or one `v4.channel.k8s.io` WebSocket per
//! connection where the cluster offers no SPDY or the `transport` option says so. Each
//! dialer holds the pods it routes to under its own [`HolderId`], and lets go of them when
//! it is released or its last clone is dropped. Relay streams
//! stay on the WebSocket: the relay protocol frames its own messages, and a TCP stream's
//! frames carry each side's end of writes ([`Framed`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::relay::protocol::Transport;
use crate::relay::{RelayConnector, RelayPods};
use crate::transport::spdy::{Carried, HolderId, SessionPool};
use crate::transport::{Framed, Stream, Transport as PodTransport};

/// Where one stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A port of a pod, through the API server's port-forward.
    Pod {
        namespace: String,
        pod: String,
        port: u16,
    },
    /// A host (a name the cluster's DNS resolves, or an IP) and port, reached from the
    /// relay pod of `namespace`.
    Relay {
        namespace: String,
        host: String,
        port: u16,
        transport: Transport,
    },
}

/// Opens streams with one cluster connection.
#[derive(Clone)]
pub(crate) struct Dialer {
    ctx: KubeContext,
    /// The relay pods, for forwards that have relayed destinations.
    relay: Option<Arc<RelayPods>>,
    /// The transport option of pod streams.
    transport: PodTransport,
    /// The shared session pool of each namespace pod streams went to, and this dialer's
    /// holds on them.
    holds: Arc<Holds>,
}

/// A dialer's identity as a holder of pods in shared session pools, and the pools it
/// used; dropping the last clone of the dialer lets go of its pods.
struct Holds {
    id: HolderId,
    pools: Mutex<HashMap<String, SessionPool>>,
}

impl Holds {
    fn release(&self) {
        let pools: Vec<SessionPool> = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for pool in pools {
            pool.release(self.id);
        }
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("server", &self.ctx.server())
            .field("transport", &self.transport)
            .finish()
    }
}

impl Dialer {
    pub(crate) fn new(
        ctx: KubeContext,
        relay: Option<Arc<RelayPods>>,
        transport: PodTransport,
    ) -> Self {
        Dialer {
            ctx,
            relay,
            transport,
            holds: Arc::new(Holds {
                id: HolderId::new(),
                pools: Mutex::default(),
            }),
        }
    }

    /// The session pool of `namespace`, shared with every dialer of the cluster connection
    /// with the same transport option.
    fn pool(&self, namespace: &str) -> SessionPool {
        self.holds
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(namespace.to_string())
            .or_insert_with(|| SessionPool::shared(&self.ctx, namespace, self.transport))
            .clone()
    }

    /// The transport pod streams use: the option, or what `auto` found for the cluster
    /// (`auto` until it found something).
    pub(crate) fn transport(&self) -> PodTransport {
        match self.transport {
            PodTransport::Auto => self
                .ctx
                .transport_memo()
                .get()
                .unwrap_or(PodTransport::Auto),
            t => t,
        }
    }

    /// Keeps sessions ready to `pods` of `namespace` (opening the missing ones in the
    /// background) and lets go of the pods this dialer no longer lists, so that the next
    /// connection to any of them costs one round trip. Sessions other forwards hold stay.
    pub(crate) fn keep_ready(&self, namespace: &str, pods: &[String]) {
        self.pool(namespace).hold(self.holds.id, pods);
    }

    /// Lets go of every pod this dialer holds (the forward stops or was replaced): pods no
    /// other forward holds lose their kept sessions; connections running go on.
    pub(crate) fn release(&self) {
        self.holds.release();
    }

    /// Opens a session to `pod` now unless one is open; the transport in use after.
    ///
    /// # Errors
    ///
    /// As [`SessionPool::prepare`].
    pub(crate) async fn prepare(&self, namespace: &str, pod: &str) -> Result<PodTransport> {
        self.pool(namespace).prepare(pod).await
    }

    pub(crate) fn context(&self) -> &KubeContext {
        &self.ctx
    }

    /// The relay connector of `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::RelayPod`] when this dialer has no relay pods.
    pub(crate) fn relay(&self, namespace: &str) -> Result<RelayConnector> {
        match &self.relay {
            Some(pods) => Ok(RelayConnector::new(pods.clone(), namespace)),
            None => Err(Error::RelayPod {
                namespace: namespace.to_string(),
                message:
                    "this forward has no relay pods (only UDP and remote-address forwards use them)"
                        .into(),
                retryable: false,
            }),
        }
    }

    /// One stream to `dest` for the local client `client` (named to the relay, for its
    /// logs).
    ///
    /// # Errors
    ///
    /// The errors of [`SessionPool::connect`] and [`RelayConnector::connect`].
    pub(crate) async fn dial(&self, dest: &Destination, client: SocketAddr) -> Result<Stream> {
        match dest {
            Destination::Pod {
                namespace,
                pod,
                port,
            } => Ok(
                match self
                    .pool(namespace)
                    .connect(pod, *port)
                    .await?
                    .into_carried()
                {
                    Carried::Spdy(s) => Stream::Spdy(s),
                    // The v4 fallback keeps its own zero-copy halves.
                    Carried::Websocket(t) => Stream::WebSocket(t),
                },
            ),
            Destination::Relay {
                namespace,
                host,
                port,
                transport,
            } => {
                let relay = self.relay(namespace)?;
                let client = client.to_string();
                match transport {
                    Transport::Tcp | Transport::TcpFramed => {
                        let (t, framed) = relay.connect_tcp(host, *port, &client).await?;
                        Ok(if framed {
                            Stream::Relay(Box::new(Framed::new(t)))
                        } else {
                            Stream::WebSocket(t)
                        })
                    }
                    Transport::Udp => relay
                        .connect(Transport::Udp, host, *port, &client)
                        .await
                        .map(Stream::WebSocket),
                }
            }
        }
    }
}
