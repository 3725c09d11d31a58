//! Binding a local TCP listener with a backlog that takes a burst of new connections.
//!
//! `tokio::net::TcpListener::bind` listens with a backlog of 1,024. A browser, a connection
//! pool warming up or a load test opening 1,000 connections at once overflows it while the
//! accept loop catches up: the kernel drops the SYNs it has no room for and the client
//! retries them one second later (the first SYN retransmission), which is what showed in
//! the burst benchmark's 99th percentile (`nstat`: `TcpExtListenDrops`). kubectl's
//! listener is Go's, which asks for `net.core.somaxconn` (4,096 on current kernels).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The backlog asked for; the kernel caps it at `net.core.somaxconn`, as Go's `net.Listen`
/// does with the same request.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it (a port whose last connections are in TIME_WAIT binds again).
pub(crate) fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backlog the kernel gives a listener, as `ss` shows it (Send-Q of a listening
    /// socket).
    fn backlog_of(port: u16) -> Option<u32> {
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .to_string();
        line.split_whitespace().nth(2)?.parse().ok()
    }

    #[tokio::test]
    async fn the_listener_asks_for_a_backlog_beyond_tokios_default() {
        let listener = listen_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
        let port = listener.local_addr().expect("local address").port();
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        match backlog_of(port) {
            Some(b) => assert_eq!(b, LISTEN_BACKLOG.min(somaxconn), "somaxconn {somaxconn}"),
            None if std::env::var_os("CI").is_some() => panic!("ss (iproute2) is needed"),
            None => eprintln!("note: ss not found; the backlog was not checked"),
        }
        // The listener takes connections as tokio's does.
        let c = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let (a, b) = tokio::join!(c, listener.accept());
        a.expect("connect");
        b.expect("accept");
    }
}
