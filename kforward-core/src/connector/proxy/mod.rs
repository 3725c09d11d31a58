//! The proxy toward the API server: which one kubectl would use, and why.
//!
//! The order is client-go's: the kubeconfig cluster's `proxy-url` (for every request, whatever
//! `NO_PROXY` says: kubectl does so), else the environment: `HTTPS_PROXY`/`https_proxy` for
//! an `https://` server (`HTTP_PROXY`/`http_proxy` for `http://`), else `ALL_PROXY`/
//! `all_proxy` (curl's catch-all, which Go does not read). A proxy from the environment is
//! skipped for `localhost` and loopback addresses, as Go's `httpproxy` always does, and for
//! a server that a `NO_PROXY`/`no_proxy` rule matches by host and port
//! ([`crate::no_proxy`]).
//!
//! hyper-util's proxy matcher is not used for this: it matches `NO_PROXY` as curl does
//! (a `host:port` rule never matches, `.example.com` also matches `example.com`) and has no
//! loopback rule, so it would proxy where kubectl does not.

pub(crate) mod failure;
pub(crate) mod socks;
pub(crate) mod tls;

use std::fmt;

use http::Uri;
use kforward_relay::no_proxy::{NoProxy, is_loopback_host};
use kforward_relay::proxy_url::{ProxyScheme, ProxyUrl, ProxyUrlError};

/// Where a proxy setting came from.
///
/// # Example
///
/// ```
/// use kforward_core::client::ProxyOrigin;
/// let o = ProxyOrigin::Environment { var: "HTTPS_PROXY" };
/// assert_eq!(o.to_string(), "HTTPS_PROXY");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOrigin {
    /// The `proxy-url` of a cluster in the kubeconfig.
    Kubeconfig {
        /// The cluster's name.
        cluster: String,
    },
    /// An environment variable.
    Environment {
        /// Its name, such as `HTTPS_PROXY`.
        var: &'static str,
    },
}

impl fmt::Display for ProxyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyOrigin::Kubeconfig { cluster } => {
                write!(f, "proxy-url of cluster {cluster:?} in the kubeconfig")
            }
            ProxyOrigin::Environment { var } => f.write_str(var),
        }
    }
}

/// Why the API server is reached without a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectReason {
    /// No proxy is set.
    NoProxySet,
    /// A `NO_PROXY` rule matches the server.
    NoProxyRule {
        /// The variable the rule is in (`NO_PROXY` or `no_proxy`).
        var: &'static str,
        /// The rule, as written.
        rule: String,
    },
    /// The server is `localhost` or a loopback address, which a proxy from the environment
    /// never serves (Go's `httpproxy`).
    Loopback,
}

impl fmt::Display for DirectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectReason::NoProxySet => f.write_str("no proxy is set"),
            DirectReason::NoProxyRule { var, rule } => write!(f, "{var} rule {rule:?} matches"),
            DirectReason::Loopback => f.write_str(
                "a loopback server never goes through a proxy from the environment, as with kubectl",
            ),
        }
    }
}

/// How kforward reaches an API server: directly or through a proxy, and why.
///
/// # Example
///
/// ```
/// use kforward_core::client::ApiRoute;
/// let server: http::Uri = "https://api.corp.example:6443".parse()?;
/// let env = |k: &str| match k {
///     "HTTPS_PROXY" => Some("http://proxy.corp.example:3128".to_string()),
///     "NO_PROXY" => Some(".internal.example".to_string()),
///     _ => None,
/// };
/// let route = ApiRoute::choose(&server, "prod", None, env)?;
/// assert_eq!(
///     route.to_string(),
///     "through the proxy http://proxy.corp.example:3128 (HTTPS_PROXY)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRoute {
    /// Straight to the server.
    Direct(DirectReason),
    /// Through a proxy.
    Proxy {
        /// The proxy (its [`Display`](fmt::Display) hides the password).
        url: ProxyUrl,
        /// Where it was set.
        origin: ProxyOrigin,
    },
}

