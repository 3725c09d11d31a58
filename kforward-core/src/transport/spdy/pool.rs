//! A forward's SPDY sessions, kept ready per pod: a new connection costs two SYN_STREAMs
//! on a session that is already open, with its first bytes in the same write.
//!
//! Sessions open on demand (or ahead of time with [`SessionPool::prepare`]) and stay open,
//! kept alive by their PINGs; a session that ends (its connection closed, a PING went
//! unanswered, the server sent GOAWAY) leaves the pool and the next connection opens a new
//! one, so connections that had not started yet never see the old one's end. Connections
//! share a session until it carries [`PoolConfig::streams_per_session`], then a second
//! session opens in the background (up to [`PoolConfig::max_sessions_per_pod`]), so one
//! busy session does not cap a burst and the work spreads over the runtime's threads.
//! Sessions beyond the first that sit without streams for [`PoolConfig::idle_extra`] are
//! closed: an idle forward keeps one session per pod it used, and none for pods it never
//! reached.
//!
//! With [`Transport::Auto`] the first session to a cluster finds which transport it offers
//! (the WebSocket tunnel, the plain upgrade, then `v4.channel.k8s.io`) and the cluster's
//! [`KubeContext`] remembers it. Where only `v4.channel.k8s.io` is offered, each
//! connection gets its own [`Tunnel`], as before, and has no half-close.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::SpdyError;
use super::open::{OpenError, SpdyTransport, open};
use super::session::{Session, SessionConfig, SessionLoad};
use super::stream::SpdyStream;
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::transport::websocket::Tunnel;

/// How long a connection keeps trying to open a session while the API server cannot be
/// reached (a restart takes moments), before it fails.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(10);
/// The first wait between such tries; it doubles, up to a second.
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(50);

/// How a [`SessionPool`] spreads connections; [`Default`] is what kforward uses.
///
/// # Example
///
/// ```
/// let config = kforward_core::transport::spdy::PoolConfig {
///     streams_per_session: 8,
///     ..Default::default()
/// };
/// assert!(config.max_sessions_per_pod >= 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Each session's own settings.
    pub session: SessionConfig,
    /// Connections a session carries before the pool opens another for the same pod.
    pub streams_per_session: usize,
    /// The most sessions open to one pod.
    pub max_sessions_per_pod: usize,
    /// How long a session beyond a pod's first may sit without connections.
    pub idle_extra: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            session: SessionConfig::default(),
            streams_per_session: 32,
            max_sessions_per_pod: 8,
            idle_extra: Duration::from_secs(30),
        }
    }
}

/// One connection to a pod's port, over whichever transport the pool uses.
///
/// A SPDY connection whose session goes away (GOAWAY) before the server processed it is
/// opened again on another session, with what was written on it: the caller never sees
/// that session's end.
///
/// # Example
///
/// ```no_run
/// # async fn f(pool: kforward_core::transport::spdy::SessionPool) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncWriteExt;
/// let mut conn = pool.connect("web-0", 8080).await?;
/// if !conn.transport().half_close() {
///     eprintln!("this cluster offers no half-close");
/// }
/// conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// # Ok(()) }
/// ```
pub struct PodStream {
    conn: Conn,
    /// Where to open a SPDY connection again, and the reopening in progress.
    origin: Option<(SessionPool, String, u16)>,
    reopening: Option<Reopen>,
    reopened: u32,
    /// How to open the connection again on another pod (the forward's routing), after
    /// the runtime said this one's pod is gone.
    redial: Option<Redial>,
}

type Reopen = Pin<Box<dyn Future<Output = io::Result<PodStream>> + Send>>;

/// Opens a connection anew, to whichever pod the caller's routing picks now: set with
/// [`PodStream::set_redial`], used when the runtime says the pod is gone (see
/// [`SpdyError::pod_gone`](super::SpdyError::pod_gone)).
pub(crate) type Redial =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<PodStream>> + Send>> + Send + Sync>;

enum Conn {
    Spdy(SpdyStream, Transport),
    Websocket(Tunnel),
}

