//! One SOCKS5 or SOCKS4/4a client connection: the handshake over [`socks`](super::socks)'s
//! parsers, then the route, the reply, and the bytes both ways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::conn::{Conn, Shared, carry};
use super::socks::{
    self, Command, METHOD_NO_ACCEPTABLE, METHOD_NONE, METHOD_PASSWORD, PASSWORD_VERSION, Reply,
    SocksError,
};
use super::udp;
use crate::forward::Connection;

/// The most handshake bytes kept before giving up on a client (the longest valid message,
/// a SOCKS4a request, is under 530 bytes).
const MAX_HANDSHAKE: usize = 1024;

/// Why a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Socks(#[from] SocksError),
    #[error("the client closed the connection during the handshake")]
    Closed,
    #[error("the handshake is longer than {MAX_HANDSHAKE} bytes")]
    TooLong,
    #[error("wrong proxy credentials")]
    BadCredentials,
    #[error("the client offers no authentication method this proxy accepts")]
    NoMethod,
}

/// Reads until `parse` has a whole message in `buf`; takes the message's bytes out.
async fn read_msg<T>(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
) -> Result<T, HandshakeError> {
    loop {
        if let Some((msg, used)) = parse(buf)? {
            buf.drain(..used);
            return Ok(msg);
        }
        if buf.len() >= MAX_HANDSHAKE {
            return Err(HandshakeError::TooLong);
        }
        let mut chunk = [0u8; 512];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The SOCKS5 negotiation and request; returns the request and any bytes the client sent
/// after it.
async fn negotiate5(
    sock: &mut TcpStream,
    shared: &Shared,
) -> Result<(socks::Request, Vec<u8>), HandshakeError> {
    let mut buf = Vec::new();
    let greeting = read_msg(sock, &mut buf, socks::parse_greeting).await?;
    let offers = |m| greeting.methods.contains(&m);
    // Without credentials configured, a client that only offers username/password gets
    // it, and any credentials pass.
    let method = match &shared.auth {
        Some(_) if offers(METHOD_PASSWORD) => METHOD_PASSWORD,
        Some(_) => METHOD_NO_ACCEPTABLE,
        None if offers(METHOD_NONE) => METHOD_NONE,
        None if offers(METHOD_PASSWORD) => METHOD_PASSWORD,
        None => METHOD_NO_ACCEPTABLE,
    };
    sock.write_all(&[socks::SOCKS5, method]).await?;
    if method == METHOD_NO_ACCEPTABLE {
        return Err(HandshakeError::NoMethod);
    }
    if method == METHOD_PASSWORD {
        let creds = read_msg(sock, &mut buf, socks::parse_credentials).await?;
        let ok = shared
            .auth
            .as_ref()
            .is_none_or(|a| a.check(&creds.username, &creds.password));
        sock.write_all(&[PASSWORD_VERSION, if ok { 0 } else { 1 }])
            .await?;
        if !ok {
            return Err(HandshakeError::BadCredentials);
        }
    }
    let req = match read_msg(sock, &mut buf, socks::parse_request5).await {
        Ok(r) => r,
        Err(HandshakeError::Socks(e)) => {
            let reply = match e {
                SocksError::Command(_) => Some(Reply::CommandNotSupported),
                SocksError::AddressType(_) => Some(Reply::AddressTypeNotSupported),
                _ => None,
            };
            if let Some(r) = reply {
                sock.write_all(&socks::encode_reply5(r, unspecified()))
                    .await?;
            }
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    Ok((req, buf))
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// Serves one SOCKS5 client; returns the error that ended its bytes, if any.
pub(crate) async fn serve5(
    mut sock: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    counted: &Arc<Connection>,
) -> Option<std::io::Error> {
    let handshake =
        tokio::time::timeout(shared.opts.handshake_timeout, negotiate5(&mut sock, shared));
    let (req, early) = match handshake.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "SOCKS5 handshake ended the connection");
            return None;
        }
        Err(_) => {
            debug!(%peer, "SOCKS5 handshake timed out");
            return None;
        }
    };
    match req.command {
        Command::Bind => {
            let reply = socks::encode_reply5(Reply::CommandNotSupported, unspecified());
            sock.write_all(&reply).await.err()
        }
        Command::UdpAssociate => {
            udp::associate(sock, peer, req.address, shared, counted).await;
            None
        }
        Command::Connect => {
            let conn = Conn::new(shared, counted, peer, "socks5", req.address);
            match conn.open().await {
                Ok(upstream) => {
                    let bound = sock.local_addr().unwrap_or_else(|_| unspecified());
                    let reply = socks::encode_reply5(Reply::Succeeded, bound);
                    if let Err(e) = sock.write_all(&reply).await {
                        return Some(e);
                    }
                    let linger = shared.opts.half_close_linger;
                    carry(sock.into_split(), upstream, &early, counted, linger).await
                }
                Err(e) => {
                    let reply = socks::encode_reply5(e.socks5_reply(), unspecified());
                    sock.write_all(&reply).await.err()
                }
            }
        }
    }
}

/// Serves one SOCKS4 or SOCKS4a client. SOCKS4 carries no password, so with credentials
/// configured every request is rejected.
pub(crate) async fn serve4(
    mut sock: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    counted: &Arc<Connection>,
) -> Option<std::io::Error> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        shared.opts.handshake_timeout,
        read_msg(&mut sock, &mut buf, socks::parse_request4),
    );
    let req = match read.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "SOCKS4 request ended the connection");
            return None;
        }
        Err(_) => return None,
    };
    if shared.auth.is_some() || req.command != Command::Connect {
        debug!(%peer, command = ?req.command, "SOCKS4 request rejected (credentials required, or not CONNECT)");
        return sock.write_all(&socks::encode_reply4(false)).await.err();
    }
    let conn = Conn::new(shared, counted, peer, "socks4", req.address);
    match conn.open().await {
        Ok(upstream) => {
            if let Err(e) = sock.write_all(&socks::encode_reply4(true)).await {
                return Some(e);
            }
            let linger = shared.opts.half_close_linger;
            carry(sock.into_split(), upstream, &buf, counted, linger).await
        }
        Err(_) => sock.write_all(&socks::encode_reply4(false)).await.err(),
    }
}
