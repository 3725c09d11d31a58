//! Proxy URLs as a kubeconfig's `proxy-url` and `HTTPS_PROXY` give them: the scheme, the
//! proxy's address and its credentials, shown without the password.
//!
//! Parsed as Go's `net/http` and `golang.org/x/net/proxy` read them (which kubectl uses): a
//! URL without a scheme is an `http://` proxy; a missing port is 80 for `http`, 443 for
//! `https` and 1080 for `socks5`/`socks5h` (Go's `canonicalAddr` and `proxy.FromURL`); the
//! user name and password are percent-decoded.

use std::fmt;

use base64::Engine;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// What must be percent-encoded in a URL's user name or password.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// How kforward talks to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// `http://`: an HTTP `CONNECT` tunnel over plain TCP.
    Http,
    /// `https://`: the same tunnel inside TLS to the proxy.
    Https,
    /// `socks5://`: SOCKS5 (RFC 1928). The host name goes to the proxy, which resolves it,
    /// as client-go's dialer (`golang.org/x/net/proxy`) does.
    Socks5,
    /// `socks5h://`: SOCKS5 with the host name resolved by the proxy (curl's spelling).
    Socks5h,
}

impl ProxyScheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// Whether the tunnel is an HTTP `CONNECT` (`http` and `https`), not SOCKS.
    pub fn is_http(self) -> bool {
        matches!(self, ProxyScheme::Http | ProxyScheme::Https)
    }

    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        }
    }
}

/// A proxy URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy URL {url:?} {reason}")]
pub struct ProxyUrlError {
    /// The URL as given, with any password replaced by `***`.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed proxy URL.
///
/// Its [`Display`](fmt::Display) never shows the password: `http://alice@proxy:3128`.
///
/// # Example
///
/// ```
/// use kforward_relay::proxy_url::{ProxyScheme, ProxyUrl};
/// let p = ProxyUrl::parse("http://alice:p%40ss@proxy.corp.example:3128")?;
/// assert_eq!(p.scheme(), ProxyScheme::Http);
/// assert_eq!(p.authority(), "proxy.corp.example:3128");
/// assert_eq!(p.credentials(), Some(("alice", "p@ss")));
/// assert_eq!(p.to_string(), "http://alice@proxy.corp.example:3128");
/// # Ok::<(), kforward_relay::proxy_url::ProxyUrlError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    scheme: ProxyScheme,
    /// The host, IPv6 addresses without brackets.
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs and panics.
        f.debug_tuple("ProxyUrl").field(&self.to_string()).finish()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            write!(f, "{}@", utf8_percent_encode(user, USERINFO))?;
        }
        f.write_str(&self.authority())
    }
}

