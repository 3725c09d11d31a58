//! The kube client's connections to the API server, with a read buffer under TLS.
//!
//! rustls reads at most one TLS record's worth (about 16 KiB) per call into its own buffer
//! (rustls 0.23, `msgs/deframer/buffers.rs`: reads are capped at `MAX_WIRE_SIZE`), so a
//! port-forward stream at full speed costs one `recv` system call, and on loopback or a
//! fast link one TCP window update, per 16 KiB. Here each connection reads through a
//! [`ReadAhead`] buffer that starts at [`FIRST_READ`] and doubles on every read that fills
//! it, up to [`MAX_READ`]: one `recv` then takes whatever the socket holds and rustls is
//! served from memory. Measured with `compare --only bulk1` (`kforward-cli-stock` against
//! `kforward-cli`): client CPU per GiB 610-690 ms with kube's stock stack, 470-550 ms with
//! this one.
//!
//! [`client`] builds the same stack as `kube::Client::try_from(config)` (kube-client 5,
//! `client/builder.rs`), from kube's public parts: its rustls connector (CA, client
//! certificates, `tls-server-name`, `insecure-skip-tls-verify`), the base URI, the retry
//! policy for 429/503/504, authentication (tokens, exec plugins, refresh) and the
//! impersonation headers; the connect timeout covers the TLS handshake as kube's does; each
//! request is logged at DEBUG (`RUST_LOG=tower_http=debug`). Not carried over: the expiry
//! date kube records for client certificates from exec plugins (`Client::valid_until`,
//! which kforward does not read).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The read buffer a connection starts with: a small request and its answer fit.
pub(crate) const FIRST_READ: usize = 16 * 1024;
/// The most a connection's read buffer grows to, on a stream that keeps it full.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// Idle connections kept in hyper's pool. HTTP/1.1 takes one connection per request in
/// flight, so a `kforward run` of 200 forwards opens about 200 at start-up; hyper would
/// keep them all for 90 s (its default has no cap), some 50-100 KiB each with their TLS
/// and HTTP buffers. After the burst a few serve the steady trickle of requests; a new
/// tunnel takes the spare connection ([`Warm`]), not a pooled one.
const POOL_MAX_IDLE: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a kube client like `kube::Client::try_from(config)`, whose connections read
/// through a [`ReadAhead`] buffer.
///
/// A proxy (`proxy-url`) is left to kube, which reports that this build does not support
/// one.
pub(crate) fn client(
    config: &kube::Config,
    reach: Arc<Reachability>,
) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt;
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config.clone());
    }
    let https = config.rustls_https_connector_with_connector(BufferedConnector::new())?;
    let connector = Warm::new(Deadline {
        inner: https,
        after: config.connect_timeout,
        reach,
    });
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build::<_, kube::client::Body>(connector);
    // Each request as a DEBUG span of `tower_http::trace` (method, URI, status, latency),
    // as kube's stack logs them under `kube_client`.
    let http = tower::Layer::layer(&tower_http::trace::TraceLayer::new_for_http(), http);
    // kube's auth and retry layers take the boxed error kube's own stack hands them.
    let http = tower::ServiceExt::map_err(http, BoxError::from);
    // Innermost first: the request passes base URI, retry, auth, headers, then the wire,
    // in the order kube's `ServiceBuilder` stacks them.
    let builder = kube::client::ClientBuilder::new(http, config.default_namespace.clone())
        .with_layer(&config.extra_headers_layer()?);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let base = config.base_uri_layer();
    Ok(match (config.auth_layer()?, retry) {
        (Some(auth), Some(retry)) => builder
            .with_layer(&auth)
            .with_layer(&retry)
            .with_layer(&base)
            .build(),
        (Some(auth), None) => builder.with_layer(&auth).with_layer(&base).build(),
        (None, Some(retry)) => builder.with_layer(&retry).with_layer(&base).build(),
        (None, None) => builder.with_layer(&base).build(),
    })
}

/// hyper's HTTP connector, handing out connections that read through a [`ReadAhead`].
#[derive(Clone)]
struct BufferedConnector {
    http: HttpConnector,
}

