//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), sans I/O: the header kforward writes
//! toward a target so that it sees the local client's address, and the header it reads
//! from a client that sends one.
//!
//! Facts from HAProxy's `doc/proxy-protocol.txt`: a header is the first bytes of a TCP
//! stream, before any of the client's data. Version 1 is one text line of at most 107
//! bytes, `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN\r\n` when the sender
//! does not know the addresses; version 2 is binary: a 12-byte signature, a version and
//! command byte (`LOCAL` for connections the proxy makes on its own, such as health
//! checks, `PROXY` for relayed ones), a family and protocol byte, a 16-bit length, then the
//! addresses. A receiver of `LOCAL` or `UNKNOWN` uses the connection's own addresses.
//! Both addresses of a header are of one family.
//!
//! Parsing and encoding are the [`ppp`] crate's (Apache-2.0, maintained since 2019); this
//! module only maps its results onto what a forward needs, so that a fuzz target can call
//! [`parse`] with any bytes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ppp::{HeaderResult, PartialResult, v1, v2};

/// The PROXY protocol version a forward writes toward its target (`proxy_protocol` in a
/// config file, `--proxy-protocol` on the command line).
///
/// # Example
///
/// ```
/// use kforward_core::proxy_protocol::Version;
/// assert_eq!("v2".parse::<Version>()?, Version::V2);
/// assert_eq!(Version::V1.to_string(), "v1");
/// # Ok::<(), kforward_core::proxy_protocol::UnknownSetting>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text header, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// What a forward does with a PROXY header its local clients send
/// (`--accept-proxy-protocol`).
///
/// # Example
///
/// ```
/// use kforward_core::proxy_protocol::Accept;
/// assert_eq!("strict".parse::<Accept>()?, Accept::Strict);
/// # Ok::<(), kforward_core::proxy_protocol::UnknownSetting>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accept {
    /// Every connection must start with a valid header; one that does not is closed (as
    /// Envoy's proxy protocol listener filter does).
    Strict,
    /// A header is read and removed when there is one; connections without one are carried
    /// as they are (kgateway's `allowRequestsWithoutProxyProtocol`).
    Optional,
}

/// A setting that is not one of the accepted words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected {expected})")]
pub struct UnknownSetting {
    /// Which setting.
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// The accepted values.
    pub expected: &'static str,
}

impl FromStr for Version {
    type Err = UnknownSetting;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            _ => Err(UnknownSetting {
                what: "PROXY protocol version",
                value: s.to_string(),
                expected: "\"v1\" or \"v2\"",
            }),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

impl FromStr for Accept {
    type Err = UnknownSetting;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Accept::Strict),
            "optional" => Ok(Accept::Optional),
            _ => Err(UnknownSetting {
                what: "accept-proxy-protocol mode",
                value: s.to_string(),
                expected: "\"strict\" or \"optional\"",
            }),
        }
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accept::Strict => "strict",
            Accept::Optional => "optional",
        })
    }
}

/// The addresses a header carries: the client (source) and the address it connected to
/// (destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The original client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// A header read from the start of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The addresses it names; `None` for `LOCAL` (v2), `UNKNOWN` (v1) and address
    /// families other than IPv4 and IPv6: the connection's own addresses apply.
    pub addresses: Option<Addresses>,
    /// How many bytes of the stream it took.
    pub len: usize,
}

/// What the first bytes of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header.
    Header(Header),
    /// The bytes so far could still become a header: read more.
    Incomplete,
    /// The stream does not start with a PROXY header.
    NotAHeader,
}

/// A stream that starts like a PROXY header but is not a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PROXY protocol header: {message}")]
pub struct InvalidHeader {
    /// What is wrong, as the parser said it.
    pub message: String,
}

/// The v1 signature (`PROXY` and a space).
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (proxy-protocol.txt 2.1).
const V1_MAX: usize = 107;

