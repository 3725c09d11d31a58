//! Real servers for a pod's containers, chosen by image name and bound to the pod's IP.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};

use super::checksum::checksum_tcp;
use super::echo::{echo_tcp, echo_udp};
use super::error::{NetworkError, Result};
use super::http::{Reply, ReplyBody, serve_http};
use super::protocol::Protocol;
use super::relay::{UdpRelayConfig, UdpRoute, relay_tcp, relay_udp};
use super::tasks::{TaskGroup, accept_loop, bind_tcp, bind_udp};

/// Environment variable naming the passthrough target for every port (`host:port`).
pub const PASSTHROUGH_TARGET: &str = "PASSTHROUGH_TARGET";
/// Environment variable the kubelet sets to the cluster DNS server (`ip:port`), standing in
/// for the pod's `/etc/resolv.conf`.
pub const POD_DNS_ENV: &str = "KFORWARD_TESTKIT_DNS";
/// Environment variable a relay pod may set to its idle exit, in seconds (decimals allowed),
/// read as the real relay reads it.
pub const RELAY_IDLE_EXIT_ENV: &str = kforward_relay::server::IDLE_EXIT_ENV;
/// A UDP passthrough session with no traffic for this long ends.
const PASSTHROUGH_UDP_IDLE: Duration = Duration::from_secs(60);
/// Largest body `GET /bytes/N` serves.
pub const MAX_PATTERN_BYTES: u64 = 4 << 30;

/// One port a container declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    /// The port number (1..=65535).
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// What a container image runs, decided by the end of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `.../http`: an HTTP/1.1 server on every TCP port.
    Http,
    /// `.../echo`: TCP echo on every TCP port.
    Echo,
    /// `.../udp-echo`: UDP echo on every UDP port and TCP echo on every TCP port.
    UdpEcho,
    /// `.../passthrough`: forwards every port to `PASSTHROUGH_TARGET[_<port>]`.
    Passthrough,
    /// `.../checksum`: on every TCP port, reads to EOF, then answers
    /// `<bytes> <sha256 hex>\n` (see [`checksum_line`](super::checksum_line)) and closes.
    Checksum,
    /// Any image whose name contains `kforward-relay`: the real relay server
    /// (`kforward_relay::server`) on the first TCP port (or `KFORWARD_RELAY_PORT`), token
    /// from `KFORWARD_RELAY_TOKEN`, names resolved with the pod's resolver, outbound sockets
    /// bound to the pod IP. An image tagged `0.0.<anything>` stands for a relay from before
    /// framed TCP: it refuses that protocol as those relays did.
    Relay,
    /// `.../sleep` and any unknown image: nothing listens.
    Sleep,
}

impl WorkloadKind {
    /// Picks the kind from an image reference: the last path segment, without tag or
    /// digest, must end with `http`, `echo`, `udp-echo`, `passthrough`, `checksum` or `sleep` (after a
    /// `-`, `_`, `.` or at the start), e.g. `kforward/http:1` or `ghcr.io/x/kforward-http`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_testkit::network::WorkloadKind;
    ///
    /// assert_eq!(WorkloadKind::from_image("ghcr.io/x/kforward-udp-echo:2"), WorkloadKind::UdpEcho);
    /// assert_eq!(WorkloadKind::from_image("nginx:1.27"), WorkloadKind::Sleep);
    /// ```
    pub fn from_image(image: &str) -> Self {
        let last = image.rsplit('/').next().unwrap_or(image);
        if last.contains("kforward-relay") {
            return Self::Relay;
        }
        let name = last.split(['@', ':']).next().unwrap_or(last);
        let ends_with_word = |word: &str| {
            name.strip_suffix(word)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with(['-', '_', '.']))
        };
        // `udp-echo` first: it also ends with `echo`.
        [
            ("udp-echo", Self::UdpEcho),
            ("passthrough", Self::Passthrough),
            ("checksum", Self::Checksum),
            ("http", Self::Http),
            ("echo", Self::Echo),
        ]
        .into_iter()
        .find(|(word, _)| ends_with_word(word))
        .map_or(Self::Sleep, |(_, kind)| kind)
    }
}