impl BufferedConnector {
    fn new() -> Self {
        let mut http = HttpConnector::new();
        // The scheme is https: kube's rustls connector puts TLS on top.
        http.enforce_http(false);
        // With Nagle's algorithm, the HTTP request written right after TLS's Finished
        // waits for that to be acknowledged: one more round trip for every new tunnel,
        // measured with `compare --only wan` (5.0 round trips to first byte with it, 3.8
        // without). Go sets TCP_NODELAY on every TCP connection by default
        // (`net.TCPConn.SetNoDelay`'s documentation), so kubectl never waits so.
        http.set_nodelay(true);
        BufferedConnector { http }
    }
}

impl tower_service::Service<Uri> for BufferedConnector {
    type Response = ReadAhead<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ReadAhead<TcpStream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move { Ok(ReadAhead::new(connecting.await?.into_inner())) })
    }
}

/// A reader that fills its own buffer with as much as the inner one has and serves small
/// reads from it. The buffer starts at [`FIRST_READ`] and doubles each time one read fills
/// it, up to [`MAX_READ`], so idle connections stay small. Writes go straight through.
pub(crate) struct ReadAhead<T> {
    inner: T,
    buf: Vec<u8>,
    /// The buffer's size for the next read from `inner`.
    size: usize,
    /// `buf[pos..end]` has been read from `inner` and not yet handed out.
    pos: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(inner: T) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            size: FIRST_READ,
            pos: 0,
            end: 0,
        }
    }
}

impl Connection for ReadAhead<TcpStream> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// hyper's read trait (what rustls under hyper reads from), filled from the buffer.
impl<T: AsyncRead + Unpin> hyper::rt::Read for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut out: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.pos == this.end {
            // Empty: the only moment the buffer may change size.
            if this.buf.len() != this.size {
                this.buf.resize(this.size, 0);
            }
            let mut into = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            this.pos = 0;
            this.end = n;
            if n == this.size {
                this.size = (this.size * 2).min(MAX_READ);
            }
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Writes go straight to the socket.
impl<T: AsyncWrite + Unpin> hyper::rt::Write for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A spare connection is handed out only while younger than this: well below the idle
/// timeouts of hyper's own pool (90 s), of load balancers in front of API servers (AWS ALB:
/// 60 s by default) and the 30 s that HAProxy setups commonly use, so that a spare is not
/// closed by the far end just as a tunnel takes it. One closed earlier is seen (a peek
/// finds the end of the stream) and not handed out.
const SPARE_MAX_AGE: Duration = Duration::from_secs(20);
/// A spare this old is replaced by a new one in the background: one TCP and TLS handshake
/// per cluster every 15 s while the client lives.
const SPARE_RENEW_AGE: Duration = Duration::from_secs(15);
/// How often the background task looks at the spare's age.
const SPARE_CHECK: Duration = Duration::from_secs(5);

/// A connector that keeps one spare connection, TCP and TLS handshakes done, for the next
/// request that finds hyper's pool empty: every new port-forward tunnel, since an upgraded
/// connection never goes back to the pool. The tunnel then costs one round trip (the
/// upgrade) instead of three (TCP, TLS, upgrade); kubectl, which opens two SPDY streams
/// one after the other in its one connection, pays two. Measured with
/// `compare --only wan`.
///
/// Handing out a spare starts making the next one. While the client lives, a background
/// task renews a spare older than [`SPARE_RENEW_AGE`], so a forward that sat idle for an
/// hour still opens its next tunnel at once; one that the server closed meanwhile is
/// noticed (end of stream) and not handed out.
struct Warm<S: tower_service::Service<Uri>> {
    inner: S,
    spares: Arc<Spares<S::Response>>,
}

impl<S: tower_service::Service<Uri> + Clone> Clone for Warm<S> {
    fn clone(&self) -> Self {
        Warm {
            inner: self.inner.clone(),
            spares: self.spares.clone(),
        }
    }
}

struct Spares<T> {
    slot: Mutex<Option<Spare<T>>>,
    /// A spare is being made (at most one at a time).
    making: AtomicBool,
    /// The background renewal runs (started with the first spare).
    renewing: AtomicBool,
}

struct Spare<T> {
    /// The scheme and authority it was made for.
    key: String,
    made: Instant,
    conn: T,
}

/// What can tell whether the server has closed a connection nobody reads yet.
trait Alive {
    fn alive(&self) -> bool;
}

impl Alive for ReadAhead<TcpStream> {
    fn alive(&self) -> bool {
        // A peek that finds the end of the stream means the server closed it. Nobody
        // waits on this connection's reads yet, so the no-op waker replaces no one's.
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.inner.poll_peek(&mut cx, &mut buf) {
            Poll::Ready(Ok(0) | Err(_)) => false,
            Poll::Ready(Ok(_)) | Poll::Pending => true,
        }
    }
}

impl Alive for hyper_rustls::MaybeHttpsStream<ReadAhead<TcpStream>> {
    fn alive(&self) -> bool {
        match self {
            hyper_rustls::MaybeHttpsStream::Http(s) => s.alive(),
            hyper_rustls::MaybeHttpsStream::Https(tls) => tls.inner().get_ref().0.inner().alive(),
        }
    }
}

fn key_of(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map_or("", |a| a.as_str())
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S> Warm<S>
where
    S: tower_service::Service<Uri> + Clone + Send + 'static,
    S::Response: Alive + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    fn new(inner: S) -> Self {
        Warm {
            inner,
            spares: Arc::new(Spares {
                slot: Mutex::new(None),
                making: AtomicBool::new(false),
                renewing: AtomicBool::new(false),
            }),
        }
    }

    /// The spare, if there is one for `key` that is young enough and still open.
    fn take(&self, key: &str) -> Option<S::Response> {
        let spare = lock(&self.spares.slot).take()?;
        (spare.key == key && spare.made.elapsed() < SPARE_MAX_AGE && spare.conn.alive())
            .then_some(spare.conn)
    }

    /// Starts making a spare for `uri` (whose [`key_of`] is `key`), unless one is being made.
    fn refill(&self, uri: Uri, key: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.spares.making.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let spares = Arc::downgrade(&self.spares);
        let target = uri.clone();
        rt.spawn(async move {
            let made = tower::ServiceExt::oneshot(inner, target).await;
            let Some(spares) = spares.upgrade() else {
                return;
            };
            match made {
                Ok(conn) => {
                    *lock(&spares.slot) = Some(Spare {
                        key,
                        made: Instant::now(),
                        conn,
                    });
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    tracing::debug!("no spare connection to {key}: {e}");
                }
            }
            spares.making.store(false, Ordering::Release);
        });
        if !self.spares.renewing.swap(true, Ordering::AcqRel) {
            let warm = Arc::downgrade(&self.spares);
            let inner = self.inner.clone();
            let key = key_of(&uri);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(SPARE_CHECK).await;
                    // Ends with the client: the last `Warm` dropped its `Spares`.
                    let Some(spares) = warm.upgrade() else {
                        return;
                    };
                    let stale = lock(&spares.slot)
                        .as_ref()
                        .is_none_or(|s| s.made.elapsed() >= SPARE_RENEW_AGE || !s.conn.alive());
                    if stale {
                        Warm {
                            inner: inner.clone(),
                            spares,
                        }
                        .refill(uri.clone(), key.clone());
                    }
                }
            });
        }
    }
}

