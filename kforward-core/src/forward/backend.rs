//! The cluster side of a forward: one connection to the cluster, the route of each port
//! mapping, and the dialer. It is replaced whole when the forward reconnects (new
//! credentials, another context) while the local listeners stay bound; every task of the
//! forward holds a `watch` receiver of it and sees a new one at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::debug;

use super::dialer::{Destination, Dialer};
use super::route::Route;
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::proxy_protocol::{self, Version};
use crate::relay::RelayPods;
use crate::spec::ForwardSpec;
use crate::transport::Stream;

/// Streams tried for one connection before it is given up.
const ATTEMPTS: usize = 4;
/// After a stream to a pod failed, how long to wait for the watch to drop that pod.
const RETRY_WAIT: Duration = Duration::from_secs(3);
/// How long a connection that met a 401 waits for the reloaded credentials.
const RELOAD_WAIT: Duration = Duration::from_secs(10);
/// How long a probe listens for an error from the pod's port after the stream opens.
const PROBE_LISTEN: Duration = Duration::from_millis(300);

/// The cluster side of a forward.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The namespace of the target.
    pub(crate) namespace: String,
    /// One per port mapping, in the spec's order.
    pub(crate) routes: Vec<Route>,
    pub(crate) dialer: Dialer,
}

/// The backend a forward's tasks share: replaced whole on reconnect.
pub(crate) type SharedBackend = watch::Receiver<Arc<Backend>>;

impl Backend {
    /// Works out every port mapping of `spec` against `ctx`, waiting up to `wait` for a
    /// ready pod behind each.
    ///
    /// # Errors
    ///
    /// The target is missing, no pod is ready in time, or the API server refuses.
    pub(crate) async fn resolve(
        ctx: &KubeContext,
        spec: &ForwardSpec,
        wait: Duration,
        relay: Option<Arc<RelayPods>>,
        transport: crate::transport::Transport,
    ) -> Result<Backend> {
        let namespace = namespace_of(spec, ctx);
        let target = spec.target.to_string();
        let mut routes = Vec::with_capacity(spec.ports.len());
        for pm in &spec.ports {
            let route = Route::resolve(ctx, &namespace, spec, pm).await?;
            route.wait_ready(&target, &namespace, wait).await?;
            routes.push(route);
        }
        Ok(Backend {
            namespace,
            routes,
            dialer: Dialer::new(ctx.clone(), relay, transport),
        })
    }

    /// The connection to the cluster.
    pub(crate) fn ctx(&self) -> &KubeContext {
        self.dialer.context()
    }

    /// The ready pods of every port mapping that streams to pods.
    fn pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| match r {
                Route::Pods(eps) => Some(eps.current()),
                Route::Host { .. } | Route::PodAddress(_) => None,
            })
            .flatten()
            .map(|ep| ep.pod)
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }

    /// Opens a session to one ready pod before the forward listens, which settles the
    /// transport (`auto` finds what the cluster offers); returns it. A forward whose
    /// routes lead to no pod (relayed ones) says `auto`.
    ///
    /// # Errors
    ///
    /// [`Error::TransportRefused`] when the cluster does not offer a transport the forward
    /// insists on. Other failures are left to the connections and the probes (a pod
    /// restarting now is no reason not to start).
    pub(crate) async fn prepare(&self) -> Result<crate::transport::Transport> {
        if let Some(pod) = self.pods().into_iter().next() {
            match self.dialer.prepare(&self.namespace, &pod).await {
                Err(e @ Error::TransportRefused { .. }) => return Err(e),
                Err(e) => debug!(pod, error = %e, "no session opened ahead"),
                Ok(_) => {}
            }
        }
        Ok(self.dialer.transport())
    }

    /// Keeps sessions ready to the pods the forward routes to now, and only to them.
    pub(crate) fn keep_ready(&self) {
        let pods = self.pods();
        if !pods.is_empty() {
            self.dialer.keep_ready(&self.namespace, &pods);
        }
    }

    /// Lets go of the pods this backend kept sessions ready to (the forward stops or a
    /// fresh backend replaced this one); connections running go on.
    pub(crate) fn release(&self) {
        self.dialer.release();
    }

    /// Checks the forward end to end: the API server answers, a stream to a ready pod of
    /// each port opens without an error from the pod's port (starting with `header`'s
    /// `LOCAL`/`UNKNOWN` header, so the pod does not count it as a client), and the relay
    /// pod of relayed ports takes a stream. No pod ready right now (a restart in progress)
    /// is the endpoint watch's business, not a failure: connections wait for the next pod.
    ///
    /// # Errors
    ///
    /// The first failure met.
    pub(crate) async fn probe(&self, timeout: Duration, header: Option<Version>) -> Result<()> {
        let ctx = self.ctx();
        let ns = &self.namespace;
        let server = ctx.server().to_string();
        let slow = |what: &str| Error::Unreachable {
            server: server.clone(),
            message: format!("{what} took longer than {}s", timeout.as_secs_f32()),
        };
        probe_version(ctx, ns, timeout).await?;
        let probes = ctx.probes();
        for route in &self.routes {
            let (key, dest) = match route {
                Route::Pods(eps) => {
                    let Some(ep) = eps.current().into_iter().next() else {
                        continue;
                    };
                    let key = format!("stream {ns}/{}:{} {header:?}", ep.pod, ep.port);
                    let dest = Destination::Pod {
                        namespace: ns.clone(),
                        pod: ep.pod,
                        port: ep.port,
                    };
                    (key, Some(dest))
                }
                Route::Host { .. } | Route::PodAddress(_) => {
                    let relay = self.dialer.relay(ns)?;
                    (format!("relay {} {ns}", relay.pods().session()), None)
                }
            };
            let work = async {
                match &dest {
                    Some(d) => {
                        let client = SocketAddr::from(([0, 0, 0, 0], 0));
                        listen(self.dialer.dial(d, client).await?, header).await
                    }
                    None => self.dialer.relay(ns)?.probe(PROBE_LISTEN).await,
                }
            };
            probes
                .run(key, || async {
                    tokio::time::timeout(timeout, work)
                        .await
                        .map_err(|_| slow("the port-forward probe"))?
                })
                .await?;
        }
        Ok(())
    }
}

