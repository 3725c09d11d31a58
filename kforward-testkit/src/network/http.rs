//! The HTTP/1.1 server of `http` pods and external hosts, on hyper: a router picks a
//! [`Reply`] per request, and bodies stream (the `/bytes/N` pattern, echoed request bodies).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Size of each frame of a `/bytes/N` body: large enough that GiB transfers are not bound
/// by per-frame work; hyper gathers several into one vectored write.
const PATTERN_CHUNK: usize = 256 * 1024;
/// The pattern of `/bytes/N` repeats with this period; a prime, so a repeated or skipped
/// chunk shows up as a mismatch.
const PATTERN_PERIOD: u64 = 251;
/// Most bytes hyper buffers for writing before it waits for the socket (its default is
/// 8 KiB + 400 KiB): room for several pattern frames per vectored write.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Largest request head accepted; a larger one gets 431 and the connection closes.
const MAX_HEAD: usize = 16 * 1024;

/// The byte at `offset` of every `/bytes/N` body served by an `http` pod.
pub fn pattern_byte(offset: u64) -> u8 {
    // The remainder is below 251, so it fits in a byte.
    (offset % PATTERN_PERIOD) as u8
}

/// One chunk of the pattern plus one period, so that a chunk starting at any phase of the
/// pattern is a slice of it (shared by every body, never copied).
fn pattern_block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..(PATTERN_CHUNK as u64 + PATTERN_PERIOD))
            .map(pattern_byte)
            .collect()
    })
}

/// What a router answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyBody {
    /// A fixed body.
    Fixed(Bytes),
    /// `n` bytes of [`pattern_byte`], streamed.
    Pattern(u64),
    /// The request body, streamed back as it arrives.
    Echo,
}

/// A response chosen by a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: StatusCode,
    /// Extra headers (`Content-Length` and `Date` are added by the server).
    pub(crate) headers: Vec<(header::HeaderName, String)>,
    /// The body.
    pub(crate) body: ReplyBody,
}

impl Reply {
    /// A `text/plain` reply.
    pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned())],
            body: ReplyBody::Fixed(Bytes::from(body.into())),
        }
    }
}

/// A response body: fixed bytes, the pattern, or the request's own body.
enum Body {
    Fixed(Option<Bytes>),
    Pattern { offset: u64, len: u64 },
    Echo(Incoming),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Pattern { offset, len } => {
                if *offset >= *len {
                    return Poll::Ready(None);
                }
                let take = usize::try_from(*len - *offset)
                    .unwrap_or(usize::MAX)
                    .min(PATTERN_CHUNK);
                let phase = (*offset % PATTERN_PERIOD) as usize;
                *offset += take as u64;
                Poll::Ready(Some(Ok(Frame::data(
                    pattern_block().slice(phase..phase + take),
                ))))
            }
            Body::Echo(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Fixed(bytes) => bytes.is_none(),
            Body::Pattern { offset, len } => offset >= len,
            Body::Echo(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Pattern { offset, len } => SizeHint::with_exact(len - offset),
            Body::Echo(incoming) => incoming.size_hint(),
        }
    }
}

fn respond(request: Request<Incoming>, reply: Reply) -> Response<Body> {
    let body = match reply.body {
        ReplyBody::Fixed(bytes) => Body::Fixed(Some(bytes)),
        ReplyBody::Pattern(len) => Body::Pattern { offset: 0, len },
        ReplyBody::Echo => Body::Echo(request.into_body()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Serves HTTP/1.1 (and 1.0) requests on `stream` until the client closes or asks to close;
/// `route` picks the reply for each request from its method and path.
///
/// The pods' server used to be hand-written; hyper (the API server's own HTTP stack) now
/// parses requests, keeps connections alive and frames bodies, and the pattern is served as
/// slices of one shared block, so a GiB costs no copies in this process.
pub(crate) async fn serve_http<R>(stream: TcpStream, peer: SocketAddr, route: R)
where
    R: Fn(&http::Method, &str, SocketAddr) -> Reply + Send + Sync + 'static,
{
    let route = std::sync::Arc::new(route);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let reply = route(request.method(), request.uri().path(), peer);
        std::future::ready(Ok::<_, Infallible>(respond(request, reply)))
    });
    let served = hyper::server::conn::http1::Builder::new()
        .max_buf_size(WRITE_BUFFER)
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "http connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn pattern_is_continuous_across_frames() {
        let n = (PATTERN_CHUNK * 2 + 17) as u64;
        let body = Body::Pattern { offset: 0, len: n };
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(n));
        let out = body.collect().await.expect("collect").to_bytes();
        assert_eq!(out.len() as u64, n);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, b)| *b == pattern_byte(i as u64))
        );
    }
}
