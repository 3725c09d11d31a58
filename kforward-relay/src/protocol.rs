//! The relay's wire formats, sans I/O: the per-connection handshake and UDP datagram framing.
//!
//! Every connection to the relay starts with one [`Request`] from the client and one
//! [`Response`] from the relay. After an `ok` response the stream carries the destination's
//! bytes (TCP), the same in frames that mark the end of each side's writes (framed TCP, see
//! [`frame_header`] and [`Unframer`]), or length-prefixed datagrams (UDP, see
//! [`encode_datagram`]). All integers are big-endian. See `docs/relay-protocol.md` for the
//! layout.
//!
//! Decoders take whatever bytes have arrived and return `Ok(None)` while more are needed,
//! or the value and the number of bytes it used.

/// The 4 bytes every request starts with.
pub const MAGIC: &[u8; 4] = b"KFR1";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The largest request a relay accepts: token, host and client address stay far below
/// this, and a cap keeps a bad client from making the relay buffer without end.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The largest datagram that can be framed (the length prefix is a u16).
pub const MAX_DATAGRAM: usize = u16::MAX as usize;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The request does not start with [`MAGIC`].
    #[error("not a kforward relay request (bad magic bytes)")]
    BadMagic,
    /// A version this relay does not speak.
    #[error("relay protocol version {0} is not supported (this side speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// A protocol byte other than 0 (tcp), 1 (udp) or 2 (framed tcp).
    #[error("unknown transport protocol {0} (expected 0 for tcp, 1 for udp or 2 for framed tcp)")]
    UnknownTransport(u8),
    /// Bytes after the end frame of a framed TCP stream.
    #[error("{0} bytes came after the end of the data")]
    DataAfterEnd(usize),
    /// A status byte this side does not know.
    #[error("unknown relay status {0}")]
    UnknownStatus(u8),
    /// A text field that is not UTF-8.
    #[error("the {0} field is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A field longer than its u16 length prefix allows, or a request above [`MAX_REQUEST`].
    #[error("the {field} is too long ({len} bytes, at most {max})")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// An empty host or a port 0.
    #[error("invalid destination {0:?}")]
    InvalidDestination(String),
}

/// The transport the client wants to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP connection; the stream then carries its bytes.
    Tcp,
    /// A UDP socket; the stream then carries length-prefixed datagrams.
    Udp,
    /// A TCP connection whose bytes cross the stream in frames, both ways, ended by an
    /// empty frame: the end of a side's writes reaches the other side, which a
    /// port-forward does not pass into a pod (the container runtime closes the pod's
    /// connection instead, and `v4.channel.k8s.io` has no half-close at all).
    TcpFramed,
}

impl Transport {
    fn byte(self) -> u8 {
        match self {
            Transport::Tcp => 0,
            Transport::Udp => 1,
            Transport::TcpFramed => 2,
        }
    }

    /// `"tcp"` (framed or not) or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp | Transport::TcpFramed => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// What a client asks the relay for: where to connect, and the token proving it may.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Request, Transport};
/// let r = Request::new("t0ken", Transport::Udp, "dns.demo.svc.cluster.local", 53)
///     .with_client_addr("127.0.0.1:50000");
/// assert_eq!(r.port, 53);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The relay's shared secret.
    pub token: String,
    /// TCP or UDP.
    pub transport: Transport,
    /// A host name (resolved inside the cluster) or an IP address.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The local client's address, for the relay's logs only.
    pub client_addr: String,
}

impl Request {
    /// A request with no client address.
    pub fn new(token: &str, transport: Transport, host: &str, port: u16) -> Self {
        Request {
            token: token.to_owned(),
            transport,
            host: host.to_owned(),
            port,
            client_addr: String::new(),
        }
    }

    /// Sets the informational client address.
    #[must_use]
    pub fn with_client_addr(mut self, addr: &str) -> Self {
        self.client_addr = addr.to_owned();
        self
    }
}

/// The relay's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Connected (TCP) or ready (UDP); the stream now carries data.
    Ok,
    /// The host name could not be resolved inside the cluster.
    NameNotResolved,
    /// The destination refused the connection.
    Refused,
    /// The destination did not answer in time.
    TimedOut,
    /// The token was wrong.
    NotAllowed,
    /// The request was malformed or for something the relay does not do.
    BadRequest,
}

