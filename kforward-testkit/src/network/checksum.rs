//! The checksum server (`.../checksum` images): a server that answers only after the
//! client's EOF, as `sort`, `wc`, `sha256sum` behind `nc -l` or an upload-then-verify
//! protocol do. It reads everything, then writes `<bytes> <sha256 hex>\n` and closes.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffer: uploads of many MiB go through it.
const BUFFER: usize = 64 * 1024;

/// What the checksum server answers after reading `data` and then EOF.
///
/// # Example
///
/// ```
/// let line = kforward_testkit::network::checksum_line(b"abc");
/// assert!(line.starts_with("3 ba7816bf"));
/// assert!(line.ends_with('\n'));
/// ```
pub fn checksum_line(data: &[u8]) -> String {
    format_line(data.len() as u64, &Sha256::digest(data))
}

fn format_line(bytes: u64, digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{bytes} {hex}\n")
}

/// Reads `stream` to its end, then answers with the count and checksum and closes.
pub(crate) async fn checksum_tcp(mut stream: TcpStream, peer: SocketAddr) {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; BUFFER];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "checksum read failed");
                return;
            }
        }
    }
    let line = format_line(bytes, &hasher.finalize());
    if let Err(error) = stream.write_all(line.as_bytes()).await {
        tracing::debug!(%peer, %error, "checksum answer not delivered");
        return;
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_of_nothing_is_the_empty_sha256() {
        assert_eq!(
            checksum_line(b""),
            "0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        );
    }
}