impl ProxyUrl {
    /// Parses a proxy URL (`http`, `https`, `socks5` or `socks5h`; no scheme means `http`).
    ///
    /// # Errors
    ///
    /// [`ProxyUrlError`] for text that is not a URL, another scheme, or no host.
    pub fn parse(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let text = text.trim();
        let fail = |reason: &str| ProxyUrlError {
            url: redact(text),
            reason: reason.to_string(),
        };
        // Go's httpproxy: "if the proxy URL does not parse or has no scheme, try http://".
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url =
            url::Url::parse(&with_scheme).map_err(|e| fail(&format!("is not a URL ({e})")))?;
        let scheme = match url.scheme() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            other => {
                return Err(fail(&format!(
                    "has the scheme {other:?}; kforward speaks http, https, socks5 and socks5h to proxies"
                )));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| fail("names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(scheme.default_port());
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let password = url.password().map(decode);
        // `http://:secret@proxy` has credentials: an empty user name and a password (curl
        // sends `:secret` for it). Only without either are there none.
        let user = Some(url.username())
            .filter(|u| !u.is_empty() || password.is_some())
            .map(decode);
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            user,
            password,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The proxy's host (IPv6 addresses without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port (the scheme's default when the URL has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, IPv6 addresses in brackets.
    pub fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The user name and password, percent-decoded (the password may be empty).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.user
            .as_deref()
            .map(|u| (u, self.password.as_deref().unwrap_or("")))
    }

    /// The `Proxy-Authorization` value for an HTTP proxy: `Basic` and the base64 of
    /// `user:password` (RFC 7617), when the URL has credentials.
    ///
    /// # Example
    ///
    /// ```
    /// let p = kforward_relay::proxy_url::ProxyUrl::parse("http://Aladdin:open%20sesame@p:1")?;
    /// assert_eq!(p.basic_auth().as_deref(), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
    /// # Ok::<(), kforward_relay::proxy_url::ProxyUrlError>(())
    /// ```
    pub fn basic_auth(&self) -> Option<String> {
        let (user, password) = self.credentials()?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {encoded}"))
    }

    /// The URL with the credentials, for a client that reads them from the URL itself.
    pub fn to_url_with_credentials(&self) -> String {
        let enc = |s: &str| utf8_percent_encode(s, USERINFO).to_string();
        let creds = match self.credentials() {
            Some((u, p)) if self.password.is_some() => format!("{}:{}@", enc(u), enc(p)),
            Some((u, _)) => format!("{}@", enc(u)),
            None => String::new(),
        };
        format!("{}://{creds}{}", self.scheme.as_str(), self.authority())
    }
}

/// `host:port`, with brackets around an IPv6 address.
///
/// # Example
///
/// ```
/// use kforward_relay::proxy_url::host_port;
/// assert_eq!(host_port("fd00::1", 6443), "[fd00::1]:6443");
/// assert_eq!(host_port("api.example", 6443), "api.example:6443");
/// ```
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `text` with the password of a `scheme://user:password@host` URL replaced by `***`, for
/// error messages about URLs that may not parse.
///
/// # Example
///
/// ```
/// use kforward_relay::proxy_url::redact;
/// assert_eq!(redact("http://bob:s3cret@proxy:3128"), "http://bob:***@proxy:3128");
/// assert_eq!(redact("proxy:3128"), "proxy:3128");
/// ```
pub fn redact(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[start..];
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &text[..start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ProxyUrl {
        ProxyUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_password_without_a_user_name_is_kept() {
        // Found by the relay_proxy_url fuzz target: the password was dropped, so the
        // URL written back with its credentials parsed to another URL and no
        // Proxy-Authorization was sent.
        let u = p("http://:s%40cret@proxy:3128");
        assert_eq!(u.credentials(), Some(("", "s@cret")));
        assert_eq!(u.basic_auth().as_deref(), Some("Basic OnNAY3JldA=="));
        assert_eq!(p(&u.to_url_with_credentials()), u);
        assert_eq!(p("http://@proxy:3128").credentials(), None);
    }

    #[test]
    fn default_ports_and_scheme_follow_go() {
        assert_eq!(p("http://proxy").port(), 80);
        assert_eq!(p("https://proxy").port(), 443);
        assert_eq!(p("socks5://proxy").port(), 1080);
        assert_eq!(p("socks5h://proxy").port(), 1080);
        let bare = p("proxy.corp:3128");
        assert_eq!((bare.scheme(), bare.port()), (ProxyScheme::Http, 3128));
        assert_eq!(p("HTTP://Proxy:1").scheme(), ProxyScheme::Http);
    }

    #[test]
    fn ipv6_hosts_lose_and_regain_their_brackets() {
        let v6 = p("http://[fd00::1]:3128");
        assert_eq!(v6.host(), "fd00::1");
        assert_eq!(v6.authority(), "[fd00::1]:3128");
        assert_eq!(v6.to_string(), "http://[fd00::1]:3128");
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_displayed() {
        let u = p("socks5://us%3Aer:pa%40ss%3Aw@127.0.0.1:1080");
        assert_eq!(u.credentials(), Some(("us:er", "pa@ss:w")));
        assert_eq!(u.to_string(), "socks5://us%3Aer@127.0.0.1:1080");
        assert!(!format!("{u:?}").contains("pa"), "{u:?}");
        assert_eq!(p("http://only@p:1").credentials(), Some(("only", "")));
        assert_eq!(p("http://p:1").basic_auth(), None);
        let back = p(&u.to_url_with_credentials());
        assert_eq!(back, u, "{}", u.to_url_with_credentials());
    }

    #[test]
    fn unusable_urls_say_why_without_the_password() {
        let e = ProxyUrl::parse("ftp://bob:s3cret@proxy:21").expect_err("ftp");
        assert!(e.to_string().contains("\"ftp\""), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = ProxyUrl::parse("http://bob:s3cret@").expect_err("no host");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(ProxyUrl::parse("http://[::1").is_err());
    }
}
