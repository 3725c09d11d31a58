//! A user-space kube-proxy for one service port: ClusterIP:port spread over ready endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::error::Result;
use super::protocol::Protocol;
use super::relay::{UdpRelayConfig, UdpRoute, relay_tcp, relay_udp};
use super::tasks::{TaskGroup, accept_loop, bind_tcp, bind_udp, reset};

/// A UDP flow with no traffic for this long is forgotten (the conntrack UDP timeout is of
/// the same order).
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Forwards one service port to the ready backends of the service.
///
/// TCP connections are spread round-robin over the current backend list (kube-proxy in
/// iptables mode picks at random; round-robin gives the same spread and makes tests
/// deterministic). With no backends a connection is reset, as kube-proxy's REJECT rule
/// refuses it. Connections already relayed keep their backend when the list changes.
///
/// UDP flows are per client address: each gets its own upstream socket, sticks to one
/// backend while that backend stays in the list, and ends after an idle timeout.
///
/// Outbound sockets are bound to the service IP (port 0), so a backend sees connections
/// coming from the ClusterIP; the client's own address is not preserved (no SNAT-free mode).
///
/// Dropping the proxy (or [`stop`](Self::stop)) closes the listener and every live flow.
#[derive(Debug)]
pub struct ServiceProxy {
    local_addr: SocketAddr,
    protocol: Protocol,
    tasks: TaskGroup,
}

impl ServiceProxy {
    /// Listens on `ip:port` (port 0 picks a free one) and starts forwarding to the backends
    /// currently in `backends`, following every change.
    ///
    /// # Errors
    ///
    /// [`NetworkError::Bind`](super::NetworkError::Bind) when `ip:port` cannot be bound.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_testkit::network::{AddressPool, Protocol, ServiceProxy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AddressPool::new();
    /// let (_set_backends, backends) = tokio::sync::watch::channel(Vec::new());
    /// let proxy = ServiceProxy::start(pool.next_service_ip(), 0, Protocol::Tcp, backends).await?;
    /// assert_ne!(proxy.local_addr().port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        backends: watch::Receiver<Vec<SocketAddr>>,
    ) -> Result<Self> {
        let addr = SocketAddr::from((ip, port));
        let balancer = Arc::new(Balancer {
            backends,
            next: AtomicUsize::new(0),
        });
        let mut tasks = TaskGroup::new();
        let token = tasks.token();
        let local_addr = match protocol {
            Protocol::Tcp => {
                let (listener, local) = bind_tcp(addr).await?;
                tasks.spawn(accept_loop(listener, token, "service", move |stream, peer| {
                    let target = balancer.next_backend();
                    async move {
                        match target {
                            Some(target) => relay_tcp(stream, Some(ip), target).await,
                            None => {
                                tracing::debug!(%peer, "service has no ready endpoints; rejecting");
                                reset(stream);
                            }
                        }
                    }
                }));
                local
            }
            Protocol::Udp => {
                let (socket, local) = bind_udp(addr).await?;
                let config = UdpRelayConfig {
                    source: Some(ip),
                    idle_timeout: UDP_IDLE,
                };
                tasks.spawn(relay_udp(socket, config, balancer, token));
                local
            }
        };
        Ok(Self {
            local_addr,
            protocol,
            tasks,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// TCP or UDP.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Stops forwarding and waits until the listener and all flows are closed.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Round-robin choice over the live backend list.
#[derive(Debug)]
struct Balancer {
    backends: watch::Receiver<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Balancer {
    fn next_backend(&self) -> Option<SocketAddr> {
        let backends = self.backends.borrow();
        if backends.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        backends.get(n % backends.len()).copied()
    }
}

impl UdpRoute for Arc<Balancer> {
    fn pick(&self, _peer: SocketAddr) -> Option<SocketAddr> {
        self.next_backend()
    }

    fn still_valid(&self, upstream: SocketAddr) -> bool {
        self.backends.borrow().contains(&upstream)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::future::Future;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};

    use super::*;
    use crate::network::AddressPool;

    const WAIT: Duration = Duration::from_secs(10);

    async fn bounded<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(WAIT, future)
            .await
            .expect("test step timed out")
    }

    /// A backend that writes its name to every connection and closes.
    async fn named_backend(name: &'static str) -> (SocketAddr, TaskGroup) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let mut tasks = TaskGroup::new();
        let token = tasks.token();
        tasks.spawn(accept_loop(
            listener,
            token,
            "backend",
            move |mut stream, _| async move {
                let _ = stream.write_all(name.as_bytes()).await;
            },
        ));
        (addr, tasks)
    }

    async fn ask(addr: SocketAddr) -> std::io::Result<String> {
        let mut stream = bounded(tokio::net::TcpStream::connect(addr)).await?;
        let mut name = String::new();
        bounded(stream.read_to_string(&mut name)).await?;
        Ok(name)
    }

    #[tokio::test]
    async fn spreads_connections_and_follows_backend_changes() {
        let (a, _a_tasks) = named_backend("a").await;
        let (b, _b_tasks) = named_backend("b").await;
        let (set, backends) = watch::channel(vec![a, b]);
        let ip = AddressPool::new().next_service_ip();
        let proxy = bounded(ServiceProxy::start(ip, 0, Protocol::Tcp, backends))
            .await
            .expect("start proxy");
        let mut counts = BTreeMap::new();
        for _ in 0..6 {
            let name = ask(proxy.local_addr()).await.expect("ask via service");
            *counts.entry(name).or_insert(0) += 1;
        }
        assert_eq!(counts, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));

        set.send_replace(vec![b]);
        for _ in 0..3 {
            assert_eq!(ask(proxy.local_addr()).await.expect("ask via service"), "b");
        }

        set.send_replace(Vec::new());
        let rejected = ask(proxy.local_addr()).await;
        assert!(
            matches!(&rejected, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "no endpoints resets: {rejected:?}"
        );
        bounded(proxy.stop()).await;
    }

    #[tokio::test]
    async fn udp_flows_stick_to_a_backend_and_reply_to_the_right_peer() {
        let backend_a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let backend_b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        let addrs = vec![
            backend_a.local_addr().expect("a addr"),
            backend_b.local_addr().expect("b addr"),
        ];
        let (_set, backends) = watch::channel(addrs);
        let ip = AddressPool::new().next_service_ip();
        let proxy = bounded(ServiceProxy::start(ip, 0, Protocol::Udp, backends))
            .await
            .expect("start proxy");
        let one = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client one");
        let two = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client two");
        let mut buf = [0u8; 32];
        for (client, backend) in [(&one, &backend_a), (&two, &backend_b)] {
            for _ in 0..2 {
                client
                    .send_to(b"hi", proxy.local_addr())
                    .await
                    .expect("send");
                let (len, from) = bounded(backend.recv_from(&mut buf))
                    .await
                    .expect("at backend");
                assert_eq!(
                    (&buf[..len], from.ip()),
                    (&b"hi"[..], std::net::IpAddr::V4(ip))
                );
                backend.send_to(b"ok", from).await.expect("reply");
                let (len, from) = bounded(client.recv_from(&mut buf))
                    .await
                    .expect("reply back");
                assert_eq!((&buf[..len], from), (&b"ok"[..], proxy.local_addr()));
            }
        }
        bounded(proxy.stop()).await;
    }
}