/// How many times one connection is opened again after a GOAWAY.
const MAX_REOPEN: u32 = 3;

impl std::fmt::Debug for PodStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.conn {
            Conn::Spdy(s, t) => f.debug_tuple("PodStream").field(t).field(s).finish(),
            Conn::Websocket(tun) => f.debug_tuple("PodStream").field(tun).finish(),
        }
    }
}

impl PodStream {
    /// The transport carrying this connection (never [`Transport::Auto`]).
    pub fn transport(&self) -> Transport {
        match &self.conn {
            Conn::Spdy(_, t) => *t,
            Conn::Websocket(_) => Transport::Websocket,
        }
    }

    /// The SPDY stream, for a SPDY connection.
    pub fn spdy(&self) -> Option<&SpdyStream> {
        match &self.conn {
            Conn::Spdy(s, _) => Some(s),
            Conn::Websocket(_) => None,
        }
    }

    /// Has `redial` open this connection again, to whichever pod the forward routes to
    /// then, should the runtime say that this stream's pod is gone.
    pub(crate) fn set_redial(&mut self, redial: Redial) {
        self.redial = Some(redial);
    }

    /// After an error from the SPDY stream: starts opening it again when the server never
    /// processed it (GOAWAY: on another session to the same pod), or when the runtime
    /// says the pod is gone (its session stays bound to the pod it was opened for, e.g. a
    /// StatefulSet's pod deleted and created again under its name: the session leaves
    /// the pool, and the connection goes where the forward's routing says now). Only
    /// while nothing came back from the pod, with what was written replayed. True when
    /// the caller should poll again.
    fn start_reopen(&mut self, e: &io::Error) -> bool {
        let (Conn::Spdy(s, _), Some((pool, pod, port))) = (&self.conn, &self.origin) else {
            return false;
        };
        if self.reopened >= MAX_REOPEN {
            return false;
        }
        let gone = SpdyError::of(e).is_some_and(SpdyError::pod_gone);
        if gone {
            // Whatever becomes of this connection, the session is no use for new ones.
            pool.retire(pod, s.session_inner());
        }
        let (replay, how) = match s.replay() {
            Some(r) => (
                r,
                "the session went away before the server took the connection",
            ),
            None => match s.replay_unreached().filter(|_| gone) {
                Some(r) => (r, "the pod is gone, its sandbox with it"),
                None => return false,
            },
        };
        let (sent, shut) = replay;
        self.reopened += 1;
        let (pool, pod, port) = (pool.clone(), pod.clone(), *port);
        tracing::debug!(pod, port, error = %e, "{how}; opening the connection again");
        let redial = self.redial.clone().filter(|_| gone);
        self.reopening = Some(Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = match redial {
                Some(redial) => redial().await.map_err(io::Error::other)?,
                None => PodStream::over_spdy(
                    pool.connect_spdy(&pod, port)
                        .await
                        .map_err(io::Error::other)?,
                    pool.transport(),
                    Some((pool.clone(), pod, port)),
                ),
            };
            s.write_all(&sent).await?;
            if shut {
                s.shutdown().await?;
            }
            Ok(s)
        }));
        true
    }

    fn over_spdy(s: SpdyStream, t: Transport, origin: Option<(SessionPool, String, u16)>) -> Self {
        PodStream {
            conn: Conn::Spdy(s, t),
            origin,
            reopening: None,
            reopened: 0,
            redial: None,
        }
    }

    /// Drives a reopening to its end; `Ready(Ok)` when the connection can be used.
    fn poll_reopen(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(fut) = self.reopening.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(fut.as_mut().poll(cx));
        self.reopening = None;
        let s = r?;
        self.conn = s.conn;
        self.origin = s.origin;
        Poll::Ready(Ok(()))
    }

    /// Runs `op` on the connection, opening it again (once per failure) when its session
    /// went away before the server processed it.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut Conn, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        loop {
            std::task::ready!(self.poll_reopen(cx))?;
            match op(&mut self.conn, cx) {
                Poll::Ready(Err(e)) => {
                    if !self.start_reopen(&e) {
                        return Poll::Ready(Err(e));
                    }
                }
                other => return other,
            }
        }
    }
}

