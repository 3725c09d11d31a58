//! The HTTP side of the proxy, on hyper: `CONNECT host:port` tunnels, plain requests in
//! absolute form (sent on as origin form, with `Proxy-*` and hop-by-hop headers removed,
//! each client's connection kept alive whatever hosts its requests name), the PAC file at
//! `/proxy.pac`, and `Proxy-Authorization: Basic`.
//!
//! Hop-by-hop headers are those of RFC 9110 section 7.6.1 (`Connection` and the fields it
//! lists, `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`) plus
//! `Proxy-Authorization` and `Proxy-Authenticate`, meant for this proxy only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::conn::{Conn, Counted, Shared, carry};
use super::dial::Opened;
use super::pac::{PacInputs, pac_file};
use super::socks::{Address, Host};
use crate::forward::Connection;
use hyper::upgrade::OnUpgrade;

type Body = BoxBody<Bytes, hyper::Error>;

/// Upstream connections of one client, by destination.
type Pool = Arc<Mutex<HashMap<Address, SendRequest<Incoming>>>>;

/// A CONNECT's tunnel, carried once hyper hands the client's connection over.
type Tunnel = Arc<Mutex<Option<(OnUpgrade, Opened)>>>;

/// What the requests of one client connection share.
#[derive(Clone)]
struct Client {
    pool: Pool,
    tunnel: Tunnel,
    counted: Arc<Connection>,
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves one HTTP client until it closes; returns the error that ended it, if any.
pub(crate) async fn serve(
    sock: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    counted: &Arc<Connection>,
) -> Option<std::io::Error> {
    let client = Client {
        pool: Pool::default(),
        tunnel: Arc::default(),
        counted: counted.clone(),
    };
    let tunnel = client.tunnel.clone();
    let shared_linger = shared.opts.half_close_linger;
    let svc = service_fn(move |req| {
        let (shared, client) = (shared.clone(), client.clone());
        async move { Ok::<_, Infallible>(handle(req, peer, shared, client).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(sock), svc)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        debug!(%peer, error = %e, "HTTP client connection ended with an error");
        return Some(std::io::Error::other(e));
    }
    // After a CONNECT, hyper hands the connection over: carry the tunnel here, so that
    // the connection counts as open (and can be closed at stop) until it ends.
    let taken = tunnel.lock().unwrap_or_else(PoisonError::into_inner).take();
    let (upgrade, upstream) = taken?;
    match upgrade.await {
        Ok(upgraded) => {
            let client = tokio::io::split(TokioIo::new(upgraded));
            carry(client, upstream, &[], counted, shared_linger).await
        }
        Err(e) => Some(std::io::Error::other(e)),
    }
}

/// `host` and `port` of an authority, IPv6 brackets removed.
fn address(host: &str, port: u16) -> Address {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Address {
            host: Host::Ip(ip),
            port,
        },
        Err(_) => Address {
            host: Host::Name(bare.to_string()),
            port,
        },
    }
}

/// What a request asks of the proxy, decided from its method and target alone (hyper has
/// parsed the head; this is the proxy's reading of it, sans I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A request to the proxy itself (origin form): the PAC file, or a note on its use.
    Proxy,
    /// `CONNECT host:port`: a tunnel to this destination.
    Connect(Address),
    /// A plain `http://` request in absolute form, sent on in origin form.
    Forward(Target),
    /// A request the proxy cannot serve, with the reason (answered 400).
    Refuse(String),
}

/// Reads what a request asks: see [`Ask`]. The `http_proxy_request` fuzz target drives it.
pub fn ask(method: &Method, uri: &Uri) -> Ask {
    if method == Method::CONNECT {
        let Some(auth) = uri.authority() else {
            return Ask::Refuse("CONNECT needs host:port".into());
        };
        return match auth.port_u16() {
            Some(port) => Ask::Connect(address(auth.host(), port)),
            None => Ask::Refuse(format!("CONNECT {auth}: the port is missing")),
        };
    }
    if uri.scheme().is_none() {
        return Ask::Proxy;
    }
    if uri.scheme_str() != Some("http") {
        return Ask::Refuse(format!(
            "{uri}: only http:// requests are proxied as they are; https:// goes through CONNECT"
        ));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Ask::Refuse(format!("{uri}: no host"));
    };
    let dest = address(authority.host(), authority.port_u16().unwrap_or(80));
    let origin = uri.path_and_query().map_or("/", |p| p.as_str());
    Ask::Forward(Target {
        dest,
        origin: Uri::try_from(origin).unwrap_or_else(|_| Uri::from_static("/")),
        authority,
    })
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client: Client,
) -> Response<Body> {
    let asked = ask(req.method(), req.uri());
    if asked == Ask::Proxy {
        return origin_form(&req, &shared);
    }
    if let Some(auth) = &shared.auth {
        let given = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| auth.check_basic(g)) {
            let mut r = text(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "this proxy needs credentials (Proxy-Authorization: Basic)\n".into(),
            );
            r.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kforward\""),
            );
            return r;
        }
    }
    match asked {
        Ask::Connect(dest) => connect(req, dest, peer, &shared, &client).await,
        Ask::Forward(target) => forward(req, target, peer, &shared, &client).await,
        Ask::Refuse(reason) => text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
        Ask::Proxy => origin_form(&req, &shared),
    }
}