/// Whether a relay image stands for a relay from before framed TCP: tagged `0.0.<anything>`.
///
/// # Example
///
/// ```
/// use kforward_testkit::network::before_framed_tcp;
///
/// assert!(before_framed_tcp("ghcr.io/kforward/kforward-relay:0.0.9"));
/// assert!(!before_framed_tcp("ghcr.io/kforward/kforward-relay:0.1.0"));
/// assert!(!before_framed_tcp("localhost:5000/kforward-relay"));
/// ```
pub fn before_framed_tcp(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .is_some_and(|(_, tag)| tag.starts_with("0.0."))
}

/// Everything needed to run a pod's workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// The container image; see [`WorkloadKind::from_image`].
    pub image: String,
    /// The pod's name (served by `http` pods).
    pub pod_name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The loopback address every server listens on.
    pub pod_ip: Ipv4Addr,
    /// The container's declared ports.
    pub ports: Vec<ContainerPort>,
    /// The container's environment.
    pub env: BTreeMap<String, String>,
}

impl WorkloadSpec {
    fn misconfigured(&self, reason: String) -> NetworkError {
        NetworkError::BadImageConfig {
            image: self.image.clone(),
            pod: format!("{}/{}", self.namespace, self.pod_name),
            reason,
        }
    }
}

/// The running servers of one pod. Dropping it (or [`stop`](Self::stop)) closes every
/// listener and every live connection.
#[derive(Debug)]
pub struct WorkloadHandle {
    kind: WorkloadKind,
    listening: Vec<(Protocol, SocketAddr)>,
    tasks: TaskGroup,
}

impl WorkloadHandle {
    /// What the image runs.
    pub fn kind(&self) -> WorkloadKind {
        self.kind
    }

    /// The addresses servers listen on (empty for `sleep`).
    pub fn listening(&self) -> &[(Protocol, SocketAddr)] {
        &self.listening
    }

    /// Whether the workload's process ended by itself (the relay's idle exit), rather than
    /// being stopped; the kubelet then reports the container terminated.
    pub fn has_exited(&self) -> bool {
        self.tasks.has_exited()
    }

