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
//!
//! Connections go to the API server directly or through the proxy kubectl would use
//! ([`ApiRoute`]: the kubeconfig's `proxy-url`, else `HTTPS_PROXY`/`ALL_PROXY` unless
//! `NO_PROXY` or a loopback server says direct): an HTTP `CONNECT` tunnel (inside TLS for an
//! `https://` proxy) or SOCKS5, below the API server's TLS, so every request, watch and
//! port-forward upgrade made through the client takes it, and the spare connection is a
//! proxied one. `RUST_LOG=kforward_core=debug` shows each connection's route and why.

mod deadline;
mod dial;
pub(crate) mod proxy;
mod read_ahead;
mod spare;

use std::sync::Arc;

pub use proxy::tls::PROXY_CA_ENV;
pub use proxy::{ApiRoute, DirectReason, ProxyOrigin, ProxySetupError};

pub(crate) use deadline::Reachability;
pub(crate) use proxy::failure::ProxyFailure;

use deadline::Deadline;
use dial::Dialer;
use spare::Warm;

/// Idle connections kept in hyper's pool. HTTP/1.1 takes one connection per request in
/// flight, so a `kforward run` of 200 forwards opens about 200 at start-up; hyper would
/// keep them all for 90 s (its default has no cap), some 50-100 KiB each with their TLS
/// and HTTP buffers. After the burst a few serve the steady trickle of requests; a new
/// tunnel takes the spare connection ([`Warm`]), not a pooled one.
const POOL_MAX_IDLE: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a kube client like `kube::Client::try_from(config)`, whose connections take
/// `route` and read through a [`ReadAhead`](read_ahead::ReadAhead) buffer.
///
/// # Errors
///
/// [`ProxyFailure`] when an `https://` proxy's CAs cannot be loaded; kube's errors when
/// the TLS settings or credentials of `config` cannot be used.
pub(crate) fn client(
    config: &kube::Config,
    route: ApiRoute,
    reach: Arc<Reachability>,
) -> Result<kube::Client, ClientError> {
    use kube::client::ConfigExt;
    let proxy = match &route {
        ApiRoute::Proxy { url, origin } => Some(dial::label(url, origin)),
        ApiRoute::Direct(_) => None,
    };
    let cluster_cas = config.root_cert.as_deref().unwrap_or_default();
    let https = config.rustls_https_connector_with_connector(Dialer::new(route, cluster_cas)?)?;
    let connector = Warm::new(Deadline {
        inner: https,
        after: config.connect_timeout,
        reach,
        proxy,
    });
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build::<_, kube::client::Body>(connector);
    // Each request as a DEBUG span of `tower_http::trace` (method, URI, status, latency),
    // as kube's stack logs them under `kube_client`.
    // A failure (a connection that could not be made, a 5xx) is logged at DEBUG too, as
    // kube's stack only marks its span: the error reaches the caller, who says it once,
    // instead of an ERROR line before every message about an unreachable server.
    let failures = tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG);
    let trace = tower_http::trace::TraceLayer::new_for_http().on_failure(failures);
    let http = tower::Layer::layer(&trace, http);
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

/// Why [`client`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// kube refused the settings.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The proxy's TLS settings could not be loaded.
    #[error(transparent)]
    Proxy(#[from] ProxyFailure),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(20);

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
        let client = client(
            &config,
            ApiRoute::Direct(DirectReason::NoProxySet),
            Default::default(),
        )
        .expect("client");
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
}
