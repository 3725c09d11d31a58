//! The SPDY sessions of one cluster connection to one namespace, kept ready per pod: a new
//! connection costs two SYN_STREAMs on a session that is already open, with its first bytes
//! in the same write.
//!
//! Every forward of a process that reaches the same namespace of the same cluster with the
//! same transport option shares one pool ([`SessionPool::shared`]), so two hundred forwards
//! of one service keep one session per pod between them, not two hundred. A forward says
//! which pods it wants kept ready with [`SessionPool::hold`] under its own [`HolderId`]; the
//! pool counts the holders of each pod, keeps a session open to every pod somebody holds,
//! and closes the kept sessions of a pod when its last holder lets go
//! ([`SessionPool::release`]); connections running on them go on until they end.
//!
//! Sessions open on demand (or ahead of time with [`SessionPool::prepare`]) and stay open,
//! kept alive by their PINGs; a session that ends (its connection closed, a PING went
//! unanswered, the server sent GOAWAY) leaves the pool and the next connection opens a new
//! one, so connections that had not started yet never see the old one's end. Connections
//! share a session until it carries [`PoolConfig::streams_per_session`], then a second
//! session opens in the background (up to [`PoolConfig::max_sessions_per_pod`]), so one
//! busy session does not cap a burst and the work spreads over the runtime's threads. A
//! session paced by a reader that is behind takes new connections only when the pod may
//! have no other session (see `pick`).
//! Sessions beyond the first that sit without streams for [`PoolConfig::idle_extra`] are
//! closed: idle forwards keep one session per pod they hold or used, and none for pods
//! they never reached.
//!
//! With [`Transport::Auto`] the first session to a cluster finds which transport it offers
//! (the WebSocket tunnel, the plain upgrade, then `v4.channel.k8s.io`) and the cluster's
//! [`KubeContext`] remembers it. Where only `v4.channel.k8s.io` is offered, each
//! connection gets its own [`Tunnel`], as before, and has no half-close.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::open::{OpenError, SpdyTransport, open};
use super::pod_stream::{Conn, Origin, PodStream, Redial};
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
    /// Who wants sessions to the pod kept ready ([`SessionPool::hold`]).
    holders: HashSet<HolderId>,
}

/// Who holds pods of a shared [`SessionPool`]: one per forward (its dialer), so that one
/// forward's list of pods replaces only its own holds.
///
/// # Example
///
/// ```
/// use kforward_core::transport::spdy::HolderId;
/// assert_ne!(HolderId::new(), HolderId::new());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HolderId(u64);

impl HolderId {
    /// A holder identity never handed out before in this process.
    #[allow(clippy::new_without_default)] // each call is a new identity, not a default value
    pub fn new() -> HolderId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        HolderId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The session pools of one cluster connection ([`KubeContext`]), by namespace and
/// transport option. It holds them weakly: a pool lives as long as a forward uses it.
#[derive(Default)]
pub(crate) struct PoolRegistry {
    pools: Mutex<HashMap<(String, Transport), Weak<PoolInner>>>,
}

struct PoolInner {
    ctx: KubeContext,
    namespace: String,
    transport: Transport,
    config: PoolConfig,
    pods: Mutex<HashMap<String, PodEntry>>,
    reaper: std::sync::Once,
}

/// SPDY sessions to the pods of one namespace (see the module docs).
/// Cheap to clone; its sessions close when the last clone is dropped and their streams
/// are done. [`SessionPool::shared`] gives every user of a cluster connection the same one.
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