impl Status {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NameNotResolved => 1,
            Status::Refused => 2,
            Status::TimedOut => 3,
            Status::NotAllowed => 4,
            Status::BadRequest => 5,
        }
    }

    /// The status of a byte.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::UnknownStatus`].
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0 => Status::Ok,
            1 => Status::NameNotResolved,
            2 => Status::Refused,
            3 => Status::TimedOut,
            4 => Status::NotAllowed,
            5 => Status::BadRequest,
            other => return Err(ProtocolError::UnknownStatus(other)),
        })
    }
}

/// The relay's answer: a status and a human-readable message (empty when ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// What happened.
    pub status: Status,
    /// Details, such as the OS error.
    pub message: String,
}

impl Response {
    /// A response.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Response {
            status,
            message: message.into(),
        }
    }
}

fn put_field(out: &mut Vec<u8>, field: &'static str, bytes: &[u8]) -> Result<(), ProtocolError> {
    let len = u16::try_from(bytes.len()).map_err(|_| ProtocolError::TooLong {
        field,
        len: bytes.len(),
        max: u16::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Encodes a request.
///
/// # Errors
///
/// [`ProtocolError::TooLong`] when a field passes its u16 length or the whole request
/// passes [`MAX_REQUEST`]; [`ProtocolError::InvalidDestination`] for an empty host or port 0.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Request, Transport, encode_request};
/// let wire = encode_request(&Request::new("t", Transport::Tcp, "h", 80))?;
/// assert_eq!(&wire[..5], b"KFR1\x01");
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
pub fn encode_request(req: &Request) -> Result<Vec<u8>, ProtocolError> {
    if req.host.is_empty() || req.port == 0 {
        return Err(ProtocolError::InvalidDestination(format!(
            "{}:{}",
            req.host, req.port
        )));
    }
    let mut out = Vec::with_capacity(16 + req.token.len() + req.host.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_field(&mut out, "token", req.token.as_bytes())?;
    out.push(req.transport.byte());
    put_field(&mut out, "host", req.host.as_bytes())?;
    out.extend_from_slice(&req.port.to_be_bytes());
    put_field(&mut out, "client address", req.client_addr.as_bytes())?;
    if out.len() > MAX_REQUEST {
        return Err(ProtocolError::TooLong {
            field: "request",
            len: out.len(),
            max: MAX_REQUEST,
        });
    }
    Ok(out)
}

/// A cursor over received bytes; `None` means more bytes are needed.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

fn text(bytes: &[u8], field: &'static str) -> Result<String, ProtocolError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ProtocolError::InvalidUtf8(field))
}

/// Decodes a request from the start of `buf`.
///
/// # Errors
///
/// [`ProtocolError`] as soon as the bytes cannot be a valid request (bad magic or version,
/// unknown transport, invalid UTF-8, a request above [`MAX_REQUEST`], empty host or port 0).
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Request, Transport, decode_request, encode_request};
/// let wire = encode_request(&Request::new("t", Transport::Udp, "h", 53))?;
/// assert_eq!(decode_request(&wire[..3])?, None);
/// assert!(decode_request(&wire)?.is_some());
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
    let magic_len = buf.len().min(MAGIC.len());
    if buf[..magic_len] != MAGIC[..magic_len] {
        return Err(ProtocolError::BadMagic);
    }
    let mut r = Reader { buf, pos: 0 };
    let result = (|| -> Option<Result<(Request, usize), ProtocolError>> {
        r.take(MAGIC.len())?;
        let version = r.u8()?;
        if version != VERSION {
            return Some(Err(ProtocolError::UnsupportedVersion(version)));
        }
        let token = r.field()?;
        let transport = match r.u8()? {
            0 => Transport::Tcp,
            1 => Transport::Udp,
            2 => Transport::TcpFramed,
            other => return Some(Err(ProtocolError::UnknownTransport(other))),
        };
        let host = r.field()?;
        let port = r.u16()?;
        let client = r.field()?;
        Some((|| {
            let req = Request {
                token: text(token, "token")?,
                transport,
                host: text(host, "host")?,
                port,
                client_addr: text(client, "client address")?,
            };
            if req.host.is_empty() || req.port == 0 {
                return Err(ProtocolError::InvalidDestination(format!(
                    "{}:{}",
                    req.host, req.port
                )));
            }
            // Whole or not, a request above the limit is refused: else whether the relay
            // took one would depend on how the reads cut it (an incomplete one is refused
            // once MAX_REQUEST bytes have come), and encode_request refuses it.
            if r.pos > MAX_REQUEST {
                return Err(ProtocolError::TooLong {
                    field: "request",
                    len: r.pos,
                    max: MAX_REQUEST,
                });
            }
            Ok((req, r.pos))
        })())
    })();
    match result {
        Some(r) => r.map(Some),
        None if buf.len() >= MAX_REQUEST => Err(ProtocolError::TooLong {
            field: "request",
            len: buf.len(),
            max: MAX_REQUEST,
        }),
        None => Ok(None),
    }
}

/// Encodes a response; a message longer than 65535 bytes is cut (at a character boundary).
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Response, Status, encode_response};
/// assert_eq!(encode_response(&Response::new(Status::Ok, "")), [0, 0, 0]);
/// ```
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut msg = resp.message.as_str();
    if msg.len() > MAX_DATAGRAM {
        let mut end = MAX_DATAGRAM;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg = &msg[..end];
    }
    let mut out = Vec::with_capacity(3 + msg.len());
    out.push(resp.status.byte());
    // Cannot fail: the message was cut to fit.
    let _ = put_field(&mut out, "message", msg.as_bytes());
    out
}

