//! The SOCKS wire formats, sans I/O: SOCKS5 (RFC 1928) greetings, requests, replies and UDP
//! headers, its username/password sub-negotiation (RFC 1929), and SOCKS4 and 4a requests
//! and replies.
//!
//! Written here rather than taken from a crate: the proxy needs the parsed request before it
//! answers (its reply code depends on where the destination routes), and the crates seen
//! (fast-socks5, socks5-server) own the socket and the dialing, which here is the router's.
//! Decoders take the bytes received so far and return `Ok(None)` while more are needed, or
//! the value and how many bytes it used; they never panic on any input (see the tests).
//!
//! Byte layouts come from RFC 1928 (sections 3 to 7), RFC 1929 (section 2) and the SOCKS4
//! and SOCKS4A protocol notes (Ying-Da Lee, "SOCKS: A protocol for TCP proxy across
//! firewalls" and "SOCKS 4A: A Simple Extension to SOCKS 4 Protocol").

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first byte of every SOCKS5 message from the client.
pub const SOCKS5: u8 = 5;
/// The first byte of a SOCKS4 request.
pub const SOCKS4: u8 = 4;
/// Method: no authentication (RFC 1928 section 3).
pub const METHOD_NONE: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const METHOD_PASSWORD: u8 = 0x02;
/// Method: no acceptable method; the client must close.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
/// The version byte of the RFC 1929 sub-negotiation.
pub const PASSWORD_VERSION: u8 = 1;
/// The longest host name a request may carry (SOCKS5's length is one byte; SOCKS4a's is
/// held to the same bound).
const MAX_NAME: usize = 255;

/// Why bytes are not a valid SOCKS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// A version byte other than the one expected.
    #[error("not a SOCKS{expected} message (version byte {found:#04x})")]
    Version {
        /// The version expected.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// A greeting offering no method.
    #[error("the SOCKS5 greeting offers no authentication method")]
    NoMethods,
    /// A reserved byte that is not zero, or a command this protocol does not define.
    #[error("unknown SOCKS command {0:#04x}")]
    Command(u8),
    /// An address type other than IPv4, a domain name or IPv6.
    #[error("unknown SOCKS5 address type {0:#04x}")]
    AddressType(u8),
    /// An empty or non-UTF-8 host name, or one too long.
    #[error("invalid host name in the SOCKS request")]
    Name,
    /// A user id or host name without its terminating NUL within the allowed length.
    #[error("SOCKS4 field longer than {MAX_NAME} bytes")]
    TooLong,
}

/// The commands of SOCKS5 and SOCKS4 requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Connect to the destination (0x01).
    Connect,
    /// Accept one connection from the destination (0x02).
    Bind,
    /// Relay UDP datagrams (0x03, SOCKS5 only).
    UdpAssociate,
}

/// A destination host: an address or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A domain name, as sent.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A host and a port.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::{Address, Host};
/// let a = Address { host: Host::Name("web.demo".into()), port: 80 };
/// assert_eq!(a.to_string(), "web.demo:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A SOCKS5 greeting: the methods the client offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The methods, in the client's order.
    pub methods: Vec<u8>,
}

/// RFC 1929 credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, as sent.
    pub username: Vec<u8>,
    /// The password, as sent.
    pub password: Vec<u8>,
}

/// A SOCKS5 or SOCKS4 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// The destination (for UDP ASSOCIATE, where the client will send from).
    pub address: Address,
    /// The SOCKS4 user id (empty for SOCKS5).
    pub user_id: Vec<u8>,
}

/// A SOCKS5 reply code (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// 0x00: succeeded.
    Succeeded = 0,
    /// 0x01: general SOCKS server failure.
    GeneralFailure = 1,
    /// 0x02: connection not allowed by ruleset.
    NotAllowed = 2,
    /// 0x03: network unreachable.
    NetworkUnreachable = 3,
    /// 0x04: host unreachable.
    HostUnreachable = 4,
    /// 0x05: connection refused.
    ConnectionRefused = 5,
    /// 0x06: TTL expired (used for timeouts).
    TtlExpired = 6,
    /// 0x07: command not supported.
    CommandNotSupported = 7,
    /// 0x08: address type not supported.
    AddressTypeNotSupported = 8,
}

/// Reads `n` bytes at `at`, or `None` when they have not all arrived.
fn take(buf: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    buf.get(at..at.checked_add(n)?)
}

fn check_version(buf: &[u8], expected: u8) -> Result<(), SocksError> {
    match buf.first() {
        Some(&v) if v != expected => Err(SocksError::Version { expected, found: v }),
        _ => Ok(()),
    }
}

