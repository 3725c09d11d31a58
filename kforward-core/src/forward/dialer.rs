//! The dialer: opens one stream per connection or UDP peer, to a port of a pod through a
//! transport, or to any host and port through the relay pod of a namespace.
//!
//! A front end names the [`Destination`] of each connection itself, so one forward can
//! send its connections to different places (the forward proxy does, per request).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::relay::protocol::Transport;
use crate::relay::{RelayConnector, RelayPods};
use crate::transport::Stream;
use crate::transport::websocket::Tunnel;

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
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("server", &self.ctx.server())
            .finish()
    }
}

impl Dialer {
    pub(crate) fn new(ctx: KubeContext, relay: Option<Arc<RelayPods>>) -> Self {
        Dialer { ctx, relay }
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
    /// The errors of [`Tunnel::open`] and [`RelayConnector::connect`].
    pub(crate) async fn dial(&self, dest: &Destination, client: SocketAddr) -> Result<Stream> {
        match dest {
            Destination::Pod {
                namespace,
                pod,
                port,
            } => Tunnel::open(&self.ctx, namespace, pod, *port)
                .await
                .map(Stream::WebSocket),
            Destination::Relay {
                namespace,
                host,
                port,
                transport,
            } => self
                .relay(namespace)?
                .connect(*transport, host, *port, &client.to_string())
                .await
                .map(Stream::WebSocket),
        }
    }
}
