//! [`ProxyForwarder`]: forwards to any host the cluster can reach (a service DNS name, an
//! external host, an IP), through the namespace's relay pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use super::relay::relay;
use super::udp::{Destination, Running, bind_all, namespace_for, relay_pods, stop_running};
use super::{
    BoundPort, ForwardOptions, ForwardState, Forwarder, Stats, StatsSnapshot, UdpForwarder,
    remote_label,
};
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::relay::protocol::Transport;
use crate::relay::{RelayConnector, RelayPods};
use crate::spec::{ForwardSpec, Protocol};

/// Forwards to `proxy/HOST`: each local TCP connection becomes a tunnel to the relay pod and
/// a TCP connection from there to `HOST:PORT`; UDP specs run a [`UdpForwarder`] to the host.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Target};
/// use kforward_core::{Forwarder, ProxyForwarder};
/// let spec = ForwardSpec::new(Target::Proxy { host: "db.internal".into() }, [PortMapping::new(0, 5432)]);
/// let mut fwd = ProxyForwarder::new(ctx, spec, Default::default());
/// let bound = fwd.start().await?;
/// # Ok(()) }
/// ```
pub struct ProxyForwarder {
    ctx: KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    running: Option<Running>,
    pods: Option<(Arc<RelayPods>, bool)>,
    udp: Option<UdpForwarder>,
}

struct ConnCtx {
    connector: RelayConnector,
    dest: Destination,
    label: String,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
}

impl ProxyForwarder {
    /// A forwarder for `spec`, not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let (state, _) = watch::channel(ForwardState::Idle);
        let udp = (spec.protocol == Protocol::Udp)
            .then(|| UdpForwarder::new(ctx.clone(), spec.clone(), opts.clone()));
        ProxyForwarder {
            ctx,
            spec,
            opts,
            events,
            state,
            stats: Arc::new(Stats::default()),
            running: None,
            pods: None,
            udp,
        }
    }

    /// The relay pods in use, once started.
    pub fn relay_pods(&self) -> Option<Arc<RelayPods>> {
        match &self.udp {
            Some(u) => u.relay_pods(),
            None => self.pods.as_ref().map(|(p, _)| p.clone()),
        }
    }

    async fn start_inner(&mut self) -> Result<Vec<BoundPort>> {
        let ns = namespace_for(&self.spec, &self.ctx);
        let (pods, owned) = relay_pods(&self.ctx, &self.opts);
        self.pods = Some((pods.clone(), owned));
        let connector = RelayConnector::new(pods, &ns);
        connector.ensure().await?;
        let label = self.spec.label();
        let running = Running {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let mut bound = Vec::new();
        for pm in &self.spec.ports {
            let dest = Destination::resolve(
                &self.ctx,
                &ns,
                &self.spec,
                pm,
                self.opts.pod_running_timeout,
            )
            .await?;
            let listeners = bind_all(&self.spec, pm, |addr| async move {
                let l = TcpListener::bind(addr).await?;
                let local = l.local_addr()?;
                Ok((l, local))
            })
            .await?;
            let cc = Arc::new(ConnCtx {
                connector: connector.clone(),
                dest,
                label: label.clone(),
                opts: self.opts.clone(),
                events: self.events.clone(),
                stats: self.stats.clone(),
            });
            for (listener, local_addr) in listeners {
                bound.push(BoundPort {
                    local_addr,
                    remote: remote_label(&pm.remote),
                    pod_port: None,
                });
                running.tasks.spawn(accept_loop(
                    listener,
                    cc.clone(),
                    running.stop.clone(),
                    running.tasks.clone(),
                ));
                let _ = self.events.send(Event::Ready {
                    forward: label.clone(),
                    local_addr,
                    target: self.spec.target.to_string(),
                    namespace: ns.clone(),
                    remote_port: remote_label(&pm.remote),
                    pod_port: None,
                });
            }
        }
        self.running = Some(running);
        Ok(bound)
    }
}

async fn accept_loop(
    listener: TcpListener,
    cc: Arc<ConnCtx>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let cc = cc.clone();
        let stop = stop.clone();
        tasks.spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = handle(sock, peer, &cc) => {}
                }
            }
            .instrument(info_span!("proxy_conn", %peer)),
        );
    }
}

async fn handle(sock: TcpStream, peer: SocketAddr, cc: &ConnCtx) {
    let _ = sock.set_nodelay(true);
    cc.stats.connections_total.fetch_add(1, Ordering::Relaxed);
    cc.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let opened = async {
        let (host, port) = cc.dest.pick().await?;
        cc.connector
            .connect(Transport::Tcp, &host, port, &peer.to_string())
            .await
    };
    let tunnel = match opened.await {
        Ok(t) => t,
        Err(e) => {
            cc.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            cc.stats.connections_failed.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "cannot reach the destination for this connection");
            let _ = cc.events.send(Event::Error {
                forward: cc.label.clone(),
                message: e.to_string(),
            });
            return;
        }
    };
    let _ = cc.events.send(Event::ConnectionOpened {
        forward: cc.label.clone(),
        peer,
        pod: tunnel.pod().to_string(),
        pod_port: tunnel.port(),
    });
    let carried = relay(sock, tunnel, &cc.stats, cc.opts.half_close_linger).await;
    cc.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    let _ = cc.events.send(Event::ConnectionClosed {
        forward: cc.label.clone(),
        peer,
        bytes_out: carried.bytes_out,
        bytes_in: carried.bytes_in,
        error: carried.error.map(|e| e.to_string()),
    });
}

#[async_trait]
impl Forwarder for ProxyForwarder {
    async fn start(&mut self) -> Result<Vec<BoundPort>> {
        if let Some(u) = &mut self.udp {
            return u.start().await;
        }
        if self.running.is_some() {
            return Err(Error::AlreadyStarted);
        }
        self.state.send_replace(ForwardState::Starting);
        match self.start_inner().await {
            Ok(b) => {
                self.state.send_replace(ForwardState::Ready);
                Ok(b)
            }
            Err(e) => {
                if let Some((pods, true)) = &self.pods {
                    pods.delete_all().await;
                }
                self.state.send_replace(ForwardState::Failed {
                    error: e.to_string(),
                });
                let _ = self.events.send(Event::Error {
                    forward: self.spec.label(),
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }

    async fn stop(&mut self) {
        if let Some(u) = &mut self.udp {
            return u.stop().await;
        }
        let Some(r) = self.running.take() else { return };
        stop_running(r, self.pods.as_ref()).await;
        self.state.send_replace(ForwardState::Stopped);
        let _ = self.events.send(Event::Stopped {
            forward: self.spec.label(),
        });
    }

    fn state(&self) -> ForwardState {
        match &self.udp {
            Some(u) => u.state(),
            None => self.state.borrow().clone(),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        match &self.udp {
            Some(u) => u.subscribe(),
            None => self.events.subscribe(),
        }
    }

    fn stats(&self) -> StatsSnapshot {
        match &self.udp {
            Some(u) => u.stats(),
            None => self.stats.snapshot(),
        }
    }

    fn label(&self) -> String {
        self.spec.label()
    }
}

impl Drop for ProxyForwarder {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.stop.cancel();
        }
    }
}
