//! SOCKS5 toward the API server (RFC 1928, with RFC 1929 user and password auth), through
//! tokio-socks.
//!
//! hyper-util's `SocksV5` connector does the same handshake, but reports a failure through
//! types it does not export, whose text has neither the reply code nor the cause of a failed
//! connection to the proxy; tokio-socks names each reply, so the error can say what to check.

use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

/// Asks the SOCKS5 proxy at the other end of `tcp` for a connection to `host:port`. A host
/// name goes to the proxy as a name, which it resolves (what `socks5h` means, and what
/// client-go's SOCKS5 dialer does for `socks5` too).
///
/// # Errors
///
/// `(message, retryable)`: what the proxy said and what to check.
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
    port: u16,
    credentials: Option<(&str, &str)>,
) -> Result<TcpStream, (String, bool)> {
    let target = (host, port);
    let done = match credentials {
        Some((user, password)) => {
            Socks5Stream::connect_with_password_and_socket(tcp, target, user, password).await
        }
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    done.map(Socks5Stream::into_inner)
        .map_err(|e| explain(&e, credentials.is_some()))
}

/// What a SOCKS failure means and what to check, and whether trying again may help. Reply
/// codes from RFC 1928, section 6.
fn explain(e: &tokio_socks::Error, credentials: bool) -> (String, bool) {
    use tokio_socks::Error as E;
    let (text, retryable) = match e {
        E::NoAcceptableAuthMethods if credentials => (
            "the SOCKS5 proxy accepts no authentication kforward offers (user name and password, RFC 1929): check the proxy's settings".to_string(),
            false,
        ),
        E::NoAcceptableAuthMethods => (
            "the SOCKS5 proxy wants credentials: put USER:PASSWORD@ in front of the proxy's host in its URL".to_string(),
            false,
        ),
        E::PasswordAuthFailure(code) => (
            format!("the SOCKS5 proxy rejected the user name and password (status {code}): check them in the proxy URL"),
            false,
        ),
        E::InvalidAuthValues(why) => (
            format!("the credentials in the proxy URL cannot be sent over SOCKS5 ({why})"),
            false,
        ),
        E::GeneralSocksServerFailure => (
            "the SOCKS5 proxy reported a general failure (reply 1): see the proxy's log".to_string(),
            true,
        ),
        E::ConnectionNotAllowedByRuleset => (
            "the SOCKS5 proxy's rules refuse this destination (reply 2): ask its administrators to allow it, or bypass the proxy with NO_PROXY if the server is reachable without it".to_string(),
            false,
        ),
        E::NetworkUnreachable => (
            "the SOCKS5 proxy cannot reach the API server's network (reply 3): check the server address, and that the proxy can reach it".to_string(),
            true,
        ),
        E::HostUnreachable => (
            "the SOCKS5 proxy cannot reach the API server (reply 4: host unreachable): check the server address, and that the proxy can resolve and reach it".to_string(),
            true,
        ),
        E::ConnectionRefused => (
            "the API server refused the SOCKS5 proxy's connection (reply 5): check the server's address and port".to_string(),
            true,
        ),
        E::TtlExpired => (
            "the SOCKS5 proxy's connection to the API server timed out (reply 6: TTL expired): check that the proxy can reach the server".to_string(),
            true,
        ),
        E::CommandNotSupported => (
            "the SOCKS5 proxy does not allow CONNECT (reply 7): check the proxy's settings".to_string(),
            false,
        ),
        E::AddressTypeNotSupported => (
            "the SOCKS5 proxy does not take this kind of address (reply 8): check the proxy's settings".to_string(),
            false,
        ),
        E::InvalidResponseVersion | E::UnknownAuthMethod => (
            format!("the proxy does not speak SOCKS5 ({e}): check the proxy URL's scheme and port"),
            false,
        ),
        E::Io(io) => (format!("the SOCKS5 handshake failed: {io}"), true),
        other => (format!("the SOCKS5 handshake failed: {other}"), true),
    };
    (text, retryable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A SOCKS5 server that takes no auth, reads one CONNECT, and answers `reply`; returns
    /// the request's address part.
    async fn one_shot(reply: u8) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut greeting = [0u8; 3];
            s.read_exact(&mut greeting).await.expect("greeting");
            s.write_all(&[5, 0]).await.expect("method");
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.expect("request");
            let mut rest = vec![0u8; usize::from(head[4]) + 2];
            s.read_exact(&mut rest).await.expect("name and port");
            s.write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0])
                .await
                .expect("reply");
            let mut req = head.to_vec();
            req.extend_from_slice(&rest);
            req
        });
        (addr, task)
    }

    #[tokio::test]
    async fn names_go_to_the_proxy_and_reply_codes_are_explained() {
        let (addr, server) = one_shot(2).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (message, retryable) = connect(tcp, "api.corp.example", 6443, None)
            .await
            .expect_err("refused by the rules");
        assert!(message.contains("reply 2"), "{message}");
        assert!(!retryable);
        let req = server.await.expect("server");
        // CONNECT, a domain name (ATYP 3) of 16 bytes, then the port.
        assert_eq!(&req[..5], &[5, 1, 0, 3, 16]);
        assert_eq!(&req[5..21], b"api.corp.example");
        assert_eq!(&req[21..], &6443u16.to_be_bytes());

        let (addr, _server) = one_shot(5).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (message, retryable) = connect(tcp, "api", 1, None).await.expect_err("refused");
        assert!(message.contains("reply 5"), "{message}");
        assert!(retryable);
    }
}
