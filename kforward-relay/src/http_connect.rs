//! An HTTP `CONNECT` tunnel through a proxy (RFC 9110, section 9.3.6): the request, the
//! proxy's answer (sans-I/O), and the handshake over any stream.
//!
//! Used toward the API server (kforward's client stack) and by the relay for its egress.
//! hyper-util's `Tunnel` connector does the same handshake but folds every answer other
//! than 200 and 407 into one error without the status, and an error that cannot tell a 403
//! (the proxy's rules) from a 502 (the proxy cannot reach the destination) cannot say what to
//! check; hence this small one.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy_url::host_port;

/// The longest answer head accepted from a proxy.
pub const MAX_ANSWER: usize = 16 * 1024;

/// The `CONNECT` request for `host:port`, with a `Proxy-Authorization` value when given.
///
/// # Example
///
/// ```
/// let req = kforward_relay::http_connect::request("fd00::1", 6443, None);
/// assert_eq!(req, b"CONNECT [fd00::1]:6443 HTTP/1.1\r\nHost: [fd00::1]:6443\r\n\r\n");
/// ```
pub fn request(host: &str, port: u16, authorization: Option<&str>) -> Vec<u8> {
    let target = host_port(host, port);
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = authorization {
        req.push_str("Proxy-Authorization: ");
        req.push_str(auth);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// The status line of a proxy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code, such as 407.
    pub code: u16,
    /// The reason phrase, such as `Proxy Authentication Required`.
    pub reason: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason.trim())
    }
}

impl Answer {
    /// What a refusal means and what to check, for a user who set the proxy up with
    /// `credentials` (or without).
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_relay::http_connect::Answer;
    /// let a = Answer { code: 407, reason: "Proxy Authentication Required".into() };
    /// assert!(a.explain(false).contains("put USER:PASSWORD"));
    /// ```
    pub fn explain(&self, credentials: bool) -> String {
        match self.code {
            401 | 407 if credentials => format!(
                "the proxy rejected the credentials ({self}): check the user name and password in the proxy URL"
            ),
            407 => format!(
                "the proxy wants credentials ({self}): put USER:PASSWORD@ in front of the proxy's host in its URL"
            ),
            403 => format!(
                "the proxy's rules refuse this destination ({self}): ask its administrators to allow it, or bypass the proxy with NO_PROXY if the destination is reachable without it"
            ),
            // tinyproxy answers a refused upstream with `500 Unable to connect`.
            500 | 502..=504 => format!(
                "the proxy could not reach the destination ({self}): check the host and port, and that the proxy can reach them"
            ),
            _ => format!("the proxy answered CONNECT with {self}"),
        }
    }
}

/// A `CONNECT` that did not open a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Reading from or writing to the proxy failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The proxy closed the connection before answering.
    #[error("the proxy closed the connection without answering CONNECT")]
    Closed,
    /// The answer is not HTTP, or its head is longer than [`MAX_ANSWER`].
    #[error("the proxy's answer to CONNECT is not HTTP ({0})")]
    NotHttp(String),
    /// The proxy answered with something other than 2xx.
    #[error("the proxy answered CONNECT with {0}")]
    Refused(Answer),
}