use std::future::Future;

impl From<Tunnel> for PodStream {
    /// A `v4.channel.k8s.io` connection (no half-close, never opened again).
    fn from(t: Tunnel) -> Self {
        PodStream {
            conn: Conn::Websocket(t),
            origin: None,
            reopening: None,
            reopened: 0,
            redial: None,
        }
    }
}

/// What the pipeline does with a connection: a SPDY stream it reads in chunks and sends
/// whole frames on, or a `v4.channel.k8s.io` tunnel it carries as any other.
pub(crate) enum Carried {
    Spdy(PodStream),
    Websocket(Tunnel),
}

impl PodStream {
    /// The connection as the pipeline carries it.
    pub(crate) fn into_carried(self) -> Carried {
        match self.conn {
            Conn::Websocket(t) => Carried::Websocket(t),
            Conn::Spdy(..) => Carried::Spdy(self),
        }
    }

    /// The pod.
    pub fn pod(&self) -> &str {
        match &self.conn {
            Conn::Spdy(s, _) => s.pod(),
            Conn::Websocket(t) => t.pod(),
        }
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        match &self.conn {
            Conn::Spdy(s, _) => s.port(),
            Conn::Websocket(t) => t.port(),
        }
    }

    /// The next bytes from the pod as they arrived (no copy on SPDY); `None` at the end.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<bytes::Bytes>>> {
        self.poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => s.poll_chunk(cx),
            Conn::Websocket(t) => {
                let mut buf = vec![0u8; 16 * 1024];
                let mut rb = ReadBuf::new(&mut buf);
                std::task::ready!(Pin::new(t).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                buf.truncate(n);
                Poll::Ready(Ok((n > 0).then(|| bytes::Bytes::from(buf))))
            }
        })
    }

    /// Sends `frame` (room for a DATA frame's header, then the data) as one frame; see
    /// [`SpdyStream::poll_send_frame`].
    pub(crate) fn poll_send_frame(
        &mut self,
        cx: &mut Context<'_>,
        frame: &mut Option<bytes::BytesMut>,
    ) -> Poll<io::Result<()>> {
        self.poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => s.poll_send_frame(cx, frame),
            Conn::Websocket(t) => {
                let Some(f) = frame.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                while f.len() > super::frame::HEADER_LEN {
                    let n = std::task::ready!(
                        Pin::new(&mut *t).poll_write(cx, &f[super::frame::HEADER_LEN..])
                    )?;
                    // Drop what was written, keeping the header's room in front.
                    let rest = f.split_off(super::frame::HEADER_LEN + n);
                    f.truncate(super::frame::HEADER_LEN);
                    f.unsplit(rest);
                }
                *frame = None;
                Poll::Ready(Ok(()))
            }
        })
    }
}

impl AsyncRead for PodStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Websocket(t) => Pin::new(t).poll_read(cx, buf),
        })
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_write(cx, data),
            Conn::Websocket(t) => Pin::new(t).poll_write(cx, data),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Websocket(t) => Pin::new(t).poll_flush(cx),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_op(cx, |c, cx| match c {
            Conn::Spdy(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Websocket(t) => Pin::new(t).poll_shutdown(cx),
        })
    }
}

/// The sessions to one pod, as [`SessionPool::stats`] shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSessions {
    /// The pod.
    pub pod: String,
    /// Each open session's load and transport.
    pub sessions: Vec<(SessionLoad, Transport)>,
}

