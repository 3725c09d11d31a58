//! [`Dialer`]: the connector at the bottom of kforward's client stack, which opens a TCP
//! connection to the API server, directly or through the proxy its [`ApiRoute`] names, and
//! hands it out reading through a [`ReadAhead`] buffer (kube's rustls connector then puts
//! the API server's TLS on top).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use kforward_relay::http_connect::{self, ConnectError};
use kforward_relay::proxy_url::{ProxyScheme, ProxyUrl, host_port};
use tokio::net::TcpStream;
use tracing::debug;

use super::BoxError;
use super::proxy::failure::ProxyFailure;
use super::proxy::{ApiRoute, ProxyOrigin, host_and_port, socks};
use super::read_ahead::ReadAhead;

/// A connection to the API server (or to the tunnel through a proxy to it), before the API
/// server's TLS: plain TCP, or TLS to an `https://` proxy.
pub(crate) type Conn = MaybeHttpsStream<ReadAhead<TcpStream>>;

/// hyper's TCP connector with `TCP_NODELAY`, for any scheme.
fn tcp_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    // The scheme is https (or a proxy's): TLS, if any, goes on top.
    http.enforce_http(false);
    // With Nagle's algorithm, the HTTP request written right after TLS's Finished
    // waits for that to be acknowledged: one more round trip for every new tunnel,
    // measured with `compare --only wan` (5.0 round trips to first byte with it, 3.8
    // without). Go sets TCP_NODELAY on every TCP connection by default
    // (`net.TCPConn.SetNoDelay`'s documentation), so kubectl never waits so.
    http.set_nodelay(true);
    http
}

/// hyper's HTTP connector, handing out connections that read through a [`ReadAhead`].
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct BufferedConnector {
    http: HttpConnector,
}

#[cfg(test)]
impl BufferedConnector {
    pub(crate) fn new() -> Self {
        BufferedConnector {
            http: tcp_connector(),
        }
    }
}

#[cfg(test)]
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

/// Opens connections to the API server as its [`ApiRoute`] says: directly, through an HTTP
/// `CONNECT` tunnel (over TLS for an `https://` proxy), or through SOCKS5.
#[derive(Clone)]
pub(crate) struct Dialer {
    tcp: HttpConnector,
    route: Arc<ApiRoute>,
    /// TLS to an `https://` proxy.
    proxy_tls: Option<tokio_rustls::TlsConnector>,
}

impl Dialer {
    /// A dialer for `route`; an `https://` proxy's certificate may be signed by one of
    /// `cluster_cas` (DER), the kubeconfig cluster's CAs, as with kubectl.
    ///
    /// # Errors
    ///
    /// For an `https://` proxy, when the CAs to check its certificate cannot be loaded.
    pub(crate) fn new(route: ApiRoute, cluster_cas: &[Vec<u8>]) -> Result<Dialer, ProxyFailure> {
        let proxy_tls = match &route {
            ApiRoute::Proxy { url, origin } if url.scheme() == ProxyScheme::Https => {
                let config = super::proxy::tls::client_config(cluster_cas).map_err(|message| {
                    ProxyFailure {
                        proxy: label(url, origin),
                        message,
                        retryable: false,
                    }
                })?;
                Some(tokio_rustls::TlsConnector::from(config))
            }
            _ => None,
        };
        Ok(Dialer {
            tcp: tcp_connector(),
            route: Arc::new(route),
            proxy_tls,
        })
    }
}

/// `the proxy http://alice@proxy:3128 (HTTPS_PROXY)`.
pub(crate) fn label(url: &ProxyUrl, origin: &ProxyOrigin) -> String {
    format!("the proxy {url} ({origin})")
}

impl tower_service::Service<Uri> for Dialer {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self.route.clone();
        let mut tcp = self.tcp.clone();
        let tls = self.proxy_tls.clone();
        Box::pin(async move {
            match &*route {
                ApiRoute::Direct(why) => {
                    debug!(server = %dst, "connecting to the API server directly: {why}");
                    let s = tower_service::Service::call(&mut tcp, dst).await?;
                    Ok(MaybeHttpsStream::Http(ReadAhead::new(s.into_inner())))
                }
                ApiRoute::Proxy { url, origin } => {
                    debug!(server = %dst, proxy = %url, %origin, "connecting to the API server through the proxy");
                    let failure = |message: String, retryable: bool| ProxyFailure {
                        proxy: label(url, origin),
                        message,
                        retryable,
                    };
                    through(url, &dst, tcp, tls)
                        .await
                        .map_err(|(m, r)| Box::new(failure(m, r)) as BoxError)
                }
            }
        })
    }
}

/// A tunnel to `dst` through the proxy `url`; on failure, what happened and whether trying
/// again may help.
async fn through(
    url: &ProxyUrl,
    dst: &Uri,
    mut tcp: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<Conn, (String, bool)> {
    let (host, port) = host_and_port(dst);
    let server = host_port(&host, port);
    let proxy_uri: Uri = format!("http://{}", url.authority())
        .parse()
        .map_err(|e| (format!("the proxy's address is not usable: {e}"), false))?;
    let tcp = tower_service::Service::call(&mut tcp, proxy_uri)
        .await
        .map_err(|e| {
            // hyper's "tcp connect error" says less than the OS error under it.
            let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            (
                format!(
                    "cannot connect to the proxy ({why}): check the proxy's host and port, and that it is running"
                ),
                true,
            )
        })?
        .into_inner();
    let conn = match url.scheme() {
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            let tcp = socks::connect(tcp, &host, port, url.credentials()).await?;
            return Ok(MaybeHttpsStream::Http(ReadAhead::new(tcp)));
        }
        ProxyScheme::Http => MaybeHttpsStream::Http(ReadAhead::new(tcp)),
        ProxyScheme::Https => {
            let Some(tls) = tls else {
                return Err(("no TLS settings for the https:// proxy".into(), false));
            };
            let name =
                rustls::pki_types::ServerName::try_from(url.host().to_string()).map_err(|e| {
                    (
                        format!("the proxy's host is not a TLS server name: {e}"),
                        false,
                    )
                })?;
            let stream = tls
                .connect(name, TokioIo::new(ReadAhead::new(tcp)))
                .await
                .map_err(|e| {
                    (
                        format!(
                            "TLS with the proxy failed ({e}): if a private CA signed the proxy's certificate, point {} (or SSL_CERT_FILE) at that CA's PEM file, or add it to the kubeconfig's certificate-authority as for kubectl",
                            super::proxy::tls::PROXY_CA_ENV
                        ),
                        false,
                    )
                })?;
            MaybeHttpsStream::Https(TokioIo::new(stream))
        }
    };
    let mut io = TokioIo::new(conn);
    let auth = url.basic_auth();
    let early = http_connect::connect(&mut io, &host, port, auth.as_deref())
        .await
        .map_err(|e| match e {
            ConnectError::Refused(answer) => (
                format!("CONNECT {server}: {}", answer.explain(auth.is_some())),
                !matches!(answer.code, 401 | 403 | 407),
            ),
            other => (format!("CONNECT {server}: {other}"), true),
        })?;
    if !early.is_empty() {
        // The API server speaks only after the client's TLS hello: bytes before it are not
        // the server's.
        return Err((
            format!(
                "CONNECT {server}: the proxy sent {} bytes the API server cannot have sent yet",
                early.len()
            ),
            true,
        ));
    }
    Ok(io.into_inner())
}
