//! The relay server: accepts connections, checks each handshake, and carries TCP bytes or
//! UDP datagrams to the destination the client names.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::egress::{Egress, connect_via_proxy};
use crate::protocol::{Request, Response, Status, Transport, decode_request, encode_response};

/// The shutdown signal [`RelayServer::run`] takes (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;

/// The port the relay listens on inside its pod unless told otherwise.
pub const DEFAULT_PORT: u16 = 7311;
/// How long a client has to send its whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to a TCP destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP session with no datagram either way for this long ends.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The relay exits when no client has been connected for this long.
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(600);
/// The environment variable a relay pod reads its idle exit from (see [`parse_idle_exit`]).
pub const IDLE_EXIT_ENV: &str = "KFORWARD_RELAY_IDLE_EXIT";

/// Parses an idle exit given in seconds, whole or decimal (`"600"`, `"0.5"`); `None` for
/// anything else, including negative, zero and non-finite values.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kforward_relay::server::parse_idle_exit;
///
/// assert_eq!(parse_idle_exit("600"), Some(Duration::from_secs(600)));
/// assert_eq!(parse_idle_exit("0.5"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_idle_exit("ten"), None);
/// ```
pub fn parse_idle_exit(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().parse().ok()?;
    // NaN, zero and negative values are refused (`try_from_secs_f64` takes zero).
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// How long open connections get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves a destination host name to addresses, as the relay's pod would.
///
/// # Example
///
/// ```
/// use kforward_relay::server::{Resolve, SystemResolver};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let ips = SystemResolver.resolve("127.0.0.1").await.unwrap();
/// assert_eq!(ips, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
/// # });
/// ```
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (an IP literal resolves to itself).
    ///
    /// # Errors
    ///
    /// When the name does not resolve; the message is shown to the user.
    fn resolve(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
}

/// The pod's own resolver (`/etc/resolv.conf`), through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

/// The relay server.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kforward_relay::server::{RelayServer, SystemResolver};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let server = tokio::spawn(RelayServer::run(
///     listener, "token".into(), SystemResolver, None, Duration::from_secs(600), shutdown.clone(),
/// ));
/// shutdown.cancel();
/// server.await.unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct RelayServer;

/// What a relay serves with: [`RelayServer::serve`]'s settings.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kforward_relay::egress::Egress;
/// use kforward_relay::server::{RelaySettings, SystemResolver};
/// let settings = RelaySettings::new("token", SystemResolver)
///     .with_idle_exit(Duration::from_secs(60))
///     .with_egress(Egress::direct());
/// ```
#[derive(Debug, Clone)]
pub struct RelaySettings<R> {
    /// The secret each client must present.
    pub token: String,
    /// Resolves destination host names (and the egress proxy's).
    pub resolver: R,
    /// The address outbound sockets bind to, when set.
    pub bind_source: Option<IpAddr>,
    /// How long the relay waits without any client before it exits.
    pub idle_exit: Duration,
    /// How TCP destinations are reached: directly or through a proxy.
    pub egress: Egress,
    /// Whether framed TCP ([`Transport::TcpFramed`]) is served; when not, it is refused as
    /// relays from before it refused it.
    pub framed_tcp: bool,
}

impl<R> RelaySettings<R> {
    /// Settings with `token` and `resolver`, no source address, [`DEFAULT_IDLE_EXIT`] and a
    /// direct egress.
    pub fn new(token: impl Into<String>, resolver: R) -> Self {
        RelaySettings {
            token: token.into(),
            resolver,
            bind_source: None,
            idle_exit: DEFAULT_IDLE_EXIT,
            egress: Egress::direct(),
            framed_tcp: true,
        }
    }

    /// Binds outbound sockets to `ip`.
    #[must_use]
    pub fn with_bind_source(mut self, ip: Option<IpAddr>) -> Self {
        self.bind_source = ip;
        self
    }

    /// Exits after `idle` without clients.
    #[must_use]
    pub fn with_idle_exit(mut self, idle: Duration) -> Self {
        self.idle_exit = idle;
        self
    }

    /// Reaches TCP destinations as `egress` says.
    #[must_use]
    pub fn with_egress(mut self, egress: Egress) -> Self {
        self.egress = egress;
        self
    }

    /// With `false`, refuses framed TCP requests as a bad request, with the message relays
    /// from before framed TCP gave (they knew protocols 0 and 1 only): the testkit's model
    /// of an older relay image, to test that clients fall back to plain TCP.
    #[must_use]
    pub fn with_framed_tcp(mut self, framed: bool) -> Self {
        self.framed_tcp = framed;
        self
    }
}

type Shared<R> = RelaySettings<R>;

/// Counts live connections; the count drops when the guard does.
struct Live(Arc<watch::Sender<usize>>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl RelayServer {
    /// Serves `listener` until `shutdown`, or until no client has been connected for
    /// `idle_exit`. Each connection must present `token`; host names go through
    /// `resolver`; outbound sockets bind to `bind_source` when it is set.
    ///
    /// On shutdown it stops accepting, gives open connections a few seconds, then closes them.
    pub async fn run<R: Resolve>(
        listener: TcpListener,
        token: String,
        resolver: R,
        bind_source: Option<IpAddr>,
        idle_exit: Duration,
        shutdown: CancellationToken,
    ) {
        let settings = RelaySettings::new(token, resolver)
            .with_bind_source(bind_source)
            .with_idle_exit(idle_exit);
        Self::serve(listener, settings, shutdown).await;
    }

    /// Serves `listener` with `settings` until `shutdown`, or until no client has been
    /// connected for the settings' idle exit; as [`run`](Self::run), with the egress proxy
    /// the settings name.
    pub async fn serve<R: Resolve>(
        listener: TcpListener,
        settings: RelaySettings<R>,
        shutdown: CancellationToken,
    ) {
        let idle_exit = settings.idle_exit;
        if let Some(proxy) = settings.egress.proxy() {
            info!(%proxy, no_proxy = ?settings.egress.no_proxy().rules().iter().map(ToString::to_string).collect::<Vec<_>>(), "TCP destinations through the egress proxy");
        }
        let shared = Arc::new(settings);
        let (count, mut count_rx) = watch::channel(0usize);
        let count = Arc::new(count);
        let tracker = TaskTracker::new();
        let kill = CancellationToken::new();
        let mut idle_since = Some(Instant::now());
        loop {
            let deadline = idle_since.map(|t| t + idle_exit);
            let idle = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    info!("relay shutting down");
                    break;
                }
                () = idle => {
                    info!(idle_secs = idle_exit.as_secs(), "no client connected for a while; relay exiting");
                    break;
                }
                Ok(()) = count_rx.changed() => {
                    let n = *count_rx.borrow_and_update();
                    idle_since = if n == 0 { Some(Instant::now()) } else { None };
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        count.send_modify(|n| *n += 1);
                        idle_since = None;
                        let live = Live(count.clone());
                        let shared = shared.clone();
                        let kill = kill.clone();
                        tracker.spawn(
                            async move {
                                let _live = live;
                                tokio::select! {
                                    () = kill.cancelled() => {}
                                    () = serve(stream, &shared) => {}
                                }
                            }
                            .instrument(info_span!("relay_conn", %peer)),
                        );
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            kill.cancel();
            tracker.wait().await;
        }
    }
}

/// Reads a request, leaving any bytes after it in the returned buffer.
async fn read_request(stream: &mut TcpStream) -> Result<(Request, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match decode_request(&buf) {
            Ok(Some((req, used))) => {
                buf.drain(..used);
                return Ok((req, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the handshake: {e}"))?;
        if n == 0 {
            return Err("the client closed the connection during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(
    stream: &mut TcpStream,
    status: Status,
    message: impl Into<String>,
) -> io::Result<()> {
    stream
        .write_all(&encode_response(&Response::new(status, message)))
        .await?;
    stream.flush().await
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn token_matches(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn serve<R: Resolve>(mut stream: TcpStream, shared: &Shared<R>) {
    let _ = stream.set_nodelay(true);
    let (req, leftover) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(r)) => r,
            Ok(Err(message)) => {
                debug!(%message, "bad handshake");
                let _ = answer(&mut stream, Status::BadRequest, message).await;
                return;
            }
            Err(_) => {
                let _ = answer(
                    &mut stream,
                    Status::BadRequest,
                    format!(
                        "no complete handshake within {}s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                )
                .await;
                return;
            }
        };
    if req.transport == Transport::TcpFramed && !shared.framed_tcp {
        // What `decode_request` said to protocol 2 before it knew it.
        let message = "unknown transport protocol 2 (expected 0 for tcp or 1 for udp)";
        debug!(%message, "bad handshake");
        let _ = answer(&mut stream, Status::BadRequest, message).await;
        return;
    }
    if !token_matches(&req.token, &shared.token) {
        warn!(client = %req.client_addr, "wrong relay token");
        let _ = answer(&mut stream, Status::NotAllowed, "wrong relay token").await;
        return;
    }
    let resolved = shared.resolver.resolve(&req.host).await;
    let tcp = matches!(req.transport, Transport::Tcp | Transport::TcpFramed);
    if tcp && shared.egress.proxy().is_some() {
        let rule = shared.egress.rule_for(&req.host, req.port).or_else(|| {
            resolved
                .as_ref()
                .ok()
                .and_then(|ips| shared.egress.rule_for_addresses(ips, req.port))
        });
        match rule {
            Some(rule) => debug!(host = %req.host, %rule, "direct: a NO_PROXY rule matches"),
            None => return serve_tcp_via_proxy(stream, leftover, &req, shared).await,
        }
    }
    // UDP never goes through the egress proxy: say so when it cannot go direct either.
    let udp_note = if req.transport == Transport::Udp && shared.egress.proxy().is_some() {
        " (UDP is never sent through the egress proxy, which carries TCP only)"
    } else {
        ""
    };
    let ips = match resolved {
        Ok(ips) if !ips.is_empty() => ips,
        Ok(_) => {
            let _ = answer(
                &mut stream,
                Status::NameNotResolved,
                format!("{} has no address{udp_note}", req.host),
            )
            .await;
            return;
        }
        Err(e) => {
            let _ = answer(
                &mut stream,
                Status::NameNotResolved,
                format!("{e}{udp_note}"),
            )
            .await;
            return;
        }
    };
    debug!(host = %req.host, port = req.port, transport = req.transport.as_str(), client = %req.client_addr, "relaying");
    match req.transport {
        Transport::Tcp | Transport::TcpFramed => {
            serve_tcp(stream, leftover, &req, &ips, shared.bind_source).await;
        }
        Transport::Udp => {
            serve_udp(stream, leftover, &req, &ips, shared.bind_source, udp_note).await;
        }
    }
}

/// Relays a TCP connection through the egress proxy.
async fn serve_tcp_via_proxy<R: Resolve>(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    req: &Request,
    shared: &Shared<R>,
) {
    let Some(proxy) = shared.egress.proxy() else {
        return;
    };
    let proxy_ips = match shared.resolver.resolve(proxy.host()).await {
        Ok(ips) => ips,
        Err(e) => {
            let message = format!(
                "cannot resolve the egress proxy {proxy}'s host from inside the cluster: {e}"
            );
            let _ = answer(&mut stream, Status::Refused, message).await;
            return;
        }
    };
    debug!(host = %req.host, port = req.port, %proxy, client = %req.client_addr, "relaying through the egress proxy");
    let connected = connect_via_proxy(
        &shared.egress,
        &proxy_ips,
        shared.bind_source,
        &req.host,
        req.port,
        CONNECT_TIMEOUT,
    )
    .await;
    let (mut upstream, early) = match connected {
        Ok(c) => c,
        Err(f) => {
            let status = if f.timed_out {
                Status::TimedOut
            } else {
                Status::Refused
            };
            let _ = answer(&mut stream, status, f.message).await;
            return;
        }
    };
    if answer(&mut stream, Status::Ok, "").await.is_err() {
        return;
    }
    let framed = req.transport == Transport::TcpFramed;
    if !early.is_empty() {
        // The destination's first bytes, read with the proxy's answer.
        let sent = if framed {
            // At most a proxy answer's read, far below u32::MAX.
            let mut f = crate::protocol::frame_header(early.len() as u32).to_vec();
            f.extend_from_slice(&early);
            stream.write_all(&f).await
        } else {
            stream.write_all(&early).await
        };
        if sent.is_err() {
            return;
        }
    }
    match relay_tcp(&mut stream, &mut upstream, leftover, framed).await {
        Ok((up, down)) => debug!(up, down, "tcp relay through the proxy finished"),
        Err(e) => debug!(error = %e, "tcp relay through the proxy ended with an error"),
    }
}

/// Copies the client's stream (its first bytes `leftover`) and the destination's
/// connection both ways, framed or not; the destination's bytes each way.
async fn relay_tcp(
    stream: &mut TcpStream,
    upstream: &mut TcpStream,
    leftover: Vec<u8>,
    framed: bool,
) -> io::Result<(u64, u64)> {
    if framed {
        return crate::copy::framed_both_ways(stream, upstream, leftover).await;
    }
    if !leftover.is_empty() {
        upstream.write_all(&leftover).await?;
    }
    crate::copy::both_ways(stream, upstream).await
}

fn source_for(bind_source: Option<IpAddr>, target: SocketAddr) -> Option<SocketAddr> {
    match (bind_source, target) {
        (Some(ip @ IpAddr::V4(_)), SocketAddr::V4(_))
        | (Some(ip @ IpAddr::V6(_)), SocketAddr::V6(_)) => Some(SocketAddr::new(ip, 0)),
        _ => None,
    }
}

async fn connect(target: SocketAddr, bind_source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(src) = source_for(bind_source, target) {
        socket.bind(src)?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no answer from {target} within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn failure_status(e: &io::Error) -> Status {
    match e.kind() {
        io::ErrorKind::TimedOut => Status::TimedOut,
        _ => Status::Refused,
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    req: &Request,
    ips: &[IpAddr],
    bind_source: Option<IpAddr>,
) {
    let mut last = None;
    let mut upstream = None;
    for ip in ips {
        match connect(SocketAddr::new(*ip, req.port), bind_source).await {
            Ok(s) => {
                upstream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut upstream) = upstream else {
        let e = last.unwrap_or_else(|| io::Error::other("no address"));
        let _ = answer(&mut stream, failure_status(&e), e.to_string()).await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    if answer(&mut stream, Status::Ok, "").await.is_err() {
        return;
    }
    let framed = req.transport == Transport::TcpFramed;
    match relay_tcp(&mut stream, &mut upstream, leftover, framed).await {
        Ok((up, down)) => debug!(up, down, "tcp relay finished"),
        Err(e) => debug!(error = %e, "tcp relay ended with an error"),
    }
}

async fn serve_udp(
    mut stream: TcpStream,
    buf: Vec<u8>,
    req: &Request,
    ips: &[IpAddr],
    bind_source: Option<IpAddr>,
    note: &str,
) {
    // Prefer IPv4, as sources and cluster networks mostly are.
    let ip = ips.iter().find(|i| i.is_ipv4()).or(ips.first()).copied();
    let Some(ip) = ip else { return };
    let target = SocketAddr::new(ip, req.port);
    let local = source_for(bind_source, target).unwrap_or(match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    });
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            let _ = answer(
                &mut stream,
                Status::Refused,
                format!("cannot open a UDP socket: {e}"),
            )
            .await;
            return;
        }
    };
    if let Err(e) = socket.connect(target).await {
        let _ = answer(&mut stream, failure_status(&e), format!("{e}{note}")).await;
        return;
    }
    if answer(&mut stream, Status::Ok, "").await.is_err() {
        return;
    }
    if let Err(e) = crate::udp::relay(stream, buf, &socket, UDP_IDLE_TIMEOUT).await {
        debug!(error = %e, %target, "udp session ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Egress;
    use crate::protocol::{decode_response, encode_request};

    async fn start(
        idle_exit: Duration,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(RelayServer::run(
            listener,
            "tok".into(),
            SystemResolver,
            None,
            idle_exit,
            stop.clone(),
        ));
        (addr, stop, task)
    }

    async fn ask(addr: SocketAddr, req: Request) -> (TcpStream, Response) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&encode_request(&req).expect("encode"))
            .await
            .expect("write");
        let mut buf = Vec::new();
        loop {
            if let Some((r, _)) = decode_response(&buf).expect("valid") {
                return (s, r);
            }
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1, "response complete");
            buf.push(b[0]);
        }
    }

    #[tokio::test]
    async fn tcp_relays_and_wrong_tokens_are_refused() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let (addr, stop, task) = start(DEFAULT_IDLE_EXIT).await;
        let (_, r) = ask(
            addr,
            Request::new("nope", Transport::Tcp, "127.0.0.1", echo_port),
        )
        .await;
        assert_eq!(r.status, Status::NotAllowed);
        let (mut s, r) = ask(
            addr,
            Request::new("tok", Transport::Tcp, "127.0.0.1", echo_port),
        )
        .await;
        assert_eq!(r.status, Status::Ok, "{r:?}");
        s.write_all(b"ping").await.expect("write");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"ping");
        drop(s);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .expect("joins");
    }

    /// Resolves nothing: a name only the egress proxy could resolve.
    struct NoNames;

    impl Resolve for NoNames {
        async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            match host.parse() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => Err(io::Error::other(format!("{host}: no such host"))),
            }
        }
    }

    #[tokio::test]
    async fn tcp_goes_to_the_egress_proxy_and_udp_never_does() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let env = |k: &str| (k == "HTTPS_PROXY").then(|| format!("http://alice:s3cret@{closed}"));
        let egress = Egress::from_env(env).expect("egress");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let settings = RelaySettings::new("tok", NoNames).with_egress(egress);
        let task = tokio::spawn(RelayServer::serve(listener, settings, stop.clone()));
        // TCP to a name the cluster cannot resolve goes to the proxy, which is down here.
        let (_, r) = ask(
            addr,
            Request::new("tok", Transport::Tcp, "db.corp.example", 5432),
        )
        .await;
        assert_eq!(r.status, Status::Refused, "{r:?}");
        assert!(
            r.message.contains(&format!(
                "egress proxy http://alice@{closed} (HTTPS_PROXY of the relay pod)"
            )) && r.message.contains("cannot connect to the proxy")
                && !r.message.contains("s3cret"),
            "{}",
            r.message
        );
        // UDP never goes through it, and the error says so.
        let (_, r) = ask(
            addr,
            Request::new("tok", Transport::Udp, "dns.corp.example", 53),
        )
        .await;
        assert_eq!(r.status, Status::NameNotResolved, "{r:?}");
        assert!(
            r.message
                .contains("UDP is never sent through the egress proxy"),
            "{}",
            r.message
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .expect("joins");
    }

    #[test]
    fn idle_exit_values() {
        assert_eq!(parse_idle_exit(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_idle_exit("1.25"), Some(Duration::from_millis(1250)));
        for bad in ["", "0", "-1", "NaN", "inf", "1e400", "10m"] {
            assert_eq!(parse_idle_exit(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn exits_when_idle() {
        let (_, _stop, task) = start(Duration::from_millis(200)).await;
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("exits")
            .expect("joins");
    }
}
