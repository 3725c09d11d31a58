//! An "external" host outside the cluster that only pod addresses may reach.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::echo::echo_udp;
use super::error::Result;
use super::http::{Reply, serve_http};
use super::tasks::{TaskGroup, accept_loop, bind_tcp, bind_udp, reset};

/// A host outside the cluster (a database, an internet API) that answers pods only, so a
/// test can prove traffic really left from inside a pod.
///
/// Its TCP port answers every HTTP request with 200 and the body
/// `hello from <name> to <peer ip>\n`; its optional UDP port echoes. A TCP peer that is not
/// allowed is reset at once (RST, nothing read or sent); a UDP datagram from one is ignored.
/// Dropping the host (or [`stop`](Self::stop)) closes everything.
#[derive(Debug)]
pub struct ExternalHost {
    name: String,
    http_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    tasks: TaskGroup,
}

impl ExternalHost {
    /// Starts the host on `ip`: HTTP on `tcp_http_port`, UDP echo on `udp_echo_port` (port
    /// 0 picks a free one). `allow` decides which peer addresses are served, usually
    /// [`AddressPool::is_pod_ip`](super::AddressPool::is_pod_ip).
    ///
    /// # Errors
    ///
    /// [`NetworkError::Bind`](super::NetworkError::Bind) when a port cannot be bound.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_testkit::network::{AddressPool, ExternalHost};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AddressPool::new();
    /// let allow = pool.clone();
    /// let host = ExternalHost::start("api.example.com", pool.next_external_ip(), 0, None, move |ip| {
    ///     allow.is_pod_ip(ip)
    /// })
    /// .await?;
    /// assert_eq!(host.name(), "api.example.com");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start<A>(
        name: impl Into<String>,
        ip: Ipv4Addr,
        tcp_http_port: u16,
        udp_echo_port: Option<u16>,
        allow: A,
    ) -> Result<Self>
    where
        A: Fn(IpAddr) -> bool + Send + Sync + 'static,
    {
        let name = name.into();
        let allow = Arc::new(allow);
        let (listener, http_addr) = bind_tcp(SocketAddr::from((ip, tcp_http_port))).await?;
        let udp = match udp_echo_port {
            Some(port) => Some(bind_udp(SocketAddr::from((ip, port))).await?),
            None => None,
        };
        let mut tasks = TaskGroup::new();
        let udp_addr = udp.as_ref().map(|(_, addr)| *addr);
        if let Some((socket, _)) = udp {
            let allow = Arc::clone(&allow);
            tasks.spawn(echo_udp(socket, move |peer| allow(peer), tasks.token()));
        }
        let greeting = name.clone();
        tasks.spawn(accept_loop(
            listener,
            tasks.token(),
            "external",
            move |stream, peer| {
                let allowed = allow(peer.ip());
                let greeting = greeting.clone();
                async move {
                    if !allowed {
                        tracing::debug!(%peer, "peer is not allowed; resetting");
                        reset(stream);
                        return;
                    }
                    serve_http(stream, peer, move |_, _, peer| {
                        Reply::text(
                            http::StatusCode::OK,
                            format!("hello from {greeting} to {}\n", peer.ip()),
                        )
                    })
                    .await;
                }
            },
        ));
        Ok(Self {
            name,
            http_addr,
            udp_addr,
            tasks,
        })
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The UDP echo address, if one was asked for.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// Stops the host and waits until its sockets are closed.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream, UdpSocket};

    use super::*;
    use crate::network::AddressPool;

    const WAIT: Duration = Duration::from_secs(10);

    async fn bounded<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(WAIT, future)
            .await
            .expect("test step timed out")
    }

    async fn host(pool: &AddressPool) -> ExternalHost {
        let allow = pool.clone();
        let start = ExternalHost::start(
            "db.example.com",
            pool.next_external_ip(),
            0,
            Some(0),
            move |ip| allow.is_pod_ip(ip),
        );
        bounded(start).await.expect("start external host")
    }

    #[tokio::test]
    async fn answers_pods_and_resets_everyone_else() {
        let pool = AddressPool::new();
        let host = host(&pool).await;
        let pod_ip = pool.next_pod_ip();

        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((pod_ip, 0)))
            .expect("bind to pod ip");
        let mut stream = bounded(socket.connect(host.http_addr()))
            .await
            .expect("connect");
        let request = b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n";
        bounded(stream.write_all(request)).await.expect("send");
        let mut response = String::new();
        bounded(stream.read_to_string(&mut response))
            .await
            .expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.ends_with(&format!("hello from db.example.com to {pod_ip}\n")),
            "{response}"
        );

        let mut outsider = bounded(TcpStream::connect(host.http_addr()))
            .await
            .expect("connect");
        let mut buf = [0u8; 16];
        let read = bounded(outsider.read(&mut buf)).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "127.0.0.1 is reset: {read:?}"
        );
        bounded(host.stop()).await;
    }

    #[tokio::test]
    async fn udp_echo_ignores_outsiders() {
        let pool = AddressPool::new();
        let host = host(&pool).await;
        let udp_addr = host.udp_addr().expect("udp port");
        // A blocking std socket, so the final check below is a real non-blocking recv.
        let outsider = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind outsider");
        outsider.send_to(b"let me in", udp_addr).expect("send");
        let pod = UdpSocket::bind((pool.next_pod_ip(), 0))
            .await
            .expect("bind pod");
        pod.send_to(b"ping", udp_addr).await.expect("send");
        let mut buf = [0u8; 16];
        let (len, from) = bounded(pod.recv_from(&mut buf)).await.expect("echo");
        assert_eq!((&buf[..len], from), (&b"ping"[..], udp_addr));
        // The outsider's datagram was sent first; the pod's answer came back, so the server
        // already handled it. Nothing may be waiting for the outsider.
        outsider.set_nonblocking(true).expect("non-blocking");
        let mut outsider_buf = [0u8; 16];
        let nothing = outsider.recv_from(&mut outsider_buf);
        assert!(
            matches!(&nothing, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "outsider got no answer: {nothing:?}"
        );
        bounded(host.stop()).await;
    }
}
