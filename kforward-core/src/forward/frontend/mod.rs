//! Front ends: what takes local traffic in. A TCP listener gives each connection a stream
//! of its own ([`tcp`]); a UDP socket gives each local peer a session ([`udp`]). Both
//! count through the forward's [`Stats`] and report through its events.

pub(crate) mod listen;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::backend::{Open, SharedBackend};
use super::event::Event;
use super::layer::Layers;
use super::options::ForwardOptions;
use super::stats::{Connection, Stats};
use crate::error::{Error, Result};
use crate::spec::{ForwardSpec, PortMapping, Protocol};
use crate::transport::Stream;

/// A bound local socket.
#[derive(Debug)]
pub(crate) enum Listener {
    /// Accepts TCP connections.
    Tcp(TcpListener),
    /// Receives UDP datagrams.
    Udp(UdpSocket),
}

/// Binds `pm` on every address of `spec`, all on the same port (with local port 0, the
/// port the first address got). `localhost` means both loopbacks and, like kubectl,
/// one of them is enough: an IPv6 address this machine lacks is skipped.
///
/// # Errors
///
/// [`Error::BindLocal`] naming the address, with a port spec to try instead.
pub(crate) async fn bind(
    spec: &ForwardSpec,
    pm: &PortMapping,
) -> Result<Vec<(Listener, SocketAddr)>> {
    let mut port = pm.local;
    let mut out = Vec::new();
    let several = spec.addresses.len() > 1;
    for ip in &spec.addresses {
        let addr = SocketAddr::new(*ip, port);
        let bound = match spec.protocol {
            Protocol::Tcp => listen::listen_tcp(addr).and_then(|l| {
                let a = l.local_addr()?;
                Ok((Listener::Tcp(l), a))
            }),
            Protocol::Udp => UdpSocket::bind(addr).await.and_then(|s| {
                let a = s.local_addr()?;
                Ok((Listener::Udp(s), a))
            }),
        };
        match bound {
            Ok((l, local)) => {
                port = local.port();
                out.push((l, local));
            }
            Err(e)
                if several
                    && matches!(ip, IpAddr::V6(_))
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    ) =>
            {
                warn!(%addr, error = %e, "skipping an address that cannot be bound");
            }
            Err(source) => {
                return Err(Error::BindLocal {
                    addr,
                    source,
                    suggestion: format!("0:{}", pm.remote),
                });
            }
        }
    }
    Ok(out)
}

/// What the tasks of one listener share: the way to the target of its port mapping, the
/// forward's settings, counters and events.
pub(crate) struct Lane {
    /// The cluster side, replaced on reconnect.
    pub(crate) backend: SharedBackend,
    /// Which port mapping (and route) the listener serves.
    pub(crate) index: usize,
    /// The forward's label, for events.
    pub(crate) label: String,
    pub(crate) opts: ForwardOptions,
    pub(crate) layers: Layers,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) stats: Arc<Stats>,
    /// Asks the forward to read the kubeconfig again (after a 401).
    pub(crate) reload: Arc<Notify>,
}

impl Lane {
    /// The settings of opening one stream.
    pub(crate) fn open(&self) -> Open<'_> {
        Open {
            label: &self.label,
            wait: self.opts.pod_running_timeout,
            reload: &self.reload,
            events: &self.events,
        }
    }

    /// Publishes `event` (nobody listening is fine).
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Publishes that the connection or session of `peer` goes through `stream`.
    pub(crate) fn opened(&self, peer: SocketAddr, stream: &Stream) {
        self.emit(Event::ConnectionOpened {
            forward: self.label.clone(),
            peer,
            pod: stream.pod().to_string(),
            pod_port: stream.port(),
            transport: stream.transport(),
        });
    }

    /// Publishes the end of the connection or session of `peer`, with what it carried.
    pub(crate) fn closed(&self, peer: SocketAddr, conn: &Connection, error: Option<String>) {
        self.emit(Event::ConnectionClosed {
            forward: self.label.clone(),
            peer,
            bytes_out: conn.bytes_out(),
            bytes_in: conn.bytes_in(),
            error,
        });
    }

    /// Publishes an error of one connection or session.
    pub(crate) fn error(&self, message: String) {
        self.emit(Event::Error {
            forward: self.label.clone(),
            message,
        });
    }
}

/// The tasks of a running forward's front ends, and how they end.
pub(crate) struct Tasks {
    /// Stops accepting (and ends UDP sessions, which have nothing to finish).
    pub(crate) stop: CancellationToken,
    /// Closes TCP connections still open after the grace period.
    pub(crate) kill: CancellationToken,
    /// TCP connections.
    pub(crate) conns: TaskTracker,
    /// Accept and receive loops, UDP sessions and watchers.
    pub(crate) tasks: TaskTracker,
}

impl Tasks {
    pub(crate) fn new() -> Self {
        Tasks {
            stop: CancellationToken::new(),
            kill: CancellationToken::new(),
            conns: TaskTracker::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Serves `listener` for `lane` until stopped.
    pub(crate) fn serve(&self, listener: Listener, lane: Arc<Lane>) {
        match listener {
            Listener::Tcp(l) => self.accept(l, tcp::carrier(lane)),
            Listener::Udp(s) => {
                self.tasks.spawn(udp::receive_loop(
                    Arc::new(s),
                    lane,
                    self.stop.clone(),
                    self.tasks.clone(),
                ));
            }
        }
    }

    /// Accepts connections on `listener` until stopped; `serve` carries each.
    pub(crate) fn accept<S, F>(&self, listener: TcpListener, serve: S)
    where
        S: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(tcp::accept_loop(
            listener,
            serve,
            self.stop.clone(),
            self.kill.clone(),
            self.conns.clone(),
        ));
    }

    /// Stops accepting, gives open connections `grace` to finish, then closes them.
    pub(crate) async fn drain(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.conns.close();
        if tokio::time::timeout(grace, self.conns.wait())
            .await
            .is_err()
        {
            self.kill.cancel();
            self.conns.wait().await;
        }
    }

    /// Ends everything at once (the forward was dropped while running).
    pub(crate) fn abort(&self) {
        self.stop.cancel();
        self.kill.cancel();
    }
}