/// Parses the head of a proxy's answer from `buf`: `None` while incomplete, else the status
/// and the number of bytes the head takes (what follows is the tunnel's first bytes).
///
/// # Errors
///
/// [`ConnectError::NotHttp`] for an answer that is not HTTP or too long;
/// [`ConnectError::Refused`] for any status but 2xx.
///
/// # Example
///
/// ```
/// use kforward_relay::http_connect::{ConnectError, parse_answer};
/// let ok = parse_answer(b"HTTP/1.1 200 Connection established\r\n\r\nhi").unwrap();
/// assert_eq!(ok.map(|(a, used)| (a.code, used)), Some((200, 39)));
/// assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
/// let denied = parse_answer(b"HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
/// assert!(matches!(denied, Err(ConnectError::Refused(a)) if a.code == 403));
/// ```
pub fn parse_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, ConnectError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let answer = Answer {
                code: res.code.unwrap_or(0),
                reason: res.reason.unwrap_or("").to_string(),
            };
            if (200..300).contains(&answer.code) {
                Ok(Some((answer, used)))
            } else {
                Err(ConnectError::Refused(answer))
            }
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_ANSWER => Err(ConnectError::NotHttp(
            format!("no end of the head in {MAX_ANSWER} bytes"),
        )),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(ConnectError::NotHttp(format!(
            "{e}: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        ))),
    }
}

/// Opens a tunnel to `host:port` through the HTTP proxy at the other end of `stream`: sends
/// `CONNECT` and reads the answer. Returns what the proxy sent after the answer's head (the
/// destination's first bytes, usually none), which belongs in front of the tunnel's data.
///
/// # Errors
///
/// [`ConnectError`]: the proxy refused (with its status), closed, or did not speak HTTP.
///
/// # Example
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let (mut client, mut proxy) = tokio::io::duplex(1024);
/// tokio::spawn(async move {
///     let mut buf = [0u8; 256];
///     let _ = proxy.read(&mut buf).await;
///     proxy.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
/// });
/// let early = kforward_relay::http_connect::connect(&mut client, "db.internal", 5432, None).await.unwrap();
/// assert!(early.is_empty());
/// # });
/// ```
pub async fn connect<S>(
    stream: &mut S,
    host: &str,
    port: u16,
    authorization: Option<&str>,
) -> Result<Vec<u8>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(&request(host, port, authorization))
        .await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((_, used)) = parse_answer(&buf)? {
            buf.drain(..used);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_credentials_when_given() {
        let req = request("api.example", 443, Some("Basic YTpi"));
        assert_eq!(
            String::from_utf8(req).expect("text"),
            "CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\nProxy-Authorization: Basic YTpi\r\n\r\n"
        );
    }

    #[test]
    fn answers_are_told_apart_by_status() {
        for (wire, code) in [
            (&b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"[..], 407),
            (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502),
            (b"HTTP/1.0 500 Unable to connect\r\n\r\n", 500),
        ] {
            match parse_answer(wire) {
                Err(ConnectError::Refused(a)) => assert_eq!(a.code, code),
                other => panic!("{code}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_answer(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Err(ConnectError::NotHttp(_))
        ));
        let endless = vec![b'a'; MAX_ANSWER];
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        assert!(matches!(parse_answer(&head), Err(ConnectError::NotHttp(_))));
    }

    #[tokio::test]
    async fn bytes_after_the_answer_are_handed_back() {
        let (mut client, mut proxy) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut b = [0u8; 64];
            while !got.ends_with(b"\r\n\r\n") {
                let n = proxy.read(&mut b).await.expect("read");
                got.extend_from_slice(&b[..n]);
            }
            // The answer split over several writes, with the destination's greeting behind.
            for part in [
                &b"HTTP/1.1 200 Conn"[..],
                b"ection established\r\n",
                b"\r\n220 smtp ready\r\n",
            ] {
                proxy.write_all(part).await.expect("write");
            }
            got
        });
        let mut early = connect(&mut client, "mail", 25, None)
            .await
            .expect("tunnel");
        let head = server.await.expect("server");
        assert!(head.starts_with(b"CONNECT mail:25 HTTP/1.1\r\n"));
        while !early.ends_with(b"\r\n") {
            let mut b = [0u8; 64];
            let n = client.read(&mut b).await.expect("read");
            early.extend_from_slice(&b[..n]);
        }
        assert_eq!(early, b"220 smtp ready\r\n");
    }

    #[tokio::test]
    async fn a_proxy_that_hangs_up_is_reported() {
        let (mut client, proxy) = tokio::io::duplex(256);
        drop(proxy);
        let err = connect(&mut client, "x", 1, None)
            .await
            .expect_err("closed");
        assert!(
            matches!(err, ConnectError::Io(_) | ConnectError::Closed),
            "{err}"
        );
    }
}
