//! [`Deadline`]: a bound on connecting to the API server, and [`Reachability`], what the
//! last attempt found.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;

use super::BoxError;
use super::proxy::failure::ProxyFailure;

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
pub(crate) struct Deadline<S> {
    pub(crate) inner: S,
    pub(crate) after: Option<Duration>,
    pub(crate) reach: Arc<Reachability>,
    /// The proxy connections go through (`the proxy http://... (HTTPS_PROXY)`), if any, for
    /// the timeout's message.
    pub(crate) proxy: Option<String>,
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
        let proxy = self.proxy.clone();
        Box::pin(async move {
            let done = match after {
                None => connecting.await.map_err(Into::into),
                Some(after) => match tokio::time::timeout(after, connecting).await {
                    Ok(done) => done.map_err(Into::into),
                    Err(_) => Err(match proxy {
                        Some(proxy) => ProxyFailure {
                            proxy,
                            message: format!(
                                "connecting took longer than {after:?}: check that the proxy answers and can reach the API server"
                            ),
                            retryable: true,
                        }
                        .into(),
                        None => io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("connecting to the API server took longer than {after:?}"),
                        )
                        .into(),
                    }),
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
    use crate::connector::dial::BufferedConnector;

    const WAIT: Duration = Duration::from_secs(20);

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
            proxy: None,
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