    /// Stops every server and waits until all listeners and connections are closed.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// A bound socket waiting for its server.
enum Bound {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
}

/// Starts the servers of a pod's image on `pod_ip`, one per declared port.
///
/// # Errors
///
/// [`NetworkError::Bind`] naming the address when a port cannot be bound (the caller may
/// retry on another IP), [`NetworkError::BadImageConfig`] for invalid ports or a passthrough
/// pod without a usable target.
///
/// # Example
///
/// ```
/// use kforward_testkit::network::{AddressPool, ContainerPort, Protocol, WorkloadSpec, start_workload};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = AddressPool::new();
/// let pod = start_workload(WorkloadSpec {
///     image: "kforward/echo:1".into(),
///     pod_name: "echo-0".into(),
///     namespace: "default".into(),
///     pod_ip: pool.next_pod_ip(),
///     ports: vec![ContainerPort { port: 7000, protocol: Protocol::Tcp }],
///     env: Default::default(),
/// })
/// .await?;
/// assert_eq!(pod.listening().len(), 1);
/// pod.stop().await;
/// # Ok(())
/// # }
/// ```
pub async fn start_workload(spec: WorkloadSpec) -> Result<WorkloadHandle> {
    let kind = WorkloadKind::from_image(&spec.image);
    if kind == WorkloadKind::Relay {
        return start_relay(spec).await;
    }
    let mut seen = HashSet::new();
    for port in &spec.ports {
        if port.port == 0 {
            return Err(spec.misconfigured("containerPort must be in 1..=65535".into()));
        }
        if !seen.insert(*port) {
            return Err(spec.misconfigured(format!(
                "port {}/{} is declared twice",
                port.port, port.protocol
            )));
        }
    }
    let serves = |protocol: Protocol| match kind {
        WorkloadKind::Http | WorkloadKind::Echo | WorkloadKind::Checksum => {
            protocol == Protocol::Tcp
        }
        WorkloadKind::UdpEcho | WorkloadKind::Passthrough => true,
        WorkloadKind::Sleep | WorkloadKind::Relay => false,
    };
    let mut targets = BTreeMap::new();
    if kind == WorkloadKind::Passthrough {
        for port in &spec.ports {
            targets.insert(port.port, passthrough_target(&spec, port.port).await?);
        }
    }
    // Bind everything before spawning anything, so a failure leaves nothing running.
    let mut bound = Vec::new();
    let mut listening = Vec::new();
    for port in spec.ports.iter().filter(|p| serves(p.protocol)) {
        let addr = SocketAddr::from((spec.pod_ip, port.port));
        match port.protocol {
            Protocol::Tcp => {
                let (listener, local) = bind_tcp(addr).await?;
                listening.push((Protocol::Tcp, local));
                bound.push(Bound::Tcp(listener, port.port));
            }
            Protocol::Udp => {
                let (socket, local) = bind_udp(addr).await?;
                listening.push((Protocol::Udp, local));
                bound.push(Bound::Udp(socket, port.port));
            }
        }
    }
    let mut tasks = TaskGroup::new();
    for socket in bound {
        let token = tasks.token();
        match (socket, kind) {
            (Bound::Tcp(listener, _), WorkloadKind::Http) => {
                let pod = spec.pod_name.clone();
                tasks.spawn(accept_loop(listener, token, "http", move |stream, peer| {
                    let pod = pod.clone();
                    serve_http(stream, peer, move |method, path, _| {
                        pod_route(&pod, method, path)
                    })
                }));
            }
            (Bound::Tcp(listener, port), WorkloadKind::Passthrough) => {
                let (source, target) = (spec.pod_ip, targets.get(&port).copied());
                tasks.spawn(accept_loop(
                    listener,
                    token,
                    "passthrough",
                    move |stream, _| async move {
                        match target {
                            Some(target) => relay_tcp(stream, Some(source), target).await,
                            None => super::tasks::reset(stream),
                        }
                    },
                ));
            }
            (Bound::Tcp(listener, _), WorkloadKind::Checksum) => {
                tasks.spawn(accept_loop(listener, token, "checksum", checksum_tcp));
            }
            (Bound::Tcp(listener, _), _) => {
                tasks.spawn(accept_loop(listener, token, "echo", echo_tcp));
            }
            (Bound::Udp(socket, port), WorkloadKind::Passthrough) => {
                let config = UdpRelayConfig {
                    source: Some(spec.pod_ip),
                    idle_timeout: PASSTHROUGH_UDP_IDLE,
                };
                let route = FixedTarget(targets.get(&port).copied());
                tasks.spawn(relay_udp(socket, config, route, token));
            }
            (Bound::Udp(socket, _), _) => {
                tasks.spawn(echo_udp(socket, |_| true, token));
            }
        }
    }
    tracing::debug!(pod = %spec.pod_name, ip = %spec.pod_ip, ?kind, ?listening, "workload started");
    Ok(WorkloadHandle {
        kind,
        listening,
        tasks,
    })
}

/// Resolves names the way the relay pod's own resolver would.
struct RelayResolver(Option<super::dns::PodResolver>);

impl kforward_relay::server::Resolve for RelayResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        match &self.0 {
            Some(r) => r
                .resolve(host)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())),
            None => kforward_relay::server::SystemResolver.resolve(host).await,
        }
    }
}

