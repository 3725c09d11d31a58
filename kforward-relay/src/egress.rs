//! The relay's way out to TCP destinations: straight from the pod, or through an HTTP proxy
//! (`HTTPS_PROXY`, else `ALL_PROXY`) unless a `NO_PROXY` rule keeps the destination direct.
//!
//! Clusters whose pods reach the outside only through a corporate proxy give relay pods
//! these variables (`kforward --relay-env`). A destination stays direct when a `NO_PROXY`
//! rule matches its name or port, or when the name resolves (through the cluster's DNS) to
//! an address a rule matches, so that `web.demo` stays direct once the service range is in
//! `NO_PROXY`. Other names go to the proxy as names, for the proxy to resolve, as Go's
//! clients do. UDP is never proxied: an HTTP proxy carries TCP only.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::http_connect::{self, ConnectError};
use crate::no_proxy::NoProxy;
use crate::proxy_url::{ProxyScheme, ProxyUrl, ProxyUrlError, host_port};

/// The variables a proxy is read from, in order (the relay's destinations are not HTTP, so
/// `HTTP_PROXY` is not among them).
pub const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
/// The variables `NO_PROXY` rules are read from, in order.
pub const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// An egress proxy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL does not parse.
    #[error("{var}: {source}")]
    Url {
        /// The variable it came from.
        var: &'static str,
        /// What is wrong with it.
        source: ProxyUrlError,
    },
    /// The proxy is not an `http://` one.
    #[error(
        "{var}: the relay reaches destinations through an HTTP CONNECT proxy; {url} is a {scheme} proxy (give the relay an http:// one)"
    )]
    Scheme {
        /// The variable it came from.
        var: &'static str,
        /// The proxy, without its password.
        url: String,
        /// Its scheme.
        scheme: &'static str,
    },
}

/// How the relay leaves the pod.
///
/// # Example
///
/// ```
/// use kforward_relay::egress::Egress;
/// let env = |k: &str| match k {
///     "HTTPS_PROXY" => Some("http://proxy.corp:3128".to_string()),
///     "NO_PROXY" => Some(".svc,.cluster.local,10.96.0.0/12".to_string()),
///     _ => None,
/// };
/// let egress = Egress::from_env(env)?;
/// assert!(egress.rule_for("web.demo.svc.cluster.local", 80).is_some());
/// assert!(egress.rule_for("api.github.com", 443).is_none());
/// # Ok::<(), kforward_relay::egress::EgressError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Egress {
    proxy: Option<(ProxyUrl, &'static str)>,
    no_proxy: NoProxy,
}

impl Egress {
    /// Every destination direct.
    pub fn direct() -> Egress {
        Egress::default()
    }

    /// Reads the proxy and its bypass rules from variables looked up with `get` (a pod's
    /// environment): [`PROXY_VARS`] (the first non-empty one), [`NO_PROXY_VARS`].
    ///
    /// # Errors
    ///
    /// [`EgressError`] when the proxy URL does not parse or is not `http://`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Egress, EgressError> {
        let first = |vars: &[&'static str]| {
            vars.iter()
                .find_map(|v| get(v).filter(|s| !s.trim().is_empty()).map(|s| (*v, s)))
        };
        let proxy = match first(&PROXY_VARS) {
            None => None,
            Some((var, text)) => {
                let url =
                    ProxyUrl::parse(&text).map_err(|source| EgressError::Url { var, source })?;
                if url.scheme() != ProxyScheme::Http {
                    return Err(EgressError::Scheme {
                        var,
                        url: url.to_string(),
                        scheme: url.scheme().as_str(),
                    });
                }
                Some((url, var))
            }
        };
        let no_proxy = first(&NO_PROXY_VARS)
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        Ok(Egress { proxy, no_proxy })
    }

    /// The proxy, if there is one.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        self.proxy.as_ref().map(|(p, _)| p)
    }

    /// The bypass rules.
    pub fn no_proxy(&self) -> &NoProxy {
        &self.no_proxy
    }

    /// The `NO_PROXY` rule that keeps `host:port` direct, if any.
    pub fn rule_for(&self, host: &str, port: u16) -> Option<String> {
        self.no_proxy.matching(host, port).map(ToString::to_string)
    }

    /// The `NO_PROXY` rule that keeps one of `ips` (what the destination's name resolved
    /// to) direct, if any.
    pub fn rule_for_addresses(&self, ips: &[IpAddr], port: u16) -> Option<String> {
        ips.iter()
            .find_map(|ip| self.no_proxy.matching(&ip.to_string(), port))
            .map(ToString::to_string)
    }

    /// `http://proxy:3128 (HTTPS_PROXY)`, for messages.
    fn label(&self) -> String {
        match &self.proxy {
            Some((p, var)) => format!("{p} ({var} of the relay pod)"),
            None => "no proxy".to_string(),
        }
    }
}

