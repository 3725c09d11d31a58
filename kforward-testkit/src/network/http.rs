//! A small hand-written HTTP/1.1 server: request-head parsing, keep-alive, streamed bodies.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted; larger ones get 431 and the connection closes.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 100;
/// Read size and chunk size for streamed bodies: large enough that GiB transfers are not
/// bound by syscalls.
const IO_CHUNK: usize = 64 * 1024;
/// The pattern of `/bytes/N` repeats with this period; a prime, so a repeated or skipped
/// 64 KiB chunk shows up as a mismatch.
const PATTERN_PERIOD: u64 = 251;

/// The byte at `offset` of every `/bytes/N` body served by an `http` pod.
pub fn pattern_byte(offset: u64) -> u8 {
    // The remainder is below 251, so it fits in a byte.
    (offset % PATTERN_PERIOD) as u8
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// The request head is not valid HTTP/1.x.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request head is larger than [`MAX_HEAD`] or has too many headers.
    #[error("request head too large")]
    HeadTooLarge,
    /// The request uses a transfer coding this server does not read.
    #[error("transfer-encoding is not supported")]
    TransferEncoding,
}

/// The request line and headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The request target without the query string.
    pub(crate) path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor_version: u8,
    /// Headers in order, names as sent.
    pub(crate) headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The declared body length (0 without `Content-Length`).
    pub(crate) fn body_length(&self) -> Result<u64, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::TransferEncoding);
        }
        let mut lengths = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let Some((_, first)) = lengths.next() else {
            return Ok(0);
        };
        if lengths.any(|(_, other)| other != first) {
            return Err(HttpError::BadRequest("conflicting content-length headers"));
        }
        first
            .trim()
            .parse()
            .map_err(|_| HttpError::BadRequest("invalid content-length"))
    }

    /// Whether the connection ends after this request.
    pub(crate) fn wants_close(&self) -> bool {
        let tokens = self.header("connection").unwrap_or("");
        let has = |token: &str| {
            tokens
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.minor_version == 0 {
            !has("keep-alive")
        } else {
            has("close")
        }
    }
}

/// Parses a request head from the start of `buf`. Returns `None` while the head is
/// incomplete, or the head and the number of bytes it used.
pub(crate) fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| HttpError::BadRequest("request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::BadRequest("invalid method"));
    }
    if !target.starts_with('/') {
        return Err(HttpError::BadRequest(
            "request target must be an absolute path",
        ));
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(HttpError::BadRequest("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::BadRequest("header line without a colon"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpError::BadRequest("invalid header name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    if minor_version == 1 && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        return Err(HttpError::BadRequest(
            "HTTP/1.1 request without a Host header",
        ));
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let head = RequestHead {
        method: method.to_owned(),
        path,
        minor_version,
        headers,
    };
    Ok(Some((head, end + 4)))
}

/// The body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A fixed body.
    Fixed(Vec<u8>),
    /// `n` bytes of [`pattern_byte`], streamed.
    Pattern(u64),
    /// The request body, streamed back.
    Echo,
}

/// A response chosen by a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// Extra headers (`Content-Length` and `Connection` are added by the server).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The body.
    pub(crate) body: Body,
}