struct Pooled {
    session: Session,
    transport: Transport,
    /// Since when the session has had no streams, as the reaper last saw it.
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct PodEntry {
    sessions: Vec<Pooled>,
    /// One session opening at a time per pod.
    opener: Arc<tokio::sync::Mutex<()>>,
}

struct PoolInner {
    ctx: KubeContext,
    namespace: String,
    transport: Transport,
    config: PoolConfig,
    pods: Mutex<HashMap<String, PodEntry>>,
    reaper: std::sync::Once,
}

/// A forward's SPDY sessions to the pods it routes to (see the module docs).
/// Cheap to clone; its sessions close when the last clone is dropped and their streams
/// are done.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::transport::{Transport, spdy::SessionPool};
/// let pool = SessionPool::new(ctx, "demo", Transport::Auto);
/// pool.prepare("web-0").await?; // the first connection will not wait for a handshake
/// let conn = pool.connect("web-0", 8080).await?;
/// println!("over {}", conn.transport());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("namespace", &self.inner.namespace)
            .field("transport", &self.inner.transport)
            .finish()
    }
}

enum Opened {
    Session,
    V4,
}

impl SessionPool {
    /// A pool for pods of `namespace`, using `transport`.
    pub fn new(ctx: KubeContext, namespace: &str, transport: Transport) -> SessionPool {
        Self::with_config(ctx, namespace, transport, PoolConfig::default())
    }