/// Reads a PROXY header (v1 or v2) at the start of `buf`: all the bytes received so far.
///
/// # Errors
///
/// [`InvalidHeader`] when `buf` starts with a header's signature but the rest is not a
/// valid header.
///
/// # Example
///
/// ```
/// use kforward_core::proxy_protocol::{Parsed, parse};
///
/// let Parsed::Header(h) = parse(b"PROXY TCP4 10.0.0.7 127.0.0.1 50000 8080\r\nGET /")? else {
///     panic!("a header")
/// };
/// let a = h.addresses.expect("addresses");
/// assert_eq!(a.source.to_string(), "10.0.0.7:50000");
/// assert_eq!(h.len, 42);
/// assert_eq!(parse(b"PROX")?, Parsed::Incomplete);
/// assert_eq!(parse(b"GET / HTTP/1.1\r\n")?, Parsed::NotAHeader);
/// # Ok::<(), kforward_core::proxy_protocol::InvalidHeader>(())
/// ```
pub fn parse(buf: &[u8]) -> Result<Parsed, InvalidHeader> {
    let signature = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    let v1 = signature(V1_PREFIX);
    let v2 = signature(v2::PROTOCOL_PREFIX);
    if !v1 && !v2 {
        return Ok(Parsed::NotAHeader);
    }
    if buf.len() < V1_PREFIX.len() {
        return Ok(Parsed::Incomplete);
    }
    if v1 {
        // A v1 header is one line, read whole before it is parsed: a line cut at a space
        // can look invalid to the parser (an empty port).
        let line = &buf[..buf.len().min(V1_MAX)];
        if !line.contains(&b'\n') {
            if buf.len() < V1_MAX {
                return Ok(Parsed::Incomplete);
            }
            return Err(InvalidHeader {
                message: format!("no end of line in the first {V1_MAX} bytes of a v1 header"),
            });
        }
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(Parsed::Incomplete);
    }
    let invalid = |e: &dyn std::error::Error| InvalidHeader {
        message: e.to_string(),
    };
    let header = match result {
        HeaderResult::V1(Ok(h)) => Header {
            len: h.header.len(),
            addresses: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(Addresses {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                }),
                v1::Addresses::Tcp6(a) => Some(Addresses {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                }),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Header {
            len: h.len(),
            addresses: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some(Addresses {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                }),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some(Addresses {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                }),
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => return Err(invalid(&e)),
        HeaderResult::V2(Err(e)) => return Err(invalid(&e)),
    };
    Ok(Parsed::Header(header))
}

/// A v4-mapped IPv6 address as IPv4, so that a dual-stack socket's addresses keep their
/// family in the header.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// Both addresses in one family: IPv4 when both are, else IPv6 (an IPv4 address becomes
/// v4-mapped), as a header names a single family.
fn one_family(a: Addresses) -> (SocketAddr, SocketAddr) {
    let (s, d) = (canonical(a.source), canonical(a.destination));
    let v6 = |x: SocketAddr| match x.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), x.port()),
        IpAddr::V6(_) => x,
    };
    if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        (v6(s), v6(d))
    }
}