/// Decodes a SOCKS5 greeting: `VER NMETHODS METHODS...`.
///
/// # Errors
///
/// [`SocksError::Version`] or [`SocksError::NoMethods`].
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::parse_greeting;
/// assert_eq!(parse_greeting(&[5, 2, 0])?, None);
/// assert_eq!(parse_greeting(&[5, 2, 0, 2])?.unwrap().0.methods, vec![0, 2]);
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, SocksError> {
    check_version(buf, SOCKS5)?;
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    Ok(take(buf, 2, usize::from(n)).map(|m| {
        (
            Greeting {
                methods: m.to_vec(),
            },
            2 + usize::from(n),
        )
    }))
}

/// Decodes an RFC 1929 request: `VER ULEN UNAME PLEN PASSWD`.
///
/// # Errors
///
/// [`SocksError::Version`] when the first byte is not 1.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::parse_credentials;
/// let (c, used) = parse_credentials(b"\x01\x02me\x03pwd")?.unwrap();
/// assert_eq!((c.username.as_slice(), c.password.as_slice(), used), (&b"me"[..], &b"pwd"[..], 8));
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn parse_credentials(buf: &[u8]) -> Result<Option<(Credentials, usize)>, SocksError> {
    check_version(buf, PASSWORD_VERSION)?;
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let ulen = usize::from(ulen);
    let Some(user) = take(buf, 2, ulen) else {
        return Ok(None);
    };
    let Some(&plen) = buf.get(2 + ulen) else {
        return Ok(None);
    };
    let plen = usize::from(plen);
    let Some(pass) = take(buf, 3 + ulen, plen) else {
        return Ok(None);
    };
    Ok(Some((
        Credentials {
            username: user.to_vec(),
            password: pass.to_vec(),
        },
        3 + ulen + plen,
    )))
}

fn name(bytes: &[u8]) -> Result<String, SocksError> {
    let s = std::str::from_utf8(bytes).map_err(|_| SocksError::Name)?;
    if s.is_empty() || s.len() > MAX_NAME || s.bytes().any(|b| b.is_ascii_control()) {
        return Err(SocksError::Name);
    }
    Ok(s.to_string())
}

/// Decodes `ATYP DST.ADDR DST.PORT` at `at`: the address and the offset after it.
fn parse_address(buf: &[u8], at: usize) -> Result<Option<(Address, usize)>, SocksError> {
    let Some(&atyp) = buf.get(at) else {
        return Ok(None);
    };
    let (host, end) = match atyp {
        1 => match take(buf, at + 1, 4) {
            Some(b) => (
                Host::Ip(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                at + 5,
            ),
            None => return Ok(None),
        },
        4 => match take(buf, at + 1, 16) {
            Some(b) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                (Host::Ip(IpAddr::V6(Ipv6Addr::from(a))), at + 17)
            }
            None => return Ok(None),
        },
        3 => {
            let Some(&len) = buf.get(at + 1) else {
                return Ok(None);
            };
            let len = usize::from(len);
            match take(buf, at + 2, len) {
                Some(b) => (Host::Name(name(b)?), at + 2 + len),
                None => return Ok(None),
            }
        }
        other => return Err(SocksError::AddressType(other)),
    };
    let Some(p) = take(buf, end, 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([p[0], p[1]]);
    Ok(Some((Address { host, port }, end + 2)))
}

/// Decodes a SOCKS5 request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
///
/// # Errors
///
/// [`SocksError::Version`], [`SocksError::Command`] for an unknown command,
/// [`SocksError::AddressType`], [`SocksError::Name`].
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::{parse_request5, Command, Host};
/// let (r, used) = parse_request5(b"\x05\x01\x00\x03\x03web\x00\x50")?.unwrap();
/// assert_eq!((r.command, r.address.host, r.address.port, used), (Command::Connect, Host::Name("web".into()), 80, 10));
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn parse_request5(buf: &[u8]) -> Result<Option<(Request, usize)>, SocksError> {
    check_version(buf, SOCKS5)?;
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    let command = match cmd {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        other => return Err(SocksError::Command(other)),
    };
    if buf.len() < 3 {
        return Ok(None);
    }
    Ok(parse_address(buf, 3)?.map(|(address, used)| {
        (
            Request {
                command,
                address,
                user_id: Vec::new(),
            },
            used,
        )
    }))
}

/// The bytes up to the next NUL from `at` (without it) and the offset after the NUL.
fn nul_terminated(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, SocksError> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == 0) {
        Some(i) if i > MAX_NAME => Err(SocksError::TooLong),
        Some(i) => Ok(Some((&rest[..i], at + i + 1))),
        None if rest.len() > MAX_NAME => Err(SocksError::TooLong),
        None => Ok(None),
    }
}