impl fmt::Display for ApiRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiRoute::Direct(why) => write!(f, "directly ({why})"),
            ApiRoute::Proxy { url, origin } => write!(f, "through the proxy {url} ({origin})"),
        }
    }
}

/// A proxy setting that cannot be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {source}")]
pub struct ProxySetupError {
    /// Where the setting came from.
    pub origin: ProxyOrigin,
    /// What is wrong with it.
    pub source: ProxyUrlError,
}

impl ApiRoute {
    /// The route kubectl takes to `server`, a cluster named `cluster` whose kubeconfig entry
    /// has `proxy_url`, with environment variables looked up through `env`.
    ///
    /// # Errors
    ///
    /// [`ProxySetupError`] when the proxy URL that applies does not parse or has a scheme
    /// other than `http`, `https`, `socks5` and `socks5h`.
    pub fn choose(
        server: &Uri,
        cluster: &str,
        proxy_url: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiRoute, ProxySetupError> {
        let parse = |text: &str, origin: ProxyOrigin| match ProxyUrl::parse(text) {
            Ok(url) => Ok(ApiRoute::Proxy { url, origin }),
            Err(source) => Err(ProxySetupError { origin, source }),
        };
        if let Some(text) = proxy_url.filter(|u| !u.trim().is_empty()) {
            let origin = ProxyOrigin::Kubeconfig {
                cluster: cluster.to_string(),
            };
            return parse(text, origin);
        }
        let first = |vars: &[&'static str]| {
            vars.iter()
                .find_map(|v| env(v).filter(|s| !s.trim().is_empty()).map(|s| (*v, s)))
        };
        let vars: [&'static str; 4] = if server.scheme_str() == Some("http") {
            ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        } else {
            ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        };
        let Some((var, text)) = first(&vars) else {
            return Ok(ApiRoute::Direct(DirectReason::NoProxySet));
        };
        let (host, port) = host_and_port(server);
        if is_loopback_host(&host) {
            return Ok(ApiRoute::Direct(DirectReason::Loopback));
        }
        if let Some((no_var, rules)) = first(&["NO_PROXY", "no_proxy"])
            && let Some(rule) = NoProxy::parse(&rules).matching(&host, port)
        {
            return Ok(ApiRoute::Direct(DirectReason::NoProxyRule {
                var: no_var,
                rule: rule.to_string(),
            }));
        }
        parse(&text, ProxyOrigin::Environment { var })
    }

    /// The proxy, if the route has one.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        match self {
            ApiRoute::Direct(_) => None,
            ApiRoute::Proxy { url, .. } => Some(url),
        }
    }

    /// The proxy URL to give kube's own client stack (`KFORWARD_KUBE_CLIENT=stock`), with
    /// its credentials; `socks5h` is spelled `socks5`, the only SOCKS scheme kube takes, whose
    /// SOCKS5 client (hyper-util's) lets the proxy resolve names as `socks5h` means.
    pub(crate) fn kube_proxy_url(&self) -> Option<Uri> {
        let url = self.proxy()?;
        let text = url.to_url_with_credentials();
        let text = match url.scheme() {
            ProxyScheme::Socks5h => text.replacen("socks5h://", "socks5://", 1),
            _ => text,
        };
        text.parse().ok()
    }
}