/// Where a plain request goes ([`Ask::Forward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The destination.
    pub dest: Address,
    /// The request target to send on (path and query).
    pub origin: Uri,
    /// The authority as written, for a `Host` header when the request has none.
    pub authority: Authority,
}

/// A request to the proxy itself: the PAC file, or a note on how to use the proxy.
fn origin_form(req: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    if req.method() == Method::GET && req.uri().path() == "/proxy.pac" {
        let proxy = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| shared.local_addr.to_string(), str::to_string);
        let catalog = shared.router.catalog();
        let (svc_ips, pod_ips) = catalog.addresses();
        let pac = pac_file(&PacInputs {
            proxy,
            auth: shared.auth.is_some(),
            cluster_domain: shared.opts.cluster_domain.clone(),
            namespace: shared.namespace.clone(),
            services: catalog.services(),
            addresses: svc_ips.into_iter().chain(pod_ips).collect(),
        });
        let mut r = Response::new(full(pac));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
        );
        return r;
    }
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "this is kforward's forward proxy: use it as an HTTP, SOCKS5 or SOCKS4a proxy \
             (e.g. curl -x http://{0} http://web.{1}/), or point a browser at http://{0}/proxy.pac\n",
            shared.local_addr, shared.namespace
        ),
    )
}

async fn connect(
    req: Request<Incoming>,
    dest: Address,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    client: &Client,
) -> Response<Body> {
    let conn = Conn::new(shared, &client.counted, peer, "http-connect", dest);
    match conn.open().await {
        Ok(upstream) => {
            *client.tunnel.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((hyper::upgrade::on(req), upstream));
            Response::new(full(Bytes::new()))
        }
        Err(e) => text(e.http_status(), format!("{e}\n")),
    }
}

/// Removes the hop-by-hop headers, and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for h in listed {
        headers.remove(h);
    }
    for h in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
    for h in ["keep-alive", "proxy-connection"] {
        headers.remove(h);
    }
}

/// A plain request in absolute form: sent on in origin form over this client's
/// connection to that destination (opened when it has none).
async fn forward(
    mut req: Request<Incoming>,
    target: Target,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    client: &Client,
) -> Response<Body> {
    let pool = &client.pool;
    let Target {
        dest,
        origin,
        authority,
    } = target;
    *req.uri_mut() = origin;
    strip_hop_by_hop(req.headers_mut());
    if !req.headers().contains_key(header::HOST)
        && let Ok(h) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, h);
    }
    let reused = pool
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&dest);
    let reusable = match reused {
        Some(mut s) if !s.is_closed() => s.ready().await.is_ok().then_some(s),
        _ => None,
    };
    let mut sender = match reusable {
        Some(s) => s,
        None => {
            let conn = Conn::new(shared, &client.counted, peer, "http", dest.clone());
            let upstream = match conn.open().await {
                Ok(up) => Counted::new(up, &client.counted),
                Err(e) => return text(e.http_status(), format!("{e}\n")),
            };
            match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
                Ok((s, driver)) => {
                    tokio::spawn(async move {
                        if let Err(e) = driver.await {
                            debug!(error = %e, "upstream HTTP connection ended with an error");
                        }
                    });
                    s
                }
                Err(e) => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("{dest}: HTTP handshake failed: {e}\n"),
                    );
                }
            }
        }
    };
    let sent = sender.send_request(req).await;
    pool.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(dest.clone(), sender);
    match sent {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("{dest} did not answer the request: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn authorities_become_addresses() {
        assert_eq!(
            address("[::1]", 80).host,
            Host::Ip("::1".parse().expect("ip"))
        );
        assert_eq!(address("web.demo", 80).to_string(), "web.demo:80");
    }

    #[test]
    fn requests_ask_by_method_and_target() {
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        assert_eq!(ask(&Method::GET, &uri("/proxy.pac")), Ask::Proxy);
        assert!(matches!(
            ask(&Method::CONNECT, &uri("[::1]:5432")),
            Ask::Connect(a) if a.to_string() == "[::1]:5432"
        ));
        assert!(matches!(
            ask(&Method::CONNECT, &uri("web.demo")),
            Ask::Refuse(r) if r.contains("port is missing")
        ));
        assert!(matches!(
            ask(&Method::GET, &uri("https://web.demo/")),
            Ask::Refuse(r) if r.contains("CONNECT")
        ));
        let Ask::Forward(t) = ask(&Method::POST, &uri("http://web.demo/a?b=c")) else {
            panic!("a plain request is forwarded")
        };
        assert_eq!(
            (
                t.dest.to_string(),
                t.origin.to_string(),
                t.authority.as_str()
            ),
            ("web.demo:80".into(), "/a?b=c".into(), "web.demo")
        );
    }
}