/// Decodes a SOCKS4 or SOCKS4a request: `VN CD DSTPORT DSTIP USERID NUL`, and for 4a (an
/// address `0.0.0.x` with `x` not 0) a host name and NUL after it.
///
/// # Errors
///
/// [`SocksError::Version`], [`SocksError::Command`], [`SocksError::TooLong`],
/// [`SocksError::Name`].
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::{parse_request4, Host};
/// let (r, _) = parse_request4(b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00web.demo\x00")?.unwrap();
/// assert_eq!(r.address.host, Host::Name("web.demo".into()));
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn parse_request4(buf: &[u8]) -> Result<Option<(Request, usize)>, SocksError> {
    check_version(buf, SOCKS4)?;
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    let command = match cmd {
        1 => Command::Connect,
        2 => Command::Bind,
        other => return Err(SocksError::Command(other)),
    };
    let Some(head) = take(buf, 2, 6) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([head[0], head[1]]);
    let ip = Ipv4Addr::new(head[2], head[3], head[4], head[5]);
    let Some((user, after_user)) = nul_terminated(buf, 8)? else {
        return Ok(None);
    };
    let user_id = user.to_vec();
    let o = ip.octets();
    let (host, used) = if o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0 {
        match nul_terminated(buf, after_user)? {
            Some((h, used)) => (Host::Name(name(h)?), used),
            None => return Ok(None),
        }
    } else {
        (Host::Ip(IpAddr::V4(ip)), after_user)
    };
    Ok(Some((
        Request {
            command,
            address: Address { host, port },
            user_id,
        },
        used,
    )))
}

/// Appends `ATYP ADDR PORT` for a bound address.
fn put_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Encodes a SOCKS5 reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::{encode_reply5, Reply};
/// let r = encode_reply5(Reply::ConnectionRefused, "0.0.0.0:0".parse().unwrap());
/// assert_eq!(r, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
/// ```
pub fn encode_reply5(reply: Reply, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![SOCKS5, reply as u8, 0];
    put_socket_addr(&mut out, bound);
    out
}

/// Encodes a SOCKS4 reply: `VN=0 CD DSTPORT DSTIP`, CD 90 (granted) or 91 (rejected or
/// failed).
///
/// # Example
///
/// ```
/// assert_eq!(kforward_core::forward_proxy::socks::encode_reply4(false), [0, 91, 0, 0, 0, 0, 0, 0]);
/// ```
pub fn encode_reply4(granted: bool) -> [u8; 8] {
    [0, if granted { 90 } else { 91 }, 0, 0, 0, 0, 0, 0]
}

/// A SOCKS5 UDP datagram's header (RFC 1928 section 7): `RSV RSV FRAG ATYP DST.ADDR
/// DST.PORT`, then the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// The fragment number (0 for a whole datagram).
    pub frag: u8,
    /// Where the datagram goes (from the client) or came from (to the client).
    pub address: Address,
}

/// Decodes a UDP datagram from the client: its header and the offset of its data.
///
/// # Errors
///
/// [`SocksError::AddressType`], [`SocksError::Name`], or [`SocksError::TooLong`] for a
/// datagram shorter than its header.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::parse_udp;
/// let (h, at) = parse_udp(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35hello")?;
/// assert_eq!((h.address.port, at), (53, 10));
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn parse_udp(datagram: &[u8]) -> Result<(UdpHeader, usize), SocksError> {
    let Some(&frag) = datagram.get(2) else {
        return Err(SocksError::TooLong);
    };
    match parse_address(datagram, 3)? {
        Some((address, at)) => Ok((UdpHeader { frag, address }, at)),
        None => Err(SocksError::TooLong),
    }
}