/// Decodes a response from the start of `buf`.
///
/// # Errors
///
/// [`ProtocolError::UnknownStatus`] or [`ProtocolError::InvalidUtf8`].
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Response, Status, decode_response, encode_response};
/// let wire = encode_response(&Response::new(Status::Refused, "connection refused"));
/// let (resp, used) = decode_response(&wire)?.expect("complete");
/// assert_eq!((resp.status, used), (Status::Refused, wire.len()));
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
pub fn decode_response(buf: &[u8]) -> Result<Option<(Response, usize)>, ProtocolError> {
    let mut r = Reader { buf, pos: 0 };
    let Some(status) = r.u8() else {
        return Ok(None);
    };
    let status = Status::from_byte(status)?;
    let Some(message) = r.field() else {
        return Ok(None);
    };
    let message = text(message, "message")?;
    Ok(Some((Response { status, message }, r.pos)))
}

/// Appends one datagram, with its u16 length prefix, to `out`.
///
/// # Errors
///
/// [`ProtocolError::TooLong`] for a datagram above [`MAX_DATAGRAM`] bytes.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::encode_datagram;
/// let mut out = Vec::new();
/// encode_datagram(b"hi", &mut out)?;
/// assert_eq!(out, [0, 2, b'h', b'i']);
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
pub fn encode_datagram(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    put_field(out, "datagram", datagram)
}

/// Decodes one framed datagram from the start of `buf`: the datagram and the bytes used.
///
/// # Errors
///
/// None today (every length is valid); the `Result` keeps the shape of the other decoders.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::decode_datagram;
/// assert_eq!(decode_datagram(&[0, 2, b'h'])?, None);
/// assert_eq!(decode_datagram(&[0, 2, b'h', b'i', 9])?, Some((&b"hi"[..], 4)));
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
pub fn decode_datagram(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let mut r = Reader { buf, pos: 0 };
    Ok(r.field().map(|d| (d, r.pos)))
}

/// The length of a framed TCP stream's frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// The header of a framed TCP frame of `len` bytes of data: a u32 length. An empty frame
/// (`len` 0) ends the sender's writes; nothing follows it that way.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::frame_header;
/// assert_eq!(frame_header(258), [0, 0, 1, 2]);
/// assert_eq!(frame_header(0), [0; 4]); // the end of the writes
/// ```
pub fn frame_header(len: u32) -> [u8; FRAME_HEADER_LEN] {
    len.to_be_bytes()
}

/// What [`Unframer::next`] found at the start of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `skip` bytes of frame headers, then `len` bytes of data (at least 1).
    Data {
        /// Header bytes to skip.
        skip: usize,
        /// Data bytes after them.
        len: usize,
    },
    /// `skip` bytes of frame headers, the last of them ending the end frame: the sender's
    /// writes are over.
    End {
        /// Header bytes to skip.
        skip: usize,
    },
    /// `skip` bytes (all of them) were frame headers or parts of one: more are needed.
    More {
        /// Header bytes to skip.
        skip: usize,
    },
}

/// Reads a framed TCP stream's frames from bytes however the reads cut them, without
/// copying the data: each [`next`](Unframer::next) says which of the bytes given are
/// headers and which are data.
///
/// # Example
///
/// ```
/// use kforward_relay::protocol::{Piece, Unframer, frame_header};
/// let mut wire = frame_header(2).to_vec();
/// wire.extend_from_slice(b"hi");
/// wire.extend_from_slice(&frame_header(0));
/// let mut u = Unframer::default();
/// assert_eq!(u.next(&wire[..3], usize::MAX)?, Piece::More { skip: 3 });
/// assert_eq!(u.next(&wire[3..], usize::MAX)?, Piece::Data { skip: 1, len: 2 });
/// assert_eq!(u.next(&wire[6..], usize::MAX)?, Piece::End { skip: 4 });
/// assert!(u.ended());
/// # Ok::<(), kforward_relay::protocol::ProtocolError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Unframer {
    /// The header being read, and how many of its bytes have come.
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Data bytes of the current frame still to come.
    left: u32,
    ended: bool,
}