/// The server's host (IPv6 without brackets) and port (the scheme's default when absent).
pub(crate) fn host_and_port(server: &Uri) -> (String, u16) {
    let host = server
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = server.port_u16().unwrap_or(match server.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    (host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(server: &str, proxy_url: Option<&str>, vars: &[(&str, &str)]) -> ApiRoute {
        let server: Uri = server.parse().expect("server URL");
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        ApiRoute::choose(&server, "c", proxy_url, env).expect("a route")
    }

    fn proxied_by(route: &ApiRoute) -> Option<String> {
        match route {
            ApiRoute::Proxy { url, origin } => Some(format!("{url} {origin}")),
            ApiRoute::Direct(_) => None,
        }
    }

    #[test]
    fn the_kubeconfig_proxy_comes_first_and_ignores_no_proxy_and_loopback() {
        let r = choose(
            "https://127.0.0.1:6443",
            Some("socks5://127.0.0.1:1080"),
            &[("HTTPS_PROXY", "http://env:1"), ("NO_PROXY", "*")],
        );
        assert_eq!(
            proxied_by(&r).as_deref(),
            Some("socks5://127.0.0.1:1080 proxy-url of cluster \"c\" in the kubeconfig")
        );
    }

    #[test]
    fn the_environment_follows_the_servers_scheme_then_all_proxy() {
        let vars = [
            ("HTTPS_PROXY", ""),
            ("https_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://plain:1"),
            ("ALL_PROXY", "socks5h://all:1"),
        ];
        let r = choose("https://api.example:6443", None, &vars);
        assert_eq!(
            proxied_by(&r).as_deref(),
            Some("http://lower:1 https_proxy")
        );
        let r = choose("http://api.example:8080", None, &vars);
        assert_eq!(proxied_by(&r).as_deref(), Some("http://plain:1 HTTP_PROXY"));
        let r = choose("https://api.example", None, &vars[3..]);
        assert_eq!(proxied_by(&r).as_deref(), Some("socks5h://all:1 ALL_PROXY"));
        assert_eq!(
            choose("https://api.example", None, &[]),
            ApiRoute::Direct(DirectReason::NoProxySet)
        );
    }

    #[test]
    fn loopback_and_no_proxy_rules_keep_the_environment_proxy_away() {
        let proxy = ("HTTPS_PROXY", "http://p:3128");
        for server in [
            "https://localhost:6443",
            "https://127.0.0.5",
            "https://[::1]:6443",
        ] {
            assert_eq!(
                choose(server, None, &[proxy, ("NO_PROXY", "")]),
                ApiRoute::Direct(DirectReason::Loopback),
                "{server}"
            );
        }
        let rule =
            |server: &str, rules: &str| match choose(server, None, &[proxy, ("no_proxy", rules)]) {
                ApiRoute::Direct(DirectReason::NoProxyRule { rule, var }) => {
                    Some(format!("{var} {rule}"))
                }
                _ => None,
            };
        assert_eq!(
            rule("https://api.corp.example:6443", "corp.example").as_deref(),
            Some("no_proxy corp.example")
        );
        assert_eq!(
            rule("https://198.18.0.1:6443", "198.18.0.0/15").as_deref(),
            Some("no_proxy 198.18.0.0/15")
        );
        assert_eq!(
            rule("https://198.18.0.1:6443", "198.18.0.1:6443").as_deref(),
            Some("no_proxy 198.18.0.1:6443")
        );
        assert_eq!(
            rule("https://api.corp.example", "api.corp.example:443").as_deref(),
            Some("no_proxy api.corp.example:443")
        );
        assert_eq!(
            rule("https://198.18.0.1:6443", "198.18.0.1:443"),
            None,
            "another port"
        );
        assert_eq!(
            rule("https://api.corp.example:6443", ".other.example"),
            None
        );
    }

    #[test]
    fn a_bad_proxy_url_names_where_it_came_from() {
        let server: Uri = "https://api.example".parse().expect("URL");
        let env = |k: &str| (k == "HTTPS_PROXY").then(|| "ftp://u:pw@x".to_string());
        let e = ApiRoute::choose(&server, "c", None, env).expect_err("ftp");
        assert!(e.to_string().starts_with("HTTPS_PROXY: "), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn kube_gets_socks5h_as_socks5_with_the_credentials() {
        let r = choose("https://a", Some("socks5h://u:p%40@s:1080"), &[]);
        assert_eq!(
            r.kube_proxy_url().map(|u| u.to_string()).as_deref(),
            Some("socks5://u:p%40@s:1080/")
        );
        assert_eq!(choose("https://a", None, &[]).kube_proxy_url(), None);
    }
}