/// Encodes a UDP datagram to the client: the header naming `from`, then `data`.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::socks::{encode_udp, parse_udp, Address, Host};
/// let from = Address { host: Host::Name("dns.demo".into()), port: 53 };
/// let d = encode_udp(&from, b"hi");
/// let (h, at) = parse_udp(&d)?;
/// assert_eq!((h.address, &d[at..]), (from, &b"hi"[..]));
/// # Ok::<(), kforward_core::forward_proxy::socks::SocksError>(())
/// ```
pub fn encode_udp(from: &Address, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0];
    match &from.host {
        Host::Ip(ip) => put_socket_addr(&mut out, SocketAddr::new(*ip, from.port)),
        Host::Name(n) => {
            let n = &n.as_bytes()[..n.len().min(MAX_NAME)];
            out.push(3);
            out.push(n.len() as u8);
            out.extend_from_slice(n);
            out.extend_from_slice(&from.port.to_be_bytes());
        }
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_prefix_needs_more<T: fmt::Debug>(
        whole: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
    ) {
        for n in 0..whole.len() {
            assert!(
                matches!(parse(&whole[..n]), Ok(None)),
                "prefix of {n} bytes of {whole:?}"
            );
        }
        let (_, used) = parse(whole).expect("valid").expect("complete");
        assert_eq!(used, whole.len());
    }

    #[test]
    fn prefixes_need_more_and_wholes_parse() {
        every_prefix_needs_more(&[5, 2, 0, 2], parse_greeting);
        every_prefix_needs_more(b"\x01\x04user\x04pass", parse_credentials);
        every_prefix_needs_more(b"\x05\x01\x00\x01\x0a\x00\x00\x01\x1f\x90", parse_request5);
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        every_prefix_needs_more(&v6, parse_request5);
        every_prefix_needs_more(b"\x05\x03\x00\x03\x03dns\x00\x35", parse_request5);
        every_prefix_needs_more(b"\x04\x01\x00\x50\x0a\x00\x00\x07\x00", parse_request4);
        every_prefix_needs_more(
            b"\x04\x01\x00\x50\x00\x00\x00\x09u\x00web\x00",
            parse_request4,
        );
    }

    #[test]
    fn requests_decode_their_fields() {
        let (r, _) = parse_request5(&v6_request()).expect("ok").expect("whole");
        assert_eq!(r.address.host, Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(r.address.to_string(), "[::1]:443");
        let (r, _) = parse_request4(b"\x04\x02\x01\xbb\x0a\x00\x00\x07bob\x00")
            .expect("ok")
            .expect("whole");
        assert_eq!(r.command, Command::Bind);
        assert_eq!(r.address.to_string(), "10.0.0.7:443");
        assert_eq!(r.user_id, b"bob");
    }

    fn v6_request() -> Vec<u8> {
        let mut v = vec![5, 1, 0, 4];
        v.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v.extend_from_slice(&443u16.to_be_bytes());
        v
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(
            parse_greeting(b"GET"),
            Err(SocksError::Version {
                expected: 5,
                found: b'G'
            })
        );
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
        assert_eq!(parse_request5(&[5, 9, 0, 1]), Err(SocksError::Command(9)));
        assert_eq!(
            parse_request5(&[5, 1, 0, 7, 0]),
            Err(SocksError::AddressType(7))
        );
        assert_eq!(
            parse_request5(&[5, 1, 0, 3, 0, 0, 80]),
            Err(SocksError::Name)
        );
        let long = [vec![4, 1, 0, 80, 1, 2, 3, 4], vec![b'a'; 300]].concat();
        assert_eq!(parse_request4(&long), Err(SocksError::TooLong));
    }

    /// A cheap fuzz: random bytes and mutated valid messages never panic, and whatever
    /// parses says it used no more bytes than it was given.
    #[test]
    fn random_input_never_panics() {
        use rand::Rng;
        let mut rng = rand::rng();
        let seeds: Vec<Vec<u8>> = vec![
            vec![5, 2, 0, 2],
            b"\x01\x04user\x04pass".to_vec(),
            b"\x05\x01\x00\x03\x03dns\x00\x35".to_vec(),
            v6_request(),
            b"\x04\x01\x00\x50\x00\x00\x00\x09u\x00web\x00".to_vec(),
            b"\x00\x00\x00\x03\x03dns\x00\x35data".to_vec(),
        ];
        for _ in 0..20_000 {
            let mut b = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(0..4) {
                if b.is_empty() || rng.random_bool(0.3) {
                    b.push(rng.random());
                } else {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
            if rng.random_bool(0.2) {
                b = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            }
            let n = b.len();
            let used = [
                parse_greeting(&b).ok().flatten().map(|(_, u)| u),
                parse_credentials(&b).ok().flatten().map(|(_, u)| u),
                parse_request5(&b).ok().flatten().map(|(_, u)| u),
                parse_request4(&b).ok().flatten().map(|(_, u)| u),
                parse_udp(&b).ok().map(|(_, u)| u),
            ];
            assert!(used.iter().flatten().all(|&u| u <= n), "{b:?}");
        }
    }

    #[test]
    fn replies_encode() {
        assert_eq!(
            encode_reply5(Reply::Succeeded, "[::1]:1080".parse().expect("addr")).len(),
            22
        );
        assert_eq!(encode_reply4(true)[1], 90);
    }
}