impl Unframer {
    /// What the start of `input` holds, taking at most `max` data bytes (`max` > 0). The
    /// caller skips `skip` bytes and takes exactly the `len` data bytes that follow, then
    /// calls again with the rest.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::DataAfterEnd`] for bytes after the end frame.
    pub fn next(&mut self, input: &[u8], max: usize) -> Result<Piece, ProtocolError> {
        if self.ended {
            return match input.len() {
                0 => Ok(Piece::End { skip: 0 }),
                n => Err(ProtocolError::DataAfterEnd(n)),
            };
        }
        let mut skip = 0;
        loop {
            if self.left > 0 {
                let len = (self.left as usize).min(input.len() - skip).min(max.max(1));
                if len == 0 {
                    return Ok(Piece::More { skip });
                }
                // `len` is at most `left`, a u32.
                self.left -= len as u32;
                return Ok(Piece::Data { skip, len });
            }
            while self.have < FRAME_HEADER_LEN {
                let Some(&b) = input.get(skip) else {
                    return Ok(Piece::More { skip });
                };
                self.header[self.have] = b;
                self.have += 1;
                skip += 1;
            }
            self.have = 0;
            self.left = u32::from_be_bytes(self.header);
            if self.left == 0 {
                self.ended = true;
                return Ok(Piece::End { skip });
            }
        }
    }