    /// The pool every user of `ctx` shares for `namespace` and `transport` (made on first
    /// use, gone when its last user drops it), with the default [`PoolConfig`]. Users with
    /// another `transport` option get another pool.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(ctx: kforward_core::KubeContext) {
    /// use kforward_core::transport::{Transport, spdy::SessionPool};
    /// let a = SessionPool::shared(&ctx, "demo", Transport::Auto);
    /// let b = SessionPool::shared(&ctx, "demo", Transport::Auto);
    /// assert!(a.same_pool(&b));
    /// assert!(!a.same_pool(&SessionPool::shared(&ctx, "demo", Transport::Spdy)));
    /// # }
    /// ```
    pub fn shared(ctx: &KubeContext, namespace: &str, transport: Transport) -> SessionPool {
        let mut pools = ctx
            .session_pools()
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_string(), transport);
        if let Some(inner) = pools.get(&key).and_then(Weak::upgrade) {
            return SessionPool { inner };
        }
        pools.retain(|_, w| w.strong_count() > 0);
        let pool = SessionPool::new(ctx.clone(), namespace, transport);
        pools.insert(key, Arc::downgrade(&pool.inner));
        pool
    }

    /// Whether `self` and `other` are the same pool (clones of one another).
    pub fn same_pool(&self, other: &SessionPool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<String, PodEntry>> {
        self.inner
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
            Some((s, t)) => Ok(PodStream {
                conn: Conn::Spdy(s, t),
                origin: Some(self.origin(pod, port)),
                reopening: None,
                reopened: 0,
                reroute: None,
            }),
            None => self.tunnel(pod, port).await,
        }
    }

    /// How a connection to `port` of `pod` opens its SPDY stream again, and takes a
    /// session whose pod is gone out of the pool.
    fn origin(&self, pod: &str, port: u16) -> Origin {
        let (pool, name) = (self.clone(), pod.to_string());
        let reopen: Redial = Box::new(move || {
            let (pool, pod) = (pool.clone(), name.clone());
            Box::pin(async move {
                pool.connect_spdy(&pod, port)
                    .await
                    .map_err(io::Error::other)
            })
        });
        let (pool, name) = (self.clone(), pod.to_string());
        Origin {
            reopen,
            retire: Box::new(move |s: &SpdyStream| pool.retire(&name, s.session_inner())),
        }
    }

    /// Takes the session `session` out of `pod`'s sessions: new connections never use it
    /// (it stays bound to a pod that is gone); it closes once its last stream is done.
    fn retire(&self, pod: &str, session: &Arc<super::session::Inner>) {
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
                None => match self.open_session(pod, true, None).await {
                    Ok(Opened::V4) => return Ok(None),
                    Ok(Opened::Session) => {}
                    // No other session could be opened (the API server is down or paused):
                    // a paced session still works, and is better than failing.
                    Err(e) => match self.pick_paced(pod) {
                        Some((session, transport)) => match session.open_stream(port) {
                            Ok(s) => return Ok(Some((s, transport))),
                            Err(_) => return Err(e),
                        },
                        None => return Err(e),
                    },
                },
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
            self.open_session(pod, true, None).await?;
        }
        Ok(self.transport())
    }

    /// Keeps sessions ready to `pods` for `holder`, and only to them: this list replaces
    /// the holder's previous one. Sessions to the listed pods open in the background; pods
    /// that no holder lists any longer lose their sessions (connections running on them go
    /// on until they end). Other holders' pods are left alone.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(pool: kforward_core::transport::spdy::SessionPool) {
    /// use kforward_core::transport::spdy::HolderId;
    /// let (a, b) = (HolderId::new(), HolderId::new());
    /// pool.hold(a, &["web-0".into(), "web-1".into()]);
    /// pool.hold(b, &["web-1".into()]);
    /// pool.hold(a, &["web-0".into()]); // web-1 stays: b holds it
    /// pool.release(b); // now web-1's session closes
    /// # }
    /// ```
    pub fn hold(&self, holder: HolderId, pods: &[String]) {
        let gone = {
            let mut map = self.pods();
            for pod in pods {
                map.entry(pod.clone()).or_default().holders.insert(holder);
            }
            let listed: HashSet<&str> = pods.iter().map(String::as_str).collect();
            drop_holds(&mut map, holder, |p| !listed.contains(p))
        };
        // Dropping the pool's handles closes each session once its last stream is done.
        drop(gone);
        if self.transport() == Transport::Websocket {
            return;
        }
        for pod in pods {
            let (pool, pod) = (self.clone(), pod.clone());
            tokio::spawn(async move {
                if pool.pick(&pod).is_some() {
                    return;
                }
                if let Err(e) = pool.open_session(&pod, true, Some(holder)).await {
                    tracing::debug!(pod, error = %e, "no session kept ready");
                }
            });
        }
    }

    /// Lets go of every pod `holder` holds: pods nobody else holds lose their sessions
    /// (connections running on them go on until they end).
    pub fn release(&self, holder: HolderId) {
        let gone = drop_holds(&mut self.pods(), holder, |_| true);
        drop(gone);
    }

    /// The pods somebody holds, with how many holders each.
    pub fn holds(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = self
            .pods()
            .iter()
            .filter(|(_, e)| !e.holders.is_empty())
            .map(|(p, e)| (p.clone(), e.holders.len()))
            .collect();
        out.sort();
        out
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
    ///
    /// A paced session (its one stream's reader is behind by the lone bound: a download
    /// whose client reads slower than the network brings it, or a client that stopped
    /// reading) is used only when every usable session is paced and the pod has its most
    /// sessions: otherwise this gives `None`, and the caller opens another session (or,
    /// when none can be opened, takes the paced one after all: `pick_paced`). A new
    /// stream on a paced session would end the pacing and share the session's bandwidth
    /// with a reader that may never take its data; the kubelet has no flow control, so
    /// that stream would then be reset, and the container runtime goes on sending its pod's
    /// data for a second after the reset (`RUNTIME_CLOSE_GRACE` in the testkit:
    /// containerd's and CRI-O's copy loops), a second of its share of the bandwidth lost to
    /// the new connections. On a session of its own, a reader that stopped costs nobody
    /// anything and loses nothing: the session waits for it, as TCP would.
    fn pick(&self, pod: &str) -> Option<(Session, Transport)> {
        let mut pods = self.pods();
        let entry = pods.get_mut(pod)?;
        entry.sessions.retain(|p| p.session.end().is_none());
        let best = match least_loaded(&entry.sessions, false) {
            Some(b) => b,
            None if entry.sessions.len() < self.inner.config.max_sessions_per_pod => return None,
            None => least_loaded(&entry.sessions, true)?,
        };
        let (session, transport, streams) =
            (best.0.session.clone(), best.0.transport, best.1.streams);
        if streams >= self.inner.config.streams_per_session
            && entry.sessions.len() < self.inner.config.max_sessions_per_pod
        {
            let (pool, pod) = (self.clone(), pod.to_string());
            tokio::spawn(async move {
                if let Err(e) = pool.open_session(&pod, false, None).await {
                    tracing::debug!(pod, error = %e, "no extra session");
                }
            });
        }
        Some((session, transport))
    }

    /// The least loaded usable session to `pod`, paced or not: for a connection that could
    /// not get a session of its own.
    fn pick_paced(&self, pod: &str) -> Option<(Session, Transport)> {
        let pods = self.pods();
        least_loaded(&pods.get(pod)?.sessions, true).map(|(p, _)| (p.session.clone(), p.transport))
    }

    /// Opens a session to `pod` (one at a time per pod). With `wait`, a caller that finds
    /// another opening waits for it and uses its session; without, it gives up. A session
    /// opened for `holder` is kept only if somebody holds the pod when it is ready (the
    /// holder may have let go meanwhile).
    async fn open_session(
        &self,
        pod: &str,
        wait: bool,
        holder: Option<HolderId>,
    ) -> Result<Opened> {
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
        if holder.is_some() && !self.held(pod) {
            return Ok(Opened::Session); // let go while we waited
        }
        let started = Instant::now();
        let mut pause = OPEN_RETRY_FIRST;
        loop {
            match self.negotiate(pod).await {
                Ok(None) => return Ok(Opened::V4),
                Ok(Some((session, transport))) => {
                    self.add(pod, session, transport, holder.is_some());
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

    /// Whether somebody holds `pod`.
    fn held(&self, pod: &str) -> bool {
        self.pods().get(pod).is_some_and(|e| !e.holders.is_empty())
    }

    /// Adds an open session; one opened to be kept ready is dropped (and closes) when
    /// nobody holds its pod any longer.
    fn add(&self, pod: &str, session: Session, transport: Transport, for_holder: bool) {
        let unwanted = {
            let mut pods = self.pods();
            let entry = pods.entry(pod.to_string()).or_default();
            if for_holder && entry.holders.is_empty() {
                Some(session)
            } else {
                entry.sessions.push(Pooled {
                    session,
                    transport,
                    idle_since: None,
                });
                None
            }
        };
        if let Some(session) = unwanted {
            tracing::debug!(
                pod,
                "nobody holds the pod any longer; not keeping its session"
            );
            session.close();
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner.reaper.call_once(|| {
            tokio::spawn(reap(weak));
        });
    }
}

/// The session with the fewest streams among those that take new ones (open, not held,
/// and not paced unless `paced` allows it), with its load.
fn least_loaded(sessions: &[Pooled], paced: bool) -> Option<(&Pooled, SessionLoad)> {
    sessions
        .iter()
        .map(|p| (p, p.session.load()))
        .filter(|(_, l)| l.open && !l.held && (paced || !l.paced))
        .min_by_key(|(_, l)| l.streams)
}

/// Takes `holder`'s holds off the pods `which` says yes to; returns the entries of the pods
/// nobody holds any longer, out of the map (dropping them closes their sessions once their
/// streams are done).
fn drop_holds(
    map: &mut HashMap<String, PodEntry>,
    holder: HolderId,
    which: impl Fn(&str) -> bool,
) -> Vec<PodEntry> {
    let mut unheld = Vec::new();
    for (pod, e) in map.iter_mut() {
        if which(pod) && e.holders.remove(&holder) && e.holders.is_empty() {
            unheld.push(pod.clone());
        }
    }
    unheld.iter().filter_map(|p| map.remove(p)).collect()
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
            let mut pods = pool.pods.lock().unwrap_or_else(PoisonError::into_inner);
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
            pods.retain(|_, e| {
                !e.sessions.is_empty() || !e.holders.is_empty() || Arc::strong_count(&e.opener) > 1
            });
        }
        for s in closing {
            tracing::debug!(pod = s.pod(), "closing an idle extra session");
            s.close();
        }
    }
}