/// Why a connection through the egress proxy failed, said for the user.
#[derive(Debug)]
pub struct EgressFailure {
    /// The message: what failed, through which proxy, and what to check.
    pub message: String,
    /// Whether it timed out (else it was refused).
    pub timed_out: bool,
}

/// Opens a tunnel to `host:port` through `egress`'s proxy, connecting from `source` when
/// set, each step within `timeout`. `proxy_ips` are the proxy host's addresses. Returns the
/// stream and the destination's first bytes, if the proxy sent them with its answer.
///
/// # Errors
///
/// [`EgressFailure`] naming the proxy, the destination and what to check.
pub async fn connect_via_proxy(
    egress: &Egress,
    proxy_ips: &[IpAddr],
    source: Option<IpAddr>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, Vec<u8>), EgressFailure> {
    let Some((proxy, _)) = &egress.proxy else {
        return Err(EgressFailure {
            message: "no egress proxy is set".into(),
            timed_out: false,
        });
    };
    let target = host_port(host, port);
    let fail = |what: String, timed_out: bool| EgressFailure {
        message: format!("through the egress proxy {}: {what}", egress.label()),
        timed_out,
    };
    let mut last = None;
    let mut stream = None;
    for ip in proxy_ips {
        let addr = SocketAddr::new(*ip, proxy.port());
        match tokio::time::timeout(timeout, connect_from(addr, source)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = Some((e.to_string(), false)),
            Err(_) => last = Some((format!("no answer within {}s", timeout.as_secs()), true)),
        }
    }
    let Some(mut stream) = stream else {
        let (why, timed_out) = last.unwrap_or_else(|| ("it has no address".into(), false));
        return Err(fail(
            format!(
                "cannot connect to the proxy ({why}); check the proxy's address given with --relay-env"
            ),
            timed_out,
        ));
    };
    let _ = stream.set_nodelay(true);
    let auth = proxy.basic_auth();
    let asked = http_connect::connect(&mut stream, host, port, auth.as_deref());
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(early)) => Ok((stream, early)),
        Ok(Err(ConnectError::Refused(answer))) => Err(fail(
            format!("CONNECT {target}: {}", answer.explain(auth.is_some())),
            false,
        )),
        Ok(Err(e)) => Err(fail(format!("CONNECT {target}: {e}"), false)),
        Err(_) => Err(fail(
            format!("CONNECT {target}: no answer within {}s", timeout.as_secs()),
            true,
        )),
    }
}

async fn connect_from(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_first_non_empty_variable_wins_and_only_http_is_taken() {
        let e = Egress::from_env(env(&[
            ("HTTPS_PROXY", " "),
            ("https_proxy", "http://a:1"),
            ("ALL_PROXY", "http://b:1"),
        ]))
        .expect("egress");
        assert_eq!(
            e.proxy().map(ToString::to_string).as_deref(),
            Some("http://a:1")
        );
        assert!(Egress::from_env(env(&[])).expect("none").proxy().is_none());
        let err = Egress::from_env(env(&[("ALL_PROXY", "socks5://s:1080")])).expect_err("socks");
        assert!(err.to_string().contains("ALL_PROXY"), "{err}");
        let err = Egress::from_env(env(&[("HTTPS_PROXY", "ftp://x:s3cret@y")])).expect_err("ftp");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn rules_match_names_and_resolved_addresses() {
        let e = Egress::from_env(env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("no_proxy", ".svc,10.96.0.0/12,db.corp:5432"),
        ]))
        .expect("egress");
        assert_eq!(e.rule_for("web.demo.svc", 80).as_deref(), Some(".svc"));
        assert_eq!(e.rule_for("db.corp", 5432).as_deref(), Some("db.corp:5432"));
        assert!(e.rule_for("db.corp", 5433).is_none());
        let ips: Vec<IpAddr> = vec![
            "8.8.8.8".parse().expect("ip"),
            "10.96.3.4".parse().expect("ip"),
        ];
        assert_eq!(
            e.rule_for_addresses(&ips, 80).as_deref(),
            Some("10.96.0.0/12")
        );
        assert!(e.rule_for_addresses(&ips[..1], 80).is_none());
    }
}