/// The header of `version` naming `addresses`, or, for a connection kforward makes on its
/// own (a health probe), `None`: v2 `LOCAL`, v1 `UNKNOWN`.
///
/// # Example
///
/// ```
/// use kforward_core::proxy_protocol::{Addresses, Version, encode};
///
/// let a = Addresses { source: "10.0.0.7:50000".parse()?, destination: "127.0.0.1:8080".parse()? };
/// assert_eq!(encode(Version::V1, Some(a)), b"PROXY TCP4 10.0.0.7 127.0.0.1 50000 8080\r\n");
/// assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
/// assert_eq!(encode(Version::V2, None).len(), 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(version: Version, addresses: Option<Addresses>) -> Vec<u8> {
    let pair = addresses.map(one_family);
    match version {
        Version::V1 => {
            let a = pair.map_or(v1::Addresses::Unknown, v1::Addresses::from);
            a.to_string().into_bytes()
        }
        Version::V2 => {
            let built = match pair {
                Some(p) => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    p,
                )
                .build(),
                None => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Local,
                    v2::Protocol::Unspecified,
                    v2::Addresses::Unspecified,
                )
                .build(),
            };
            // The builder writes into a Vec, which cannot fail; keep a valid LOCAL header
            // rather than panic if that ever changes.
            built.unwrap_or_else(|_| {
                let mut h = v2::PROTOCOL_PREFIX.to_vec();
                h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
                h
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(s: &str, d: &str) -> Addresses {
        Addresses {
            source: s.parse().expect("source"),
            destination: d.parse().expect("destination"),
        }
    }

    #[test]
    fn what_is_encoded_parses_back_with_its_length() {
        for version in [Version::V1, Version::V2] {
            for a in [
                addrs("10.1.2.3:40000", "127.0.0.1:8080"),
                addrs("[fd00::7]:40000", "[::1]:8080"),
            ] {
                let mut wire = encode(version, Some(a));
                let len = wire.len();
                wire.extend_from_slice(b"\x00\xffpayload");
                let parsed = parse(&wire).expect("valid");
                assert_eq!(
                    parsed,
                    Parsed::Header(Header {
                        addresses: Some(a),
                        len
                    }),
                    "{version}"
                );
            }
            let local = encode(version, None);
            assert_eq!(
                parse(&local).expect("valid"),
                Parsed::Header(Header {
                    addresses: None,
                    len: local.len()
                })
            );
        }
    }

    #[test]
    fn the_v2_local_header_is_the_spec_bytes() {
        // proxy-protocol.txt 2.2: signature, 0x20 (v2, LOCAL), 0x00 (UNSPEC), length 0.
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        expected.extend_from_slice(&[0x20, 0, 0, 0]);
        assert_eq!(encode(Version::V2, None), expected);
    }

    #[test]
    fn mixed_families_become_ipv6_and_mapped_ones_ipv4() {
        let wire = encode(Version::V1, Some(addrs("10.0.0.1:1", "[::1]:2")));
        assert_eq!(wire, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
        let wire = encode(
            Version::V1,
            Some(addrs("[::ffff:10.0.0.1]:1", "[::ffff:127.0.0.1]:2")),
        );
        assert_eq!(wire, b"PROXY TCP4 10.0.0.1 127.0.0.1 1 2\r\n");
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        for version in [Version::V1, Version::V2] {
            let wire = encode(version, Some(addrs("10.1.2.3:40000", "127.0.0.1:8080")));
            for n in 0..wire.len() {
                assert_eq!(
                    parse(&wire[..n]),
                    Ok(Parsed::Incomplete),
                    "{version}, {n} bytes"
                );
            }
        }
    }

    #[test]
    fn other_protocols_and_broken_headers() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::NotAHeader));
        assert_eq!(parse(b"\x16\x03\x01"), Ok(Parsed::NotAHeader));
        assert_eq!(parse(b"PROXYZ"), Ok(Parsed::NotAHeader));
        assert!(parse(b"PROXY TCP4 nowhere 127.0.0.1 1 2\r\n").is_err());
        assert!(parse(b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(parse(&endless).is_err(), "no end of line in 107 bytes");
        let mut bad_v2 = encode(Version::V2, None);
        bad_v2[12] = 0x31; // version 3
        assert!(parse(&bad_v2).is_err());
    }

    #[test]
    fn settings_parse_from_words() {
        assert_eq!("V1".parse::<Version>(), Ok(Version::V1));
        assert_eq!("optional".parse::<Accept>(), Ok(Accept::Optional));
        let e = "v3".parse::<Version>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown PROXY protocol version \"v3\" (expected \"v1\" or \"v2\")"
        );
    }
}
