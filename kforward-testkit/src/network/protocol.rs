//! Transport protocols of ports, and the size limit of what UDP carries.

use std::fmt;

/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`"TCP"`, `"UDP"`); `None` for anything else.
    pub fn from_k8s(name: &str) -> Option<Self> {
        match name {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_k8s(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}
