//! Proxy credentials: one user name and password, checked for SOCKS5 (RFC 1929) and HTTP
//! (`Proxy-Authorization: Basic`, RFC 7617).

use std::fmt;

use base64::Engine;

/// The user name and password clients must give.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::ProxyAuth;
/// let a: ProxyAuth = "dev:s3cret".parse()?;
/// assert!(a.check_basic("Basic ZGV2OnMzY3JldA=="));
/// assert!(!a.check_basic("Basic ZGV2Ondyb25n"));
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyAuth {
    username: String,
    password: String,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl std::str::FromStr for ProxyAuth {
    type Err = String;

    /// Parses `USER:PASS` (the password may contain `:`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() && u.len() <= 255 && p.len() <= 255 => {
                Ok(ProxyAuth::new(u, p))
            }
            _ => Err("proxy credentials must be USER:PASS, each 1 to 255 bytes".to_string()),
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ProxyAuth {
    /// Credentials `username` / `password`.
    pub fn new(username: &str, password: &str) -> ProxyAuth {
        ProxyAuth {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether `username` and `password` (as a SOCKS5 client sent them) are these.
    pub fn check(&self, username: &[u8], password: &[u8]) -> bool {
        same(username, self.username.as_bytes()) & same(password, self.password.as_bytes())
    }

    /// Whether a `Proxy-Authorization` value carries these credentials (`Basic`, any case).
    pub fn check_basic(&self, header: &str) -> bool {
        let mut parts = header.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD
            .decode(parts.next().unwrap_or_default().trim())
        else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => self.check(&decoded[..i], &decoded[i + 1..]),
            None => false,
        }
    }
}