/// Checks that the API server of `ctx` answers within `timeout`. Checks are shared with
/// the context's other forwards (`single_flight`): 200 forwards of one cluster make one
/// `/version` call per round.
///
/// # Errors
///
/// [`Error::Unreachable`] when it is slow, or the API server's error.
pub(crate) async fn probe_version(ctx: &KubeContext, ns: &str, timeout: Duration) -> Result<()> {
    let server = ctx.server().to_string();
    ctx.probes()
        .run(format!("version {server}"), || async {
            match tokio::time::timeout(timeout, ctx.client().apiserver_version()).await {
                Err(_) => Err(Error::Unreachable {
                    server: server.clone(),
                    message: format!(
                        "asking for the version took longer than {}s",
                        timeout.as_secs_f32()
                    ),
                }),
                Ok(Err(e)) => Err(Error::from_kube(e, &server, "get", "version", ns, None)),
                Ok(Ok(_)) => Ok(()),
            }
        })
        .await
}

/// Waits for the stream to be up, sends `header`'s header for a connection of kforward's
/// own, and listens briefly for an error from the pod's port (it arrives right after the
/// stream opens).
async fn listen(mut s: Stream, header: Option<Version>) -> Result<()> {
    s.ready().await?;
    let (pod, port) = (s.pod().to_string(), s.port());
    let broken = |e: std::io::Error| Error::Tunnel {
        pod: pod.clone(),
        port,
        message: e.to_string(),
    };
    let (mut reader, mut writer) = s.into_split();
    if let Some(v) = header {
        writer
            .write_all(&proxy_protocol::encode(v, None))
            .await
            .map_err(&broken)?;
    }
    match tokio::time::timeout(PROBE_LISTEN, reader.read_chunk()).await {
        Ok(Err(e)) => Err(broken(e)),
        _ => Ok(()),
    }
}

/// The namespace `spec` targets with `ctx`.
fn namespace_of(spec: &ForwardSpec, ctx: &KubeContext) -> String {
    spec.namespace
        .clone()
        .unwrap_or_else(|| ctx.default_namespace().to_string())
}

/// What [`open_stream`] needs besides the backend.
pub(crate) struct Open<'a> {
    /// Names the target in errors.
    pub(crate) label: &'a str,
    /// How long to wait for a ready pod.
    pub(crate) wait: Duration,
    /// Asks the forward to read the kubeconfig again (after a 401).
    pub(crate) reload: &'a Arc<Notify>,
    /// Where a connection opened again on another pod is told.
    pub(crate) events: &'a tokio::sync::broadcast::Sender<crate::forward::Event>,
}