    /// Whether the end frame has come.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request::new("s3cret", Transport::Udp, "db.internal", 5432).with_client_addr("127.0.0.1:1")
    }

    #[test]
    fn request_round_trips_and_reports_the_bytes_used() {
        let req = sample();
        let mut wire = encode_request(&req).expect("encodes");
        let len = wire.len();
        wire.extend_from_slice(b"trailing data");
        assert_eq!(decode_request(&wire), Ok(Some((req, len))));
    }

    #[test]
    fn request_layout_is_as_documented() {
        let wire =
            encode_request(&Request::new("t", Transport::Tcp, "h", 0x1234)).expect("encodes");
        assert_eq!(
            wire,
            [
                b'K', b'F', b'R', b'1', 1, 0, 1, b't', 0, 0, 1, b'h', 0x12, 0x34, 0, 0
            ]
        );
    }

    #[test]
    fn every_prefix_of_a_request_needs_more_bytes() {
        let wire = encode_request(&sample()).expect("encodes");
        for end in 0..wire.len() {
            assert_eq!(
                decode_request(&wire[..end]),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn bad_requests_are_refused_early() {
        assert_eq!(decode_request(b"GET "), Err(ProtocolError::BadMagic));
        assert_eq!(decode_request(b"KX"), Err(ProtocolError::BadMagic));
        assert_eq!(
            decode_request(b"KFR1\x02"),
            Err(ProtocolError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode_request(b"KFR1\x01\x00\x00\x07"),
            Err(ProtocolError::UnknownTransport(7))
        );
        let bad_utf8 = b"KFR1\x01\x00\x00\x00\x00\x01\xff\x00\x50\x00\x00";
        assert_eq!(
            decode_request(bad_utf8),
            Err(ProtocolError::InvalidUtf8("host"))
        );
        let port0 = b"KFR1\x01\x00\x00\x00\x00\x01h\x00\x00\x00\x00";
        assert!(matches!(
            decode_request(port0),
            Err(ProtocolError::InvalidDestination(_))
        ));
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut wire = b"KFR1\x01\xff\xff".to_vec();
        wire.resize(MAX_REQUEST, b'a');
        assert!(matches!(
            decode_request(&wire),
            Err(ProtocolError::TooLong {
                field: "request",
                ..
            })
        ));
        let long = "x".repeat(70_000);
        assert!(encode_request(&Request::new(&long, Transport::Tcp, "h", 1)).is_err());
        assert!(encode_request(&Request::new("t", Transport::Tcp, "", 1)).is_err());
    }

    /// Found by the `relay_request` fuzz target's property (every request decoded encodes
    /// back to its bytes): a complete request above `MAX_REQUEST` was taken when it came in
    /// one buffer, refused when cut by the reads, and could not be encoded.
    #[test]
    fn a_whole_request_above_the_limit_is_refused() {
        let mut wire = MAGIC.to_vec();
        wire.push(VERSION);
        wire.extend_from_slice(&0u16.to_be_bytes());
        wire.push(0);
        let host = "h".repeat(MAX_REQUEST);
        wire.extend_from_slice(&(host.len() as u16).to_be_bytes());
        wire.extend_from_slice(host.as_bytes());
        wire.extend_from_slice(&80u16.to_be_bytes());
        wire.extend_from_slice(&0u16.to_be_bytes());
        assert!(matches!(
            decode_request(&wire),
            Err(ProtocolError::TooLong { field: "request", len, max: MAX_REQUEST }) if len == wire.len()
        ));
        let req = Request::new("", Transport::Tcp, &host, 80);
        assert!(matches!(
            encode_request(&req),
            Err(ProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn responses_round_trip_with_every_status() {
        for b in 0..=5u8 {
            let status = Status::from_byte(b).expect("known");
            assert_eq!(status.byte(), b);
            let resp = Response::new(status, "why");
            let wire = encode_response(&resp);
            assert_eq!(decode_response(&wire), Ok(Some((resp, wire.len()))));
            assert_eq!(decode_response(&wire[..wire.len() - 1]), Ok(None));
        }
        assert_eq!(decode_response(&[]), Ok(None));
        assert_eq!(
            decode_response(&[6, 0, 0]),
            Err(ProtocolError::UnknownStatus(6))
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let resp = Response::new(Status::BadRequest, "é".repeat(40_000));
        let wire = encode_response(&resp);
        let (back, _) = decode_response(&wire).expect("valid").expect("complete");
        assert!(back.message.len() <= MAX_DATAGRAM);
    }

    /// Three frames (one of 70,000 bytes), then the end, cut at every offset and given in
    /// pieces of every size from 1 to 9 bytes, with `max` 3: the same data comes out, and
    /// the end only once the last byte of the end frame is in.
    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let frames: [&[u8]; 3] = [b"a", &[7u8; 70_000], b"xyz"];
        let mut wire = Vec::new();
        for f in frames {
            wire.extend_from_slice(&frame_header(f.len() as u32));
            wire.extend_from_slice(f);
        }
        wire.extend_from_slice(&frame_header(0));
        let want: Vec<u8> = frames.concat();
        for piece in 1..=9 {
            let mut u = Unframer::default();
            let mut got = Vec::new();
            let mut ended = false;
            for chunk in wire.chunks(piece) {
                let mut at = 0;
                loop {
                    match u.next(&chunk[at..], 3).expect("valid") {
                        Piece::Data { skip, len } => {
                            assert!((1..=3).contains(&len));
                            got.extend_from_slice(&chunk[at + skip..at + skip + len]);
                            at += skip + len;
                        }
                        Piece::End { skip } => {
                            assert_eq!(at + skip, chunk.len(), "the end is the last byte");
                            ended = true;
                            break;
                        }
                        Piece::More { skip } => {
                            assert_eq!(at + skip, chunk.len());
                            break;
                        }
                    }
                }
            }
            assert!(ended, "pieces of {piece}");
            assert_eq!(got, want, "pieces of {piece}");
            assert_eq!(u.next(b"", 3), Ok(Piece::End { skip: 0 }));
            assert_eq!(u.next(b"zz", 3), Err(ProtocolError::DataAfterEnd(2)));
        }
    }

    #[test]
    fn the_framed_transport_round_trips_and_reads_as_tcp() {
        let req = Request::new("t", Transport::TcpFramed, "h", 80);
        let wire = encode_request(&req).expect("encodes");
        assert_eq!(wire[8], 2);
        assert_eq!(decode_request(&wire), Ok(Some((req, wire.len()))));
        assert_eq!(Transport::TcpFramed.as_str(), "tcp");
    }

    #[test]
    fn datagrams_frame_back_to_back() {
        let mut out = Vec::new();
        for d in [&b""[..], b"one", &[7u8; MAX_DATAGRAM]] {
            encode_datagram(d, &mut out).expect("fits");
        }
        assert!(encode_datagram(&vec![0; MAX_DATAGRAM + 1], &mut out).is_err());
        let mut rest = &out[..];
        let mut seen = Vec::new();
        while let Some((d, used)) = decode_datagram(rest).expect("valid") {
            seen.push(d.len());
            rest = &rest[used..];
        }
        assert_eq!(seen, [0, 3, MAX_DATAGRAM]);
        assert!(rest.is_empty());
    }
}
