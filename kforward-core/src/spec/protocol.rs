//! The transport protocol of a forward: TCP or UDP.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SpecError;

/// The transport protocol a forward carries.
///
/// Written in lowercase (`"tcp"`, `"udp"`) and read case-insensitively, so kftray files with
/// `"TCP"` load unchanged. UDP goes through the in-cluster relay, for every workload type.
///
/// # Example
///
/// ```
/// use kforward_core::spec::Protocol;
///
/// assert_eq!("TCP".parse::<Protocol>()?, Protocol::Tcp);
/// assert_eq!(Protocol::default(), Protocol::Tcp);
/// assert_eq!(Protocol::Udp.to_string(), "udp");
/// assert_eq!(serde_json::to_string(&Protocol::Udp)?, r#""udp""#);
/// assert_eq!(serde_json::from_str::<Protocol>(r#""Udp""#)?, Protocol::Udp);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// A byte stream (the default).
    #[default]
    Tcp,
    /// Datagrams, carried through the relay.
    Udp,
}

impl Protocol {
    /// The lowercase name, as written in config files.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::Protocol;
    ///
    /// assert_eq!(Protocol::Tcp.as_str(), "tcp");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Protocol::Udp)
        } else {
            Err(SpecError::UnknownProtocol {
                value: s.to_owned(),
            })
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively() {
        for (text, want) in [
            ("tcp", Protocol::Tcp),
            ("TCP", Protocol::Tcp),
            (" Tcp ", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("UDP", Protocol::Udp),
        ] {
            assert_eq!(text.parse::<Protocol>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_other_protocols_naming_the_choices() {
        let err = "sctp".parse::<Protocol>().expect_err("sctp");
        let text = err.to_string();
        assert!(text.contains("\"sctp\"") && text.contains("\"tcp\"") && text.contains("\"udp\""));
        assert!(serde_json::from_str::<Protocol>("\"http\"").is_err());
        assert!(serde_json::from_str::<Protocol>("1").is_err());
    }

    #[test]
    fn serde_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp] {
            let json = serde_json::to_string(&p).expect("serialize");
            assert_eq!(serde_json::from_str::<Protocol>(&json).expect("parse"), p);
        }
    }
}
