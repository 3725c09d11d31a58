//! [`UdpForwarder`]: local UDP sockets whose peers each get a session, that is one tunnel to
//! the namespace's relay pod carrying length-prefixed datagrams to the target and back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::{
    BoundPort, ForwardOptions, ForwardState, Forwarder, Stats, StatsSnapshot, remote_label,
};
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::relay::protocol::{MAX_DATAGRAM, Transport, decode_datagram, encode_datagram};
use crate::relay::{RelayConnector, RelayPods};
use crate::resolve::Endpoints;
use crate::spec::{ForwardSpec, PortMapping, RemotePort, Target};

/// Datagrams queued per session (while its tunnel opens, or a slow tunnel) before new ones
/// are dropped, as a full socket buffer would.
const SESSION_QUEUE: usize = 1024;
/// Bytes read from a tunnel at once.
const READ_BUF: usize = 128 * 1024;

/// Where a forward's datagrams go, as the relay sees it.
// One per port mapping, so the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Destination {
    /// A host name or IP and a port (services, proxy hosts).
    Fixed { host: String, port: u16 },
    /// A ready pod of the target, its IP looked up per session.
    Pods {
        endpoints: Arc<Endpoints>,
        ctx: KubeContext,
        namespace: String,
        label: String,
        wait: Duration,
    },
}

impl Destination {
    pub(crate) async fn resolve(
        ctx: &KubeContext,
        namespace: &str,
        spec: &ForwardSpec,
        pm: &PortMapping,
        wait: Duration,
    ) -> Result<Destination> {
        let label = spec.label();
        match &spec.target {
            Target::Service { name } => {
                let port = match &pm.remote {
                    RemotePort::Number(n) => *n,
                    RemotePort::Name(port_name) => {
                        let api: Api<Service> = Api::namespaced(ctx.client().clone(), namespace);
                        let svc = api.get(name).await.map_err(|e| {
                            Error::from_kube(
                                e,
                                ctx.server(),
                                "get",
                                "services",
                                namespace,
                                Some(name),
                            )
                        })?;
                        let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
                        ports
                            .iter()
                            .find(|p| p.name.as_deref() == Some(port_name))
                            .and_then(|p| u16::try_from(p.port).ok())
                            .ok_or_else(|| Error::PortNotFound {
                                target: format!("svc/{name}"),
                                port: port_name.clone(),
                                available: ports.iter().filter_map(|p| p.name.clone()).collect(),
                            })?
                    }
                };
                Ok(Destination::Fixed {
                    host: format!("{name}.{namespace}.svc.cluster.local"),
                    port,
                })
            }
            Target::Proxy { host } => match &pm.remote {
                RemotePort::Number(port) => Ok(Destination::Fixed {
                    host: host.clone(),
                    port: *port,
                }),
                RemotePort::Name(n) => Err(Error::PortNotFound {
                    target: spec.target.to_string(),
                    port: n.clone(),
                    available: Vec::new(),
                }),
            },
            target => {
                let endpoints = Endpoints::resolve(ctx, namespace, target, &pm.remote).await?;
                Ok(Destination::Pods {
                    endpoints: Arc::new(endpoints),
                    ctx: ctx.clone(),
                    namespace: namespace.to_string(),
                    label,
                    wait,
                })
            }
        }
    }

    /// The host and port for a new session.
    pub(crate) async fn pick(&self) -> Result<(String, u16)> {
        match self {
            Destination::Fixed { host, port } => Ok((host.clone(), *port)),
            Destination::Pods {
                endpoints,
                ctx,
                namespace,
                label,
                wait,
            } => {
                let no_pod = || Error::NoReadyPod {
                    target: label.clone(),
                    namespace: namespace.clone(),
                    waited: *wait,
                };
                let ep = endpoints.pick(*wait).await.ok_or_else(no_pod)?;
                let api: Api<Pod> = Api::namespaced(ctx.client().clone(), namespace);
                let pod = api.get(&ep.pod).await.map_err(|e| {
                    Error::from_kube(e, ctx.server(), "get", "pods", namespace, Some(&ep.pod))
                })?;
                let ip = pod.status.and_then(|s| s.pod_ip).ok_or_else(no_pod)?;
                Ok((ip, ep.port))
            }
        }
    }
}

/// The relay pods a forward uses: shared ones from the options, or its own.
pub(crate) fn relay_pods(ctx: &KubeContext, opts: &ForwardOptions) -> (Arc<RelayPods>, bool) {
    match &opts.relay_pods {
        Some(shared) => (shared.0.clone(), false),
        None => (RelayPods::new(ctx.clone(), opts.relay.clone()), true),
    }
}