impl<S> tower_service::Service<Uri> for Warm<S>
where
    S: tower_service::Service<Uri> + Clone + Send + 'static,
    S::Response: Alive + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let key = key_of(&uri);
        let spare = self.take(&key);
        self.refill(uri.clone(), key);
        match spare {
            Some(conn) => Box::pin(std::future::ready(Ok(conn))),
            None => {
                let connecting = self.inner.call(uri);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

/// Whether the API server could be reached, as connecting to it last found.
///
/// Watches back off after failures (up to seconds); when the server comes back (a restart,
/// a VPN reconnecting, a laptop waking) the first connection that succeeds after failures
/// wakes them through [`back`](Self::back), so they list again at once instead of serving
/// stale pods until their backoff ends.
#[derive(Default)]
pub(crate) struct Reachability {
    failing: AtomicBool,
    back: tokio::sync::Notify,
}

impl Reachability {
    /// Notified when a connection succeeds after one or more failed.
    pub(crate) fn back(&self) -> &tokio::sync::Notify {
        &self.back
    }

    fn record(&self, ok: bool) {
        if !ok {
            self.failing.store(true, Ordering::Release);
        } else if self.failing.swap(false, Ordering::AcqRel) {
            self.back.notify_waiters();
        }
    }
}

/// A connector that gives up when connecting (TCP and TLS) takes longer than `after`, and
/// keeps [`Reachability`] up to date.
#[derive(Clone)]
struct Deadline<S> {
    inner: S,
    after: Option<Duration>,
    reach: Arc<Reachability>,
}

impl<S> tower_service::Service<Uri> for Deadline<S>
where
    S: tower_service::Service<Uri>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let after = self.after;
        let reach = self.reach.clone();
        Box::pin(async move {
            let done = match after {
                None => connecting.await.map_err(Into::into),
                Some(after) => match tokio::time::timeout(after, connecting).await {
                    Ok(done) => done.map_err(Into::into),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to the API server took longer than {after:?}"),
                    )
                    .into()),
                },
            };
            reach.record(done.is_ok());
            done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::net::SocketAddr;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(20);

    /// Counts the reads that reach the inner reader.
    struct Counted<T> {
        inner: T,
        reads: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if r.is_ready() {
                this.reads += 1;
            }
            r
        }
    }

    #[tokio::test]
    async fn serves_small_reads_from_few_large_ones_and_grows_only_when_full() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(&sent).await.expect("write");
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        // Read through tokio's traits, as the tests' helpers do; hyper's are what it serves.
        let mut r = TokioIo::new(ReadAhead::new(Counted {
            inner: tcp,
            reads: 0,
        }));
        assert_eq!(r.inner().size, FIRST_READ);
        // Read the way rustls does: at most a TLS record's worth per call.
        let mut got = Vec::new();
        let mut calls = 0;
        let mut chunk = vec![0u8; 16 * 1024 + 2048];
        tokio::time::timeout(WAIT, async {
            loop {
                let n = r.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                calls += 1;
                got.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("in time");
        writer.await.expect("task");
        assert!(got == data, "the bytes came through in order");
        let reads = r.inner().inner.reads;
        assert!(
            reads * 3 < calls,
            "{reads} reads of the socket for {calls} reads of the caller"
        );
        assert_eq!(
            r.inner().size,
            MAX_READ,
            "a stream that keeps it full grows the buffer"
        );
    }

    #[tokio::test]
    async fn writes_go_through_and_a_quiet_connection_keeps_the_first_size() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut b = [0u8; 64];
            loop {
                let n = s.read(&mut b).await.expect("read");
                if n == 0 {
                    break;
                }
                s.write_all(&b[..n]).await.expect("write");
            }
        });
        let mut r = TokioIo::new(ReadAhead::new(
            TcpStream::connect(addr).await.expect("connect"),
        ));
        tokio::time::timeout(WAIT, async {
            for i in 0..100u8 {
                r.write_all(&[i; 10]).await.expect("write");
                let mut b = [0u8; 10];
                r.read_exact(&mut b).await.expect("read");
                assert_eq!(b, [i; 10]);
            }
            r.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.expect("read");
            assert!(rest.is_empty());
        })
        .await
        .expect("in time");
        echo.await.expect("task");
        assert_eq!(
            r.inner().size,
            FIRST_READ,
            "small answers never fill the buffer"
        );
        assert!(r.inner().buf.len() <= FIRST_READ);
    }

    /// Serves `answers` in turn, one per request, on every connection; keeps each request's
    /// head.
    async fn scripted_server(
        answers: Vec<String>,
    ) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (seen, answers) = (seen.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut s = tokio::io::BufReader::new(s);
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push_str(&line);
                            if line == "\r\n" {
                                break;
                            }
                        }
                        seen.lock().expect("lock").push(head);
                        let Some(answer) = answers.lock().expect("lock").next() else {
                            return;
                        };
                        s.get_mut()
                            .write_all(answer.as_bytes())
                            .await
                            .expect("write");
                    }
                });
            }
        });
        (addr, heads)
    }

    fn answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn the_stack_retries_429_and_sends_credentials_and_impersonation_like_kubes() {
        use k8s_openapi::api::core::v1::Pod;
        let list =
            r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"7"},"items":[]}"#;
        let (addr, heads) = scripted_server(vec![
            answer("429 Too Many Requests", "Retry-After: 0\r\n", "{}"),
            answer("200 OK", "", list),
        ])
        .await;
        let mut config = kube::Config::new(format!("http://{addr}/base").parse().expect("URL"));
        config.auth_info.token = Some("s3cret".to_string().into());
        config.auth_info.impersonate = Some("alice".to_string());
        let client = client(&config, Default::default()).expect("client");
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, "demo");
        let got = tokio::time::timeout(WAIT, pods.list(&Default::default()))
            .await
            .expect("in time")
            .expect("the list after one retry");
        assert!(got.items.is_empty());
        let heads = heads.lock().expect("lock").clone();
        assert_eq!(heads.len(), 2, "the 429 was retried once: {heads:?}");
        for h in &heads {
            assert!(
                h.starts_with("GET /base/api/v1/namespaces/demo/pods"),
                "{h}"
            );
            let h = h.to_ascii_lowercase();
            assert!(h.contains("authorization: bearer s3cret\r\n"), "{h}");
            assert!(h.contains("impersonate-user: alice\r\n"), "{h}");
        }
    }

    fn local(conn: &ReadAhead<TcpStream>) -> SocketAddr {
        conn.inner.local_addr().expect("local address")
    }

    async fn connect(warm: &mut Warm<BufferedConnector>, uri: &Uri) -> ReadAhead<TcpStream> {
        use tower_service::Service;
        tokio::time::timeout(WAIT, async {
            std::future::poll_fn(|cx| warm.poll_ready(cx))
                .await
                .expect("ready");
            warm.call(uri.clone()).await.expect("connect")
        })
        .await
        .expect("in time")
    }

    /// The spare's local address, once there is one.
    async fn spare(warm: &Warm<BufferedConnector>) -> SocketAddr {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(s) = lock(&warm.spares.slot).as_ref() {
                    return local(&s.conn);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a spare in time")
    }

    #[tokio::test]
    async fn a_spare_connection_serves_the_next_request_unless_the_server_closed_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((s, peer)) = listener.accept().await {
                if tx.send((peer, s)).is_err() {
                    return;
                }
            }
        });
        let uri: Uri = format!("http://{addr}").parse().expect("URL");
        let mut warm = Warm::new(BufferedConnector::new());

        let first = connect(&mut warm, &uri).await;
        let ready = spare(&warm).await;
        assert_ne!(ready, local(&first), "the spare is a connection of its own");
        let second = connect(&mut warm, &uri).await;
        assert_eq!(local(&second), ready, "the next request got the spare");

        // The server closes the next spare before anyone uses it.
        let doomed = spare(&warm).await;
        let mut kept = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some((peer, s)) = accepted.recv().await {
                if peer == doomed {
                    drop(s);
                    break;
                }
                kept.push(s);
            }
        })
        .await
        .expect("the spare's server end");
        tokio::time::timeout(WAIT, async {
            while lock(&warm.spares.slot)
                .as_ref()
                .is_some_and(|s| s.conn.alive())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the close seen");
        let third = connect(&mut warm, &uri).await;
        assert_ne!(local(&third), doomed, "a closed spare is not handed out");
        server.abort();
    }

    #[tokio::test]
    async fn a_success_after_failures_wakes_the_waiters_once() {
        let reach = Arc::new(Reachability::default());
        let woken = reach.back().notified();
        reach.record(true);
        // A success with no failure before it is no news.
        let quiet = tokio::time::timeout(Duration::from_millis(50), woken).await;
        assert!(quiet.is_err(), "no wake-up without an outage");
        reach.record(false);
        reach.record(false);
        let woken = reach.back().notified();
        reach.record(true);
        tokio::time::timeout(WAIT, woken)
            .await
            .expect("woken when the server is back");
        let again = reach.back().notified();
        reach.record(true);
        let quiet = tokio::time::timeout(Duration::from_millis(50), again).await;
        assert!(
            quiet.is_err(),
            "only the first success after failures wakes"
        );
    }

    #[tokio::test]
    async fn connecting_to_a_server_that_never_answers_the_tls_handshake_times_out() {
        use kube::client::ConfigExt;
        use tower_service::Service;
        // Accepts TCP and then says nothing, as a hung API server or a black-holing
        // middlebox would.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(WAIT).await;
            drop(s);
        });
        let url: Uri = format!("https://{addr}").parse().expect("URL");
        let config = kube::Config::new(url.clone());
        let https = config
            .rustls_https_connector_with_connector(BufferedConnector::new())
            .expect("connector");
        let reach = Arc::new(Reachability::default());
        let mut connector = Deadline {
            inner: https,
            after: Some(Duration::from_millis(300)),
            reach: reach.clone(),
        };
        let err = tokio::time::timeout(WAIT, async {
            std::future::poll_fn(|cx| connector.poll_ready(cx))
                .await
                .expect("ready");
            match connector.call(url).await {
                Ok(_) => panic!("a TLS connection to a silent server"),
                Err(e) => e,
            }
        })
        .await
        .expect("in time");
        assert!(
            reach.failing.load(Ordering::Acquire),
            "the failure is recorded"
        );
        let err = err.downcast::<io::Error>().expect("an io::Error");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("300ms"), "{err}");
        hold.abort();
    }
}