/// Runs the real relay server on the pod's IP.
async fn start_relay(spec: WorkloadSpec) -> Result<WorkloadHandle> {
    let port = match spec.env.get("KFORWARD_RELAY_PORT") {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| spec.misconfigured(format!("KFORWARD_RELAY_PORT {p:?} is not a port")))?,
        None => spec
            .ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
            .ok_or_else(|| {
                spec.misconfigured("the relay needs a TCP port or KFORWARD_RELAY_PORT".into())
            })?,
    };
    let Some(token) = spec.env.get("KFORWARD_RELAY_TOKEN").cloned() else {
        return Err(spec.misconfigured("the relay needs KFORWARD_RELAY_TOKEN".into()));
    };
    let idle_exit = spec
        .env
        .get(RELAY_IDLE_EXIT_ENV)
        .and_then(|v| kforward_relay::server::parse_idle_exit(v))
        .unwrap_or(kforward_relay::server::DEFAULT_IDLE_EXIT);
    let resolver = spec
        .env
        .get(POD_DNS_ENV)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|dns| super::dns::PodResolver::for_namespace(dns, &spec.namespace));
    // The egress proxy (`HTTPS_PROXY`, `NO_PROXY`) from the pod's environment, as the
    // relay binary reads it from its own.
    let egress = kforward_relay::egress::Egress::from_env(|k| spec.env.get(k).cloned())
        .map_err(|e| spec.misconfigured(e.to_string()))?;
    let (listener, local) = bind_tcp(SocketAddr::from((spec.pod_ip, port))).await?;
    let mut tasks = TaskGroup::new();
    let token_stop = tasks.token();
    let source = Some(std::net::IpAddr::V4(spec.pod_ip));
    let exited = tasks.exited();
    let settings = kforward_relay::server::RelaySettings::new(token, RelayResolver(resolver))
        .with_bind_source(source)
        .with_idle_exit(idle_exit)
        .with_egress(egress)
        .with_framed_tcp(!before_framed_tcp(&spec.image));
    tasks.spawn(async move {
        let stopped = token_stop.clone();
        kforward_relay::server::RelayServer::serve(listener, settings, token_stop).await;
        // Returning without being asked to is the container's process exiting (idle exit).
        if !stopped.is_cancelled() {
            exited.cancel();
        }
    });
    tracing::debug!(pod = %spec.pod_name, ip = %spec.pod_ip, "relay started");
    Ok(WorkloadHandle {
        kind: WorkloadKind::Relay,
        listening: vec![(Protocol::Tcp, local)],
        tasks,
    })
}

/// Every UDP session of a passthrough port goes to the same target.
struct FixedTarget(Option<SocketAddr>);

impl UdpRoute for FixedTarget {
    fn pick(&self, _peer: SocketAddr) -> Option<SocketAddr> {
        self.0
    }
}

/// Finds and resolves the target of a passthrough port: `PASSTHROUGH_TARGET_<port>`, else
/// `PASSTHROUGH_TARGET`. IPv4 results are preferred, as outbound sockets bind to the pod IP.
async fn passthrough_target(spec: &WorkloadSpec, port: u16) -> Result<SocketAddr> {
    let per_port = format!("{PASSTHROUGH_TARGET}_{port}");
    let Some(value) = spec.env.get(&per_port).or(spec.env.get(PASSTHROUGH_TARGET)) else {
        return Err(spec.misconfigured(format!(
            "passthrough needs env {per_port} or {PASSTHROUGH_TARGET} set to host:port"
        )));
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(value.as_str())
        .await
        .map_err(|error| spec.misconfigured(format!("cannot resolve target {value:?}: {error}")))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| spec.misconfigured(format!("target {value:?} resolves to no address")))
}

/// The routes of an `http` pod.
fn pod_route(pod: &str, method: &http::Method, path: &str) -> Reply {
    use http::{Method, StatusCode};
    let mut reply = match (method, path) {
        (&Method::GET, "/") => Reply::text(StatusCode::OK, format!("{pod}\n")),
        (&Method::GET, _) if path.starts_with("/bytes/") => match path["/bytes/".len()..].parse() {
            Ok(n) if n <= MAX_PATTERN_BYTES => Reply {
                status: StatusCode::OK,
                headers: vec![(
                    http::header::CONTENT_TYPE,
                    "application/octet-stream".to_owned(),
                )],
                body: ReplyBody::Pattern(n),
            },
            _ => Reply::text(
                StatusCode::BAD_REQUEST,
                format!("N must be 0..={MAX_PATTERN_BYTES}\n"),
            ),
        },
        (&Method::POST, "/echo") => Reply {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CONTENT_TYPE,
                "application/octet-stream".to_owned(),
            )],
            body: ReplyBody::Echo,
        },
        (_, "/" | "/echo") => Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        (_, _) if path.starts_with("/bytes/") => {
            Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => Reply::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    reply.headers.push((
        http::header::HeaderName::from_static("x-pod-name"),
        pod.to_owned(),
    ));
    reply
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
