//! [`Warm`]: one spare connection to the API server, handshakes done, for the next tunnel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use super::BoxError;
use super::read_ahead::ReadAhead;

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
pub(crate) struct Warm<S: tower_service::Service<Uri>> {
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
pub(crate) trait Alive {
    fn alive(&self) -> bool;
}

impl Alive for ReadAhead<TcpStream> {
    fn alive(&self) -> bool {
        // A peek that finds the end of the stream means the server closed it. Nobody
        // waits on this connection's reads yet, so the no-op waker replaces no one's.
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.get_ref().poll_peek(&mut cx, &mut buf) {
            Poll::Ready(Ok(0) | Err(_)) => false,
            Poll::Ready(Ok(_)) | Poll::Pending => true,
        }
    }
}

/// A connection under TLS (the API server's, or an `https://` proxy's) is alive while the
/// TCP connection under it is.
impl<T: Alive> Alive for hyper_rustls::MaybeHttpsStream<T> {
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
    pub(crate) fn new(inner: S) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::dial::BufferedConnector;
    use std::net::SocketAddr;

    const WAIT: Duration = Duration::from_secs(20);

    fn local(conn: &ReadAhead<TcpStream>) -> SocketAddr {
        conn.get_ref().local_addr().expect("local address")
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
}