    /// A pool with its own [`PoolConfig`].
    pub fn with_config(
        ctx: KubeContext,
        namespace: &str,
        transport: Transport,
        config: PoolConfig,
    ) -> SessionPool {
        SessionPool {
            inner: Arc::new(PoolInner {
                ctx,
                namespace: namespace.to_string(),
                transport,
                config,
                pods: Mutex::new(HashMap::new()),
                reaper: std::sync::Once::new(),
            }),
        }
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<String, PodEntry>> {
        self.inner
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The transport connections will use: the option, or what `auto` found.
    pub fn transport(&self) -> Transport {
        match self.inner.transport {
            Transport::Auto => self
                .inner
                .ctx
                .transport_memo()
                .get()
                .unwrap_or(Transport::Auto),
            t => t,
        }
    }

    /// Opens a connection to `port` of `pod`.
    ///
    /// # Errors
    ///
    /// What opening a session or a tunnel failed with ([`Error::Forbidden`],
    /// [`Error::NotFound`], [`Error::Unreachable`] after `OPEN_RETRY_FOR`,
    /// [`Error::TransportRefused`], ...).
    pub async fn connect(&self, pod: &str, port: u16) -> Result<PodStream> {
        if self.transport() == Transport::Websocket {
            return self.tunnel(pod, port).await;
        }
        match self.connect_spdy_or_v4(pod, port).await? {
            Some((s, t)) => Ok(PodStream::over_spdy(
                s,
                t,
                Some((self.clone(), pod.to_string(), port)),
            )),
            None => self.tunnel(pod, port).await,
        }
    }

    /// A SPDY stream to `port` of `pod`, for a connection opened again.
    async fn connect_spdy(&self, pod: &str, port: u16) -> Result<SpdyStream> {
        match self.connect_spdy_or_v4(pod, port).await? {
            Some((s, _)) => Ok(s),
            None => Err(Error::Tunnel {
                pod: pod.to_string(),
                port,
                message: "the API server no longer offers port-forward over SPDY".into(),
            }),
        }
    }

    /// A SPDY stream, or `None` when the server offers only `v4.channel.k8s.io`.
    async fn connect_spdy_or_v4(
        &self,
        pod: &str,
        port: u16,
    ) -> Result<Option<(SpdyStream, Transport)>> {
        // A session that ends between the pick and the SYN_STREAM sent nothing: try again.
        for _ in 0..4 {
            match self.pick(pod) {
                Some((session, transport)) => match session.open_stream(port) {
                    Ok(s) => return Ok(Some((s, transport))),
                    Err(e) => tracing::debug!(pod, error = %e, "session gone; picking another"),
                },
                None => {
                    if let Opened::V4 = self.open_session(pod, true).await? {
                        return Ok(None);
                    }
                }
            }
        }
        Err(Error::Tunnel {
            pod: pod.to_string(),
            port,
            message: "every port-forward session to the pod ended as it was picked".into(),
        })
    }

    /// Opens a session to `pod` now, unless one is open: the next connection then costs
    /// one round trip. Returns the transport in use.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn prepare(&self, pod: &str) -> Result<Transport> {
        if self.transport() != Transport::Websocket && self.pick(pod).is_none() {
            self.open_session(pod, true).await?;
        }
        Ok(self.transport())
    }

    /// Takes the session `session` out of `pod`'s sessions: new connections never use it
    /// (it stays bound to a pod that is gone); it closes once its last stream is done.
    pub(crate) fn retire(&self, pod: &str, session: &Arc<super::session::Inner>) {
        let gone: Vec<Pooled> = {
            let mut pods = self.pods();
            let Some(entry) = pods.get_mut(pod) else {
                return;
            };
            let (gone, kept) = std::mem::take(&mut entry.sessions)
                .into_iter()
                .partition(|p| Arc::ptr_eq(&p.session.inner, session));
            entry.sessions = kept;
            gone
        };
        if !gone.is_empty() {
            tracing::debug!(pod, "a session whose pod is gone leaves the pool");
        }
        drop(gone);
    }

    /// Closes the sessions to pods `keep` says no to (pods the forward no longer routes to).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<PodEntry> = {
            let mut pods = self.pods();
            let names: Vec<String> = pods.keys().filter(|p| !keep(p)).cloned().collect();
            names.iter().filter_map(|n| pods.remove(n)).collect()
        };
        // Dropping the pool's handles closes each session once its last stream is done.
        drop(gone);
    }

    /// The open sessions, per pod.
    pub fn stats(&self) -> Vec<PodSessions> {
        let pods = self.pods();
        let mut out: Vec<PodSessions> = pods
            .iter()
            .map(|(pod, e)| PodSessions {
                pod: pod.clone(),
                sessions: e
                    .sessions
                    .iter()
                    .filter(|p| p.session.end().is_none())
                    .map(|p| (p.session.load(), p.transport))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        out
    }

    /// Closes every session now; their streams fail.
    pub fn close(&self) {
        let all: Vec<PodEntry> = self.pods().drain().map(|(_, e)| e).collect();
        for e in all {
            for p in e.sessions {
                p.session.close();
            }
        }
    }

    async fn tunnel(&self, pod: &str, port: u16) -> Result<PodStream> {
        let t = Tunnel::open(&self.inner.ctx, &self.inner.namespace, pod, port).await?;
        if self.inner.transport == Transport::Auto {
            self.inner.ctx.transport_memo().set(Transport::Websocket);
        }
        Ok(PodStream::from(t))
    }

    /// The least loaded usable session to `pod`; starts another in the background when
    /// even that one is full.
    fn pick(&self, pod: &str) -> Option<(Session, Transport)> {
        let mut pods = self.pods();
        let entry = pods.get_mut(pod)?;
        entry.sessions.retain(|p| p.session.end().is_none());
        let best = entry
            .sessions
            .iter()
            .map(|p| (p, p.session.load()))
            .filter(|(_, l)| l.open && !l.held)
            .min_by_key(|(_, l)| l.streams)
            .map(|(p, l)| (p.session.clone(), p.transport, l.streams))?;
        let (session, transport, streams) = best;
        if streams >= self.inner.config.streams_per_session
            && entry.sessions.len() < self.inner.config.max_sessions_per_pod
        {
            let (pool, pod) = (self.clone(), pod.to_string());
            tokio::spawn(async move {
                if let Err(e) = pool.open_session(&pod, false).await {
                    tracing::debug!(pod, error = %e, "no extra session");
                }
            });
        }
        Some((session, transport))
    }

    /// Opens a session to `pod` (one at a time per pod). With `wait`, a caller that finds
    /// another opening waits for it and uses its session; without, it gives up.
    async fn open_session(&self, pod: &str, wait: bool) -> Result<Opened> {
        let opener = self
            .pods()
            .entry(pod.to_string())
            .or_default()
            .opener
            .clone();
        let _turn = if wait {
            opener.lock().await
        } else {
            match opener.try_lock() {
                Ok(g) => g,
                Err(_) => return Ok(Opened::Session),
            }
        };
        if wait && self.pick(pod).is_some() {
            return Ok(Opened::Session); // opened while we waited
        }
        let started = Instant::now();
        let mut pause = OPEN_RETRY_FIRST;
        loop {
            match self.negotiate(pod).await {
                Ok(None) => return Ok(Opened::V4),
                Ok(Some((session, transport))) => {
                    self.add(pod, session, transport);
                    return Ok(Opened::Session);
                }
                Err(e @ Error::Unreachable { .. })
                    if started.elapsed() + pause < OPEN_RETRY_FOR =>
                {
                    tracing::debug!(pod, error = %e, "opening a session; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a session over the chosen transport, or finds under `auto` which one the
    /// server offers; `None` means `v4.channel.k8s.io`.
    async fn negotiate(&self, pod: &str) -> Result<Option<(Session, Transport)>> {
        let ctx = &self.inner.ctx;
        let auto = self.inner.transport == Transport::Auto;
        let order: Vec<Transport> = match self.transport() {
            Transport::Auto => vec![
                Transport::WebsocketSpdy,
                Transport::Spdy,
                Transport::Websocket,
            ],
            t => vec![t],
        };
        for t in order {
            let how = match t {
                Transport::WebsocketSpdy => SpdyTransport::WebSocket,
                Transport::Spdy => SpdyTransport::Upgrade,
                _ => {
                    tracing::warn!(
                        server = ctx.server(),
                        "the API server offers port-forward over SPDY in no form: using v4.channel.k8s.io, which has no half-close"
                    );
                    return Ok(None);
                }
            };
            let config = self.inner.config.session.clone();
            match open(ctx, &self.inner.namespace, pod, how, config).await {
                Ok(session) => {
                    if auto {
                        ctx.transport_memo().set(t);
                    }
                    return Ok(Some((session, t)));
                }
                Err(OpenError::NotOffered(answer)) if auto => {
                    tracing::info!(server = ctx.server(), transport = %t, %answer, "port-forward transport not offered; trying the next");
                }
                Err(e) => return Err(e.into_error(ctx, how)),
            }
        }
        Ok(None)
    }

    fn add(&self, pod: &str, session: Session, transport: Transport) {
        self.pods()
            .entry(pod.to_string())
            .or_default()
            .sessions
            .push(Pooled {
                session,
                transport,
                idle_since: None,
            });
        let weak = Arc::downgrade(&self.inner);
        self.inner.reaper.call_once(|| {
            tokio::spawn(reap(weak));
        });
    }
}

/// Every few seconds: forgets ended sessions and closes extra idle ones. Ends with the pool.
async fn reap(pool: Weak<PoolInner>) {
    let every = match pool.upgrade() {
        Some(p) => (p.config.idle_extra / 3).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut closing = Vec::new();
        {
            let mut pods = pool
                .pods
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            for entry in pods.values_mut() {
                entry.sessions.retain(|p| p.session.end().is_none());
                for p in entry.sessions.iter_mut() {
                    if p.session.load().streams == 0 {
                        p.idle_since.get_or_insert(now);
                    } else {
                        p.idle_since = None;
                    }
                }
                // Keep the first idle session (or any busy one); close the extras that idled.
                let mut kept_idle = entry.sessions.iter().any(|p| p.idle_since.is_none());
                let limit = pool.config.idle_extra;
                let mut i = 0;
                while i < entry.sessions.len() {
                    let p = &entry.sessions[i];
                    let stale = p.idle_since.is_some_and(|t| now.duration_since(t) >= limit);
                    if p.idle_since.is_some() && !kept_idle {
                        kept_idle = true;
                        i += 1;
                    } else if stale {
                        closing.push(entry.sessions.remove(i).session);
                    } else {
                        i += 1;
                    }
                }
            }
            pods.retain(|_, e| !e.sessions.is_empty() || Arc::strong_count(&e.opener) > 1);
        }
        for s in closing {
            tracing::debug!(pod = s.pod(), "closing an idle extra session");
            s.close();
        }
    }
}