impl Response {
    /// A `text/plain` response.
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
            body: Body::Fixed(body.into().into_bytes()),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

/// Encodes a status line and headers for a body of `length` bytes.
pub(crate) fn encode_head(response: &Response, length: u64, close: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\n"));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Serves HTTP/1.1 requests on `stream` until the client closes, asks to close, or sends
/// something this server cannot read. `route` picks the response for each request.
pub(crate) async fn serve_http<R>(mut stream: TcpStream, peer: SocketAddr, route: R)
where
    R: Fn(&RequestHead, SocketAddr) -> Response,
{
    if let Err(error) = serve(&mut stream, peer, route).await {
        tracing::debug!(%peer, %error, "http connection ended with an error");
        return;
    }
    let _ = stream.shutdown().await;
}

async fn serve<S, R>(stream: &mut S, peer: SocketAddr, route: R) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Fn(&RequestHead, SocketAddr) -> Response,
{
    let mut buf = BytesMut::with_capacity(IO_CHUNK);
    loop {
        let parsed = loop {
            match parse_request_head(&buf) {
                Ok(Some(parsed)) => break Ok(parsed),
                Ok(None) => {
                    if fill(stream, &mut buf).await? == 0 {
                        // A clean end between requests; a partial head is dropped.
                        return Ok(());
                    }
                }
                Err(error) => break Err(error),
            }
        };
        let (head, used) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => return reject(stream, &error).await,
        };
        buf.advance(used);
        let length = match head.body_length() {
            Ok(length) => length,
            Err(error) => return reject(stream, &error).await,
        };
        let close = head.wants_close();
        let response = route(&head, peer);
        match &response.body {
            Body::Fixed(bytes) => {
                consume_body(stream, &mut buf, length, false).await?;
                let mut out = encode_head(&response, bytes.len() as u64, close);
                out.extend_from_slice(bytes);
                stream.write_all(&out).await?;
            }
            Body::Pattern(n) => {
                consume_body(stream, &mut buf, length, false).await?;
                stream.write_all(&encode_head(&response, *n, close)).await?;
                write_pattern(stream, *n).await?;
            }
            Body::Echo => {
                stream
                    .write_all(&encode_head(&response, length, close))
                    .await?;
                consume_body(stream, &mut buf, length, true).await?;
            }
        }
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// Answers a request that cannot be read with an error status, then ends the connection.
async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, error: &HttpError) -> std::io::Result<()> {
    let status = match error {
        HttpError::BadRequest(_) => 400,
        HttpError::HeadTooLarge => 431,
        HttpError::TransferEncoding => 501,
    };
    let response = Response::text(status, format!("{error}\n"));
    let Body::Fixed(body) = &response.body else {
        return Ok(());
    };
    let mut out = encode_head(&response, body.len() as u64, true);
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

/// Reads more of the connection into `buf`, with room for a full chunk (after `split_to`
/// the buffer may have almost no spare capacity left, which would shrink reads to a few bytes).
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(IO_CHUNK);
    stream.read_buf(buf).await
}

/// Reads the `length` bytes of the request body, from `buf` first, then from `stream`,
/// writing them back when `echo` is set and dropping them otherwise.
async fn consume_body<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    mut length: u64,
    echo: bool,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while length > 0 {
        if buf.is_empty() && fill(stream, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let take = buf.len().min(usize::try_from(length).unwrap_or(usize::MAX));
        let chunk = buf.split_to(take);
        if echo {
            stream.write_all(&chunk).await?;
        }
        length -= take as u64;
    }
    Ok(())
}

/// Streams `n` bytes of the pattern from offset 0.
async fn write_pattern<S: AsyncWrite + Unpin>(stream: &mut S, n: u64) -> std::io::Result<()> {
    // One period longer than a chunk, so any chunk can start at any phase of the pattern.
    let period = PATTERN_PERIOD as usize;
    let block: Vec<u8> = (0..(IO_CHUNK + period) as u64).map(pattern_byte).collect();
    let mut offset = 0u64;
    while offset < n {
        let len = usize::try_from(n - offset)
            .unwrap_or(usize::MAX)
            .min(IO_CHUNK);
        let phase = (offset % PATTERN_PERIOD) as usize;
        stream.write_all(&block[phase..phase + len]).await?;
        offset += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_request_head(text.as_bytes())
    }

    #[test]
    fn parses_request_line_headers_and_query() {
        let raw = "GET /bytes/10?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let (head, used) = parse(raw).expect("valid").expect("complete");
        assert_eq!(used, raw.len() - 3);
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/bytes/10");
        assert_eq!(head.header("content-length"), Some("3"));
        assert_eq!(head.body_length(), Ok(3));
        assert!(!head.wants_close());
    }

    #[test]
    fn incomplete_head_asks_for_more() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    }

    #[test]
    fn rejects_malformed_heads() {
        assert!(parse("GET /\r\n\r\n").is_err());
        assert!(parse("GET / HTTP/2\r\nHost: a\r\n\r\n").is_err());
        assert!(parse("GET / HTTP/1.1\r\n\r\n").is_err(), "missing Host");
        assert!(parse("GET / HTTP/1.1\r\nHost a\r\n\r\n").is_err());
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&huge), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn connection_semantics() {
        let close = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(close.expect("valid").expect("complete").0.wants_close());
        let old = parse("GET / HTTP/1.0\r\n\r\n");
        assert!(old.expect("valid").expect("complete").0.wants_close());
        let kept = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!kept.expect("valid").expect("complete").0.wants_close());
    }

    #[test]
    fn chunked_and_conflicting_lengths_are_refused() {
        let chunked = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        let head = chunked.expect("valid").expect("complete").0;
        assert_eq!(head.body_length(), Err(HttpError::TransferEncoding));
        let twice =
            parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(
            twice
                .expect("valid")
                .expect("complete")
                .0
                .body_length()
                .is_err()
        );
    }

    #[tokio::test]
    async fn pattern_is_continuous_across_chunks() {
        let n = (IO_CHUNK * 2 + 17) as u64;
        let mut out = Vec::new();
        write_pattern(&mut out, n).await.expect("write to vec");
        assert_eq!(out.len() as u64, n);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, b)| *b == pattern_byte(i as u64))
        );
    }
}
