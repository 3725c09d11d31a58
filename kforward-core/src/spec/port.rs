//! Port mappings as kubectl writes them (`8080:80`, `80`, `:http`): a local port and a remote port number or name.

use std::fmt;
use std::str::FromStr;

use super::SpecError;
use super::name::check_port_name;

/// The remote side of a [`PortMapping`]: a port number, or the name of a container port
/// (or of a service port) resolved when the target is.
///
/// # Errors
///
/// [`RemotePort::parse`] returns [`SpecError::InvalidPort`] for 0, numbers above 65535 and
/// names that break the IANA service name rules (1 to 15 lowercase letters, digits and '-',
/// at least one letter).
///
/// # Example
///
/// ```
/// use kforward_core::spec::RemotePort;
///
/// assert_eq!(RemotePort::parse("80")?, RemotePort::Number(80));
/// assert_eq!(RemotePort::parse("http")?, RemotePort::Name("http".into()));
/// assert_eq!(RemotePort::Name("grpc".into()).to_string(), "grpc");
/// assert!(RemotePort::parse("0").is_err());
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RemotePort {
    /// A port number, 1 to 65535.
    Number(u16),
    /// A port name (an IANA service name such as `http` or `grpc-web`).
    Name(String),
}

impl RemotePort {
    /// Parses a port number (1-65535) or a port name.
    ///
    /// # Errors
    ///
    /// [`SpecError::InvalidPort`] naming the value and the rule it breaks.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::RemotePort;
    ///
    /// assert_eq!(RemotePort::parse("5432")?.number(), Some(5432));
    /// let err = RemotePort::parse("70000").unwrap_err();
    /// assert!(err.to_string().contains("1-65535"));
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let invalid = |problem: String| SpecError::InvalidPort {
            value: text.to_owned(),
            problem,
        };
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u16>() {
                Ok(0) | Err(_) => Err(invalid("is not a port (1-65535)".to_owned())),
                Ok(port) => Ok(RemotePort::Number(port)),
            };
        }
        check_port_name(text).map_err(|p| {
            invalid(format!(
                "is not a port number (1-65535) or port name: it {p}"
            ))
        })?;
        Ok(RemotePort::Name(text.to_owned()))
    }

    /// The port number, if this is one.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::RemotePort;
    ///
    /// assert_eq!(RemotePort::Number(80).number(), Some(80));
    /// assert_eq!(RemotePort::Name("http".into()).number(), None);
    /// ```
    pub fn number(&self) -> Option<u16> {
        match self {
            RemotePort::Number(port) => Some(*port),
            RemotePort::Name(_) => None,
        }
    }
}

impl fmt::Display for RemotePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemotePort::Number(port) => write!(f, "{port}"),
            RemotePort::Name(name) => f.write_str(name),
        }
    }
}

impl FromStr for RemotePort {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemotePort::parse(s)
    }
}

impl From<u16> for RemotePort {
    fn from(port: u16) -> Self {
        RemotePort::Number(port)
    }
}

/// One forwarded port: a local port to listen on and the remote port it reaches.
///
/// A local port of 0 means "pick a free port" when the listener binds.
/// [`Display`](fmt::Display) writes `LOCAL:REMOTE`, which parses back.
///
/// # Example
///
/// ```
/// use kforward_core::spec::{PortMapping, RemotePort};
///
/// let mapping = PortMapping::parse_kubectl("8080:http")?;
/// assert_eq!(mapping, PortMapping::new(8080, RemotePort::Name("http".into())));
/// assert_eq!(PortMapping::parse_kubectl(":80")?.to_string(), "0:80");
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The local port; 0 picks a free one.
    pub local: u16,
    /// The port on the target.
    pub remote: RemotePort,
}

impl PortMapping {
    /// A mapping from `local` to `remote`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::PortMapping;
    ///
    /// let mapping = PortMapping::new(0, 5432);
    /// assert!(mapping.picks_free_port());
    /// ```
    pub fn new(local: u16, remote: impl Into<RemotePort>) -> Self {
        PortMapping {
            local,
            remote: remote.into(),
        }
    }