pub(crate) fn namespace_for(spec: &ForwardSpec, ctx: &KubeContext) -> String {
    spec.namespace
        .clone()
        .unwrap_or_else(|| ctx.default_namespace().to_string())
}

/// Binds `pm` on every address of `spec` with `bind`, all on the same port.
pub(crate) async fn bind_all<T, F, Fut>(
    spec: &ForwardSpec,
    pm: &PortMapping,
    bind: F,
) -> Result<Vec<(T, SocketAddr)>>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(T, SocketAddr)>>,
{
    let mut port = pm.local;
    let mut out = Vec::new();
    let several = spec.addresses.len() > 1;
    for ip in &spec.addresses {
        let addr = SocketAddr::new(*ip, port);
        match bind(addr).await {
            Ok((sock, local)) => {
                port = local.port();
                out.push((sock, local));
            }
            Err(e) if several && ip.is_ipv6() => {
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

pub(crate) struct Running {
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Forwards UDP to a service, a pod or any host, through the namespace's relay pod.
///
/// Each local peer (address and port) gets its own session: its own tunnel and its own
/// socket at the relay, so replies, however many, go to that peer only. A session with no
/// datagram either way for [`ForwardOptions::udp_idle_timeout`] ends.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target};
/// use kforward_core::{Forwarder, UdpForwarder};
/// let spec = ForwardSpec::new(Target::Service { name: "dns".into() }, [PortMapping::new(0, 5353)])
///     .with_protocol(Protocol::Udp);
/// let mut fwd = UdpForwarder::new(ctx, spec, Default::default());
/// let bound = fwd.start().await?;
/// # Ok(()) }
/// ```
pub struct UdpForwarder {
    ctx: KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ForwardState>,
    stats: Arc<Stats>,
    running: Option<Running>,
    pods: Option<(Arc<RelayPods>, bool)>,
}

/// Live sessions by local peer: an id (so an ended session removes only itself) and its queue.
type Sessions = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>>>;

struct SessionCtx {
    socket: Arc<UdpSocket>,
    dest: Arc<Destination>,
    connector: RelayConnector,
    idle: Duration,
    stats: Arc<Stats>,
    events: broadcast::Sender<Event>,
    label: String,
    sessions: Sessions,
}

impl UdpForwarder {
    /// A forwarder for `spec` (its protocol is taken as UDP), not started.
    pub fn new(ctx: KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Self {
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let (state, _) = watch::channel(ForwardState::Idle);
        UdpForwarder {
            ctx,
            spec,
            opts,
            events,
            state,
            stats: Arc::new(Stats::default()),
            running: None,
            pods: None,
        }
    }

    /// The relay pods in use, once started.
    pub fn relay_pods(&self) -> Option<Arc<RelayPods>> {
        self.pods.as_ref().map(|(p, _)| p.clone())
    }

    async fn start_inner(&mut self) -> Result<Vec<BoundPort>> {
        let ns = namespace_for(&self.spec, &self.ctx);
        let (pods, owned) = relay_pods(&self.ctx, &self.opts);
        self.pods = Some((pods.clone(), owned));
        let connector = RelayConnector::new(pods, &ns);
        // The relay pod first, so that a pull error shows at start.
        connector.ensure().await?;
        let label = self.spec.label();
        let running = Running {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let mut bound = Vec::new();
        for pm in &self.spec.ports {
            let dest = Arc::new(
                Destination::resolve(
                    &self.ctx,
                    &ns,
                    &self.spec,
                    pm,
                    self.opts.pod_running_timeout,
                )
                .await?,
            );
            let sockets = bind_all(&self.spec, pm, |addr| async move {
                let s = UdpSocket::bind(addr).await?;
                let local = s.local_addr()?;
                Ok((s, local))
            })
            .await?;
            for (socket, local_addr) in sockets {
                bound.push(BoundPort {
                    local_addr,
                    remote: remote_label(&pm.remote),
                    pod_port: pm.remote.number(),
                });
                let sc = Arc::new(SessionCtx {
                    socket: Arc::new(socket),
                    dest: dest.clone(),
                    connector: connector.clone(),
                    idle: self.opts.udp_idle_timeout,
                    stats: self.stats.clone(),
                    events: self.events.clone(),
                    label: label.clone(),
                    sessions: Arc::default(),
                });
                running.tasks.spawn(receive_loop(
                    sc,
                    running.stop.clone(),
                    running.tasks.clone(),
                ));
                let _ = self.events.send(Event::Ready {
                    forward: label.clone(),
                    local_addr,
                    target: self.spec.target.to_string(),
                    namespace: ns.clone(),
                    remote_port: remote_label(&pm.remote),
                    pod_port: pm.remote.number(),
                });
            }
        }
        self.running = Some(running);
        Ok(bound)
    }
}

async fn receive_loop(sc: Arc<SessionCtx>, stop: CancellationToken, tasks: TaskTracker) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    loop {
        let (len, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = sc.socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier replies surface here on Linux; keep serving.
                    debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let datagram = buf[..len].to_vec();
        let mut map = sc.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, queue)) = map.get(&peer)
            && !queue.is_closed()
        {
            // A full queue drops the datagram, as UDP may.
            let _ = queue.try_send(datagram);
            continue;
        }
        let (queue, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = queue.try_send(datagram);
        next_id += 1;
        map.insert(peer, (next_id, queue));
        drop(map);
        let id = next_id;
        let sc = sc.clone();
        let stop = stop.clone();
        tasks.spawn(
            async move {
                sc.stats.connections_total.fetch_add(1, Ordering::Relaxed);
                sc.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                let result = tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    r = session(&sc, peer, rx) => r,
                };
                sc.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                if let Err(e) = result {
                    sc.stats.connections_failed.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "udp session failed");
                    let _ = sc.events.send(Event::Error {
                        forward: sc.label.clone(),
                        message: e.to_string(),
                    });
                }
                let mut map = sc.sessions.lock().unwrap_or_else(PoisonError::into_inner);
                if map.get(&peer).is_some_and(|(i, _)| *i == id) {
                    map.remove(&peer);
                }
            }
            .instrument(info_span!("udp_session", %peer)),
        );
    }
}

async fn session(sc: &SessionCtx, peer: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) -> Result<()> {
    let (host, port) = sc.dest.pick().await?;
    let tunnel = sc
        .connector
        .connect(Transport::Udp, &host, port, &peer.to_string())
        .await?;
    let pod = tunnel.pod().to_string();
    let _ = sc.events.send(Event::ConnectionOpened {
        forward: sc.label.clone(),
        peer,
        pod: pod.clone(),
        pod_port: tunnel.port(),
    });
    let (mut rd, mut wr) = tokio::io::split(tunnel);
    let mut inbuf = Vec::with_capacity(READ_BUF);
    let mut chunk = vec![0u8; READ_BUF];
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 2);
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let broken = |e: std::io::Error| Error::RelayHandshake {
        pod: pod.clone(),
        message: format!("the relay stream broke: {e}"),
    };
    let outcome: Result<()> = loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break Ok(()) };
                frame.clear();
                // A datagram comes from one recv of at most MAX_DATAGRAM bytes: it fits.
                if encode_datagram(&d, &mut frame).is_err() {
                    continue;
                }
                // Take what else is queued into the same write.
                while frame.len() < READ_BUF {
                    match rx.try_recv() {
                        Ok(more) => { let _ = encode_datagram(&more, &mut frame); bytes_out += more.len() as u64; }
                        Err(_) => break,
                    }
                }
                bytes_out += d.len() as u64;
                if let Err(e) = wr.write_all(&frame).await {
                    break Err(broken(e));
                }
                if let Err(e) = wr.flush().await {
                    break Err(broken(e));
                }
            }
            n = rd.read(&mut chunk) => {
                let n = match n {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) => break Err(broken(e)),
                };
                inbuf.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Ok(Some((d, len))) = decode_datagram(&inbuf[used..]) {
                    if let Err(e) = sc.socket.send_to(d, peer).await {
                        debug!(error = %e, "udp reply to the local peer failed");
                    }
                    bytes_in += d.len() as u64;
                    used += len;
                }
                inbuf.drain(..used);
            }
            () = tokio::time::sleep(sc.idle) => break Ok(()),
        }
    };
    sc.stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    sc.stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    let _ = sc.events.send(Event::ConnectionClosed {
        forward: sc.label.clone(),
        peer,
        bytes_out,
        bytes_in,
        error: outcome.as_ref().err().map(ToString::to_string),
    });
    outcome
}

/// Stops `running`, then deletes the relay pods when the forward owns them.
pub(crate) async fn stop_running(running: Running, pods: Option<&(Arc<RelayPods>, bool)>) {
    running.stop.cancel();
    running.tasks.close();
    running.tasks.wait().await;
    if let Some((pods, true)) = pods {
        pods.delete_all().await;
    }
}

#[async_trait]
impl Forwarder for UdpForwarder {
    async fn start(&mut self) -> Result<Vec<BoundPort>> {
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
        let Some(r) = self.running.take() else { return };
        stop_running(r, self.pods.as_ref()).await;
        self.state.send_replace(ForwardState::Stopped);
        let _ = self.events.send(Event::Stopped {
            forward: self.spec.label(),
        });
    }

    fn state(&self) -> ForwardState {
        self.state.borrow().clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn label(&self) -> String {
        self.spec.label()
    }
}

impl Drop for UdpForwarder {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.stop.cancel();
        }
    }
}