/// Opens a stream for a new connection or UDP session of port mapping `index` from
/// `client`. A pod that fails is given a moment to leave the endpoints and another is
/// tried; rejected credentials make the forward read the kubeconfig again, and the stream
/// is tried with the new ones. A SPDY stream to a pod is opened again the same way, with
/// what was written on it, should the runtime say that its pod is gone (the
/// answer comes after the first bytes were sent: a session opened before the pod was
/// deleted and created again under its name stays bound to the old one).
///
/// # Errors
///
/// No ready pod in time, or the last failure after [`ATTEMPTS`] tries.
pub(crate) async fn open_stream(
    shared: &SharedBackend,
    index: usize,
    client: SocketAddr,
    o: &Open<'_>,
) -> Result<Stream> {
    let (mut stream, failed) = open_once(shared, index, client, o).await?;
    if let (Stream::Spdy(p), Some(failed)) = (&mut stream, failed) {
        let (shared, label, wait, reload, events, from) = (
            shared.clone(),
            o.label.to_string(),
            o.wait,
            o.reload.clone(),
            o.events.clone(),
            p.pod().to_string(),
        );
        p.set_reroute(Arc::new(move || {
            let (shared, label, reload, failed, events, from) = (
                shared.clone(),
                label.clone(),
                reload.clone(),
                failed.clone(),
                events.clone(),
                from.clone(),
            );
            Box::pin(async move {
                // Give the watch a moment to drop the pod (or to see it created again).
                failed.settle().await;
                let o = Open {
                    label: &label,
                    wait,
                    reload: &reload,
                    events: &events,
                };
                let moved = match open_once(&shared, index, client, &o).await?.0 {
                    Stream::Spdy(p) => p,
                    Stream::WebSocket(t) => crate::transport::spdy::PodStream::from(t),
                    // Only a route to pods has a stream moved, and its streams go to pods.
                    Stream::Relay(f) => {
                        return Err(crate::Error::Tunnel {
                            pod: f.pod().to_string(),
                            port: f.port(),
                            message: "a pod's route gave a relay stream".into(),
                        });
                    }
                };
                // Nobody listening is fine.
                let _ = events.send(crate::forward::Event::ConnectionMoved {
                    forward: label,
                    peer: client,
                    from,
                    pod: moved.pod().to_string(),
                    pod_port: moved.port(),
                });
                Ok(moved)
            })
        }));
    }
    Ok(stream)
}

/// The endpoint a pod stream went to, to wait on should the stream fail.
#[derive(Clone)]
struct Picked {
    eps: Arc<crate::resolve::Endpoints>,
    ep: crate::resolve::Endpoint,
}

impl Picked {
    /// Waits up to [`RETRY_WAIT`] for the watch to drop the endpoint.
    async fn settle(&self) {
        let mut rx = self.eps.subscribe();
        let ep = &self.ep;
        let _ = tokio::time::timeout(RETRY_WAIT, rx.wait_for(|v| !v.contains(ep))).await;
    }
}

/// [`open_stream`]'s tries; also the endpoint a pod stream went to.
async fn open_once(
    shared: &SharedBackend,
    index: usize,
    client: SocketAddr,
    o: &Open<'_>,
) -> Result<(Stream, Option<Picked>)> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let backend = shared.borrow().clone();
        let route = &backend.routes[index];
        let (dest, ep) = route
            .pick(backend.ctx(), &backend.namespace, o.label, o.wait)
            .await?;
        let picked = match (route, &ep) {
            (Route::Pods(eps), Some(ep)) => Some(Picked {
                eps: eps.clone(),
                ep: ep.clone(),
            }),
            _ => None,
        };
        let e = match backend.dialer.dial(&dest, client).await {
            Ok(s) => return Ok((s, picked)),
            Err(e) => e,
        };
        if e.is_unauthorized() {
            // Expired credentials: have the kubeconfig read again (exec plugins re-run),
            // and wait briefly for the new cluster side.
            o.reload.notify_one();
            let mut rx = shared.clone();
            let swapped = rx.wait_for(|b| !Arc::ptr_eq(b, &backend));
            let _ = tokio::time::timeout(RELOAD_WAIT, swapped).await;
        } else if let (true, Some(p)) = (e.is_retryable(), &picked) {
            // The pod may have just gone away: give the watch a moment to drop it, then
            // try the next one.
            debug!(pod = %p.ep.pod, error = %e, "stream failed; trying another pod");
            p.settle().await;
        } else {
            return Err(e);
        }
        last = Some(e);
    }
    Err(last.unwrap_or(Error::NoReadyPod {
        target: o.label.to_string(),
        namespace: shared.borrow().namespace.clone(),
        waited: o.wait,
    }))
}
