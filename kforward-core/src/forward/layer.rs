//! Layers between a front end and the dialer, for TCP: the PROXY header a client sends
//! (read and removed), and the one written toward the target so that it sees the client.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::proxy_protocol::{self, Accept, Addresses, InvalidHeader, Parsed, Version};

/// The longest PROXY header: v2's 16 bytes and a 16-bit length of addresses and TLVs.
const MAX_HEADER: usize = 16 + u16::MAX as usize;
/// Bytes read at once while looking for a header (a v1 header is at most 107).
const READ: usize = 512;

/// The PROXY protocol settings of a forward.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Layers {
    /// The header to write toward the target, if any.
    pub(crate) send: Option<Version>,
    /// What to do with a header from the client, if anything.
    pub(crate) accept: Option<Accept>,
    /// How long a client may take to send its header.
    pub(crate) timeout: Duration,
}

/// A connection once its client's header, if any, has been read.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The client: from its header when that names one, else the socket's peer.
    pub(crate) client: SocketAddr,
    /// The address the client connected to, by the same rule.
    pub(crate) local: SocketAddr,
    /// What the client sent after its header, read while looking for it.
    pub(crate) early: Bytes,
}

/// Why a connection was refused by [`Layers::accept`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Strict mode, and the client sent something else.
    #[error("the client sent no PROXY protocol header (--accept-proxy-protocol strict)")]
    NoHeader,
    /// The header is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidHeader),
    /// Strict mode, and the header did not come in time.
    #[error("no complete PROXY protocol header within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading the PROXY protocol header failed: {0}")]
    Read(#[from] io::Error),
}

impl Layers {
    /// Reads the client's header when the forward accepts one: strict mode refuses a
    /// connection without a valid header; optional mode passes other bytes on as they are
    /// (and, after the timeout, a client that has sent nothing).
    ///
    /// # Errors
    ///
    /// [`Refused`] when the connection must be closed.
    pub(crate) async fn accept(
        &self,
        sock: &mut TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Accepted, Refused> {
        let plain = |early: BytesMut| Accepted {
            client: peer,
            local,
            early: early.freeze(),
        };
        let Some(mode) = self.accept else {
            return Ok(plain(BytesMut::new()));
        };
        let strict = mode == Accept::Strict;
        let mut buf = BytesMut::with_capacity(READ);
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match proxy_protocol::parse(&buf)? {
                Parsed::Header(h) => {
                    let early = buf.split_off(h.len).freeze();
                    let (client, local) = h
                        .addresses
                        .map_or((peer, local), |a| (a.source, a.destination));
                    return Ok(Accepted {
                        client,
                        local,
                        early,
                    });
                }
                Parsed::NotAHeader if strict => return Err(Refused::NoHeader),
                Parsed::NotAHeader => return Ok(plain(buf)),
                Parsed::Incomplete => {}
            }
            if buf.len() >= MAX_HEADER {
                return Err(Refused::NoHeader);
            }
            buf.reserve(READ);
            match tokio::time::timeout_at(deadline, sock.read_buf(&mut buf)).await {
                Ok(Ok(0)) if strict => return Err(Refused::NoHeader),
                // The client ended before a whole header: what it sent is its data.
                Ok(Ok(0)) => return Ok(plain(buf)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) if strict => return Err(Refused::Timeout(self.timeout)),
                Err(_) => return Ok(plain(buf)),
            }
        }
    }

    /// What to send toward the target before the client's bytes: the header naming the
    /// client (when the forward sends one), then what the client sent early.
    pub(crate) fn prelude(&self, a: &Accepted) -> Vec<u8> {
        let mut out = match self.send {
            Some(v) => proxy_protocol::encode(
                v,
                Some(Addresses {
                    source: a.client,
                    destination: a.local,
                }),
            ),
            None => Vec::new(),
        };
        out.extend_from_slice(&a.early);
        out
    }
}