    /// Parses a port argument of `kubectl port-forward`:
    ///
    /// - `LOCAL:REMOTE`, e.g. `8080:80` or `8080:http`;
    /// - `REMOTE`, a number: the same port locally, e.g. `80`;
    /// - `:REMOTE` or `0:REMOTE`: a free local port.
    ///
    /// REMOTE is a port number or a port name. A name alone (`http`) is refused, as by
    /// kubectl: there is no local port to derive from it, so write `LOCAL:http` or `:http`.
    ///
    /// # Errors
    ///
    /// [`SpecError::InvalidPortMapping`] naming the value, what is wrong and the accepted
    /// forms.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::{PortMapping, RemotePort};
    ///
    /// assert_eq!(PortMapping::parse_kubectl("5432")?, PortMapping::new(5432, 5432));
    /// assert_eq!(PortMapping::parse_kubectl("0:5432")?.local, 0);
    /// let err = PortMapping::parse_kubectl("http").unwrap_err();
    /// assert!(err.to_string().contains(":http"));
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn parse_kubectl(text: &str) -> Result<Self, SpecError> {
        let invalid = |problem: String| SpecError::InvalidPortMapping {
            value: text.to_owned(),
            problem,
        };
        let remote_port = |remote: &str| {
            if remote.is_empty() {
                return Err(invalid("has no remote port after ':'".to_owned()));
            }
            RemotePort::parse(remote).map_err(|e| match e {
                SpecError::InvalidPort { value, problem } => {
                    invalid(format!("remote port {value:?} {problem}"))
                }
                other => invalid(other.to_string()),
            })
        };
        let text_trimmed = text.trim();
        match text_trimmed.split_once(':') {
            Some((_, remote)) if remote.contains(':') => {
                Err(invalid("has more than one ':'".to_owned()))
            }
            Some((local, remote)) => {
                let local = if local.is_empty() {
                    0
                } else if local.bytes().all(|b| b.is_ascii_digit()) {
                    local.parse::<u16>().map_err(|_| {
                        invalid(format!("local port {local:?} is not a port (0-65535)"))
                    })?
                } else {
                    return Err(invalid(format!(
                        "local port {local:?} is not a number; the local side must be a port number (0 picks a free port)"
                    )));
                };
                Ok(PortMapping {
                    local,
                    remote: remote_port(remote)?,
                })
            }
            None if text_trimmed.is_empty() => Err(invalid("is empty".to_owned())),
            None => match remote_port(text_trimmed)? {
                RemotePort::Number(port) => Ok(PortMapping::new(port, port)),
                RemotePort::Name(name) => Err(invalid(format!(
                    "names a remote port but no local port; write LOCAL:{name}, or :{name} to pick a free local port"
                ))),
            },
        }
    }

    /// Whether the local port is 0, to be picked when the listener binds.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::PortMapping;
    ///
    /// assert!(!PortMapping::new(8080, 80).picks_free_port());
    /// ```
    pub fn picks_free_port(&self) -> bool {
        self.local == 0
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.local, self.remote)
    }
}

impl FromStr for PortMapping {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortMapping::parse_kubectl(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PortMapping {
        PortMapping::parse_kubectl(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn problem(text: &str) -> String {
        match PortMapping::parse_kubectl(text) {
            Err(SpecError::InvalidPortMapping { value, problem }) => {
                assert_eq!(value, text);
                problem
            }
            other => panic!("{text}: expected InvalidPortMapping, got {other:?}"),
        }
    }

    #[test]
    fn accepts_every_kubectl_form() {
        let name = |n: &str| RemotePort::Name(n.to_owned());
        for (text, want) in [
            ("8080:80", PortMapping::new(8080, 80)),
            ("80", PortMapping::new(80, 80)),
            (":80", PortMapping::new(0, 80)),
            ("0:80", PortMapping::new(0, 80)),
            ("65535:65535", PortMapping::new(65535, 65535)),
            ("8080:http", PortMapping::new(8080, name("http"))),
            (":grpc-web", PortMapping::new(0, name("grpc-web"))),
            ("0:h2c", PortMapping::new(0, name("h2c"))),
            (" 8080:80 ", PortMapping::new(8080, 80)),
        ] {
            assert_eq!(parse(text), want, "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["8080:80", "0:80", "0:http", "1:65535"] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(text.parse::<PortMapping>(), Ok(parse(text)));
        }
        assert_eq!(parse("80").to_string(), "80:80");
    }

    #[test]
    fn rejects_bad_mappings_saying_why() {
        for (text, needle) in [
            ("", "is empty"),
            ("0", "remote port \"0\" is not a port (1-65535)"),
            ("70000", "remote port \"70000\" is not a port (1-65535)"),
            ("8080:0", "remote port \"0\""),
            ("8080:", "no remote port"),
            (":", "no remote port"),
            ("70000:80", "local port \"70000\" is not a port (0-65535)"),
            ("web:80", "local port \"web\" is not a number"),
            ("-1:80", "local port \"-1\" is not a number"),
            ("1:2:3", "more than one ':'"),
            ("8080:HTTP", "port name"),
            ("8080:http_alt", "'_'"),
            ("8080:abcdefghijklmnop", "15"),
            ("http", "write LOCAL:http, or :http"),
        ] {
            let p = problem(text);
            assert!(p.contains(needle), "{text:?}: {p}");
        }
    }

    #[test]
    fn error_display_lists_the_accepted_forms() {
        let text = PortMapping::parse_kubectl("abc:80")
            .expect_err("bad")
            .to_string();
        assert!(
            text.starts_with("invalid port \"abc:80\": local port \"abc\""),
            "{text}"
        );
        assert!(
            text.contains("LOCAL:REMOTE, REMOTE, :REMOTE or 0:REMOTE"),
            "{text}"
        );
    }

    #[test]
    fn remote_ports() {
        assert_eq!(RemotePort::parse("1"), Ok(RemotePort::Number(1)));
        assert_eq!(RemotePort::parse("65535"), Ok(RemotePort::Number(65535)));
        assert_eq!(
            "dns".parse::<RemotePort>(),
            Ok(RemotePort::Name("dns".into()))
        );
        for bad in [
            "",
            "0",
            "65536",
            "99999999999999999999",
            "-",
            "1a_",
            "UPPER",
            "80-",
        ] {
            assert!(RemotePort::parse(bad).is_err(), "{bad}");
        }
        let err = RemotePort::parse("65536").expect_err("too big");
        assert_eq!(
            err.to_string(),
            "invalid remote port \"65536\": is not a port (1-65535)"
        );
        assert_eq!(RemotePort::from(443), RemotePort::Number(443));
    }
}
