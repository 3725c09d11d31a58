//! The cluster DNS server: a shared name-to-address map served over UDP and TCP.

mod codec;
mod resolver;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use codec::{
    ANSWER_TTL, CLASS_IN, DnsResponse, MAX_UDP_MESSAGE, Query, Rcode, TYPE_A, TYPE_AAAA,
    encode_error, encode_query, encode_response, normalize_name, parse_query, parse_response,
};
pub use resolver::PodResolver;

use super::error::Result;
use super::protocol::MAX_DATAGRAM;
use super::tasks::{TaskGroup, accept_loop, bind_tcp, bind_udp};

/// Largest DNS message over TCP (the length prefix is 16 bits).
const MAX_TCP_MESSAGE: usize = u16::MAX as usize;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Tries to find a port free for both UDP and TCP when the OS picks it.
const PORT_PICK_ATTEMPTS: usize = 8;

/// The names the DNS server knows, shared between the cluster and the server. Names are
/// compared case-insensitively, with or without a trailing dot.
///
/// # Example
///
/// ```
/// use kforward_testkit::network::DnsRecords;
///
/// let records = DnsRecords::new();
/// records.set("web.demo.svc.cluster.local.", vec!["127.130.0.1".parse().unwrap()]);
/// assert_eq!(records.get("WEB.demo.svc.cluster.local").map(|ips| ips.len()), Some(1));
/// records.remove("web.demo.svc.cluster.local");
/// assert_eq!(records.get("web.demo.svc.cluster.local"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DnsRecords {
    names: Arc<RwLock<HashMap<String, Vec<Ipv4Addr>>>>,
}

impl DnsRecords {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the addresses of `name` (an empty list makes the name exist without addresses).
    pub fn set(&self, name: &str, ips: Vec<Ipv4Addr>) {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        names.insert(normalize_name(name), ips);
    }

    /// Removes `name`, returning its addresses if it existed.
    pub fn remove(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        names.remove(&normalize_name(name))
    }

    /// The addresses of `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        names.get(&normalize_name(name)).cloned()
    }

    /// The response to the raw query `msg`, at most `max_len` bytes, or `None` when the
    /// message must not be answered (a response, or too short to carry an ID).
    pub fn answer(&self, msg: &[u8], max_len: usize) -> Option<Vec<u8>> {
        let query = match parse_query(msg) {
            Ok(query) => query,
            Err(error) => {
                tracing::debug!(%error, "undecodable DNS query");
                return encode_error(msg, Rcode::FormErr);
            }
        };
        let (rcode, answers) = if query.opcode != 0 {
            (Rcode::NotImp, Vec::new())
        } else {
            match (self.get(&query.name), query.qtype, query.qclass) {
                (None, _, _) => (Rcode::NxDomain, Vec::new()),
                (Some(ips), TYPE_A, CLASS_IN) => (Rcode::NoError, ips),
                // The name exists; it has no records of this type or class (NODATA).
                (Some(_), _, _) => (Rcode::NoError, Vec::new()),
            }
        };
        encode_response(&query, rcode, &answers, max_len)
            .ok()
            .or_else(|| encode_error(msg, Rcode::FormErr))
    }
}

/// A DNS server for [`DnsRecords`] on one address, over UDP (512-byte answers, TC set when
/// more would not fit) and TCP (2-byte length prefix) on the same port. Dropping it (or
/// [`stop`](Self::stop)) closes both.
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    tasks: TaskGroup,
}

impl DnsServer {
    /// Serves `records` on `ip:port`; port 0 lets the OS pick one free for both UDP and TCP.
    ///
    /// # Errors
    ///
    /// [`NetworkError::Bind`](super::NetworkError::Bind) when the address cannot be bound.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_testkit::network::{AddressPool, DnsRecords, DnsServer, PodResolver};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AddressPool::new();
    /// let records = DnsRecords::new();
    /// let server = DnsServer::start(pool.next_external_ip(), 0, records.clone()).await?;
    /// records.set("db.demo.svc.cluster.local", vec![pool.next_service_ip()]);
    /// let resolver = PodResolver::for_namespace(server.local_addr(), "demo");
    /// assert_eq!(resolver.resolve("db").await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(ip: Ipv4Addr, port: u16, records: DnsRecords) -> Result<Self> {
        let (udp, tcp, local_addr) = bind_both(ip, port).await?;
        let mut tasks = TaskGroup::new();
        tasks.spawn(serve_udp(udp, records.clone(), tasks.token()));
        tasks.spawn(accept_loop(
            tcp,
            tasks.token(),
            "dns",
            move |stream, peer| serve_tcp(stream, peer, records.clone()),
        ));
        Ok(Self { local_addr, tasks })
    }

    /// The address (UDP and TCP) the server answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Binds UDP and TCP on the same port, retrying when the OS-picked UDP port is taken for TCP.
async fn bind_both(
    ip: Ipv4Addr,
    port: u16,
) -> Result<(UdpSocket, tokio::net::TcpListener, SocketAddr)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (udp, local) = bind_udp(SocketAddr::from((ip, port))).await?;
        match bind_tcp(local).await {
            Ok((tcp, _)) => return Ok((udp, tcp, local)),
            Err(error) if port == 0 && attempt < PORT_PICK_ATTEMPTS && error.is_addr_in_use() => {
                tracing::debug!(%local, "TCP port taken; picking another DNS port");
            }
            Err(error) => return Err(error),
        }
    }
}

async fn serve_udp(socket: UdpSocket, records: DnsRecords, shutdown: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "dns receive failed");
                    continue;
                }
            },
        };
        if let Some(response) = records.answer(&buf[..len], MAX_UDP_MESSAGE)
            && let Err(error) = socket.send_to(&response, peer).await
        {
            tracing::debug!(%peer, %error, "dns send failed");
        }
    }
}

async fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, records: DnsRecords) {
    let mut buf = vec![0u8; MAX_TCP_MESSAGE];
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(_)) | Err(_) => return,
        };
        if let Err(error) = stream.read_exact(&mut buf[..len]).await {
            tracing::debug!(%peer, %error, "dns tcp read failed");
            return;
        }
        let Some(response) = records.answer(&buf[..len], MAX_TCP_MESSAGE) else {
            return;
        };
        let mut out = Vec::with_capacity(2 + response.len());
        out.extend_from_slice(&(response.len() as u16).to_be_bytes());
        out.extend_from_slice(&response);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::DnsError;

    fn records() -> DnsRecords {
        let records = DnsRecords::new();
        records.set(
            "web.demo.svc.cluster.local",
            vec![Ipv4Addr::new(127, 140, 0, 1)],
        );
        records
    }

    fn ask(records: &DnsRecords, name: &str, qtype: u16) -> DnsResponse {
        let query = encode_query(7, name, qtype).expect("valid name");
        let answer = records.answer(&query, MAX_UDP_MESSAGE).expect("answered");
        parse_response(&answer).expect("valid response")
    }

    #[test]
    fn answers_known_names_case_insensitively() {
        let response = ask(&records(), "WEB.demo.svc.cluster.local.", TYPE_A);
        assert_eq!((response.id, response.rcode), (7, 0));
        assert_eq!(response.addresses, vec![Ipv4Addr::new(127, 140, 0, 1)]);
        assert_eq!(response.name.as_deref(), Some("WEB.demo.svc.cluster.local"));
    }

    #[test]
    fn aaaa_for_a_known_name_is_nodata_and_unknown_is_nxdomain() {
        let aaaa = ask(&records(), "web.demo.svc.cluster.local", TYPE_AAAA);
        assert_eq!((aaaa.rcode, aaaa.addresses.len()), (0, 0));
        assert_eq!(
            ask(&records(), "nope.demo.svc.cluster.local", TYPE_A).rcode,
            3
        );
        assert_eq!(
            ask(&records(), "nope.demo.svc.cluster.local", TYPE_AAAA).rcode,
            3
        );
    }

    #[test]
    fn garbage_gets_formerr_and_responses_get_nothing() {
        let formerr = records()
            .answer(&[0, 9, 1, 0, 0, 1], MAX_UDP_MESSAGE)
            .expect("answered");
        assert_eq!((formerr[1], formerr[3] & 0x0F), (9, 1));
        let mut response = encode_query(1, "web", TYPE_A).expect("valid");
        response[2] |= 0x80;
        assert_eq!(records().answer(&response, MAX_UDP_MESSAGE), None);
    }

    #[test]
    fn removed_names_become_nxdomain() {
        let records = records();
        assert!(records.remove("web.demo.svc.cluster.local.").is_some());
        assert_eq!(ask(&records, "web.demo.svc.cluster.local", TYPE_A).rcode, 3);
    }

    async fn bounded<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), future)
            .await
            .expect("test step timed out")
    }

    #[tokio::test]
    async fn pod_resolver_finds_services_through_the_search_list() {
        let pool = crate::network::AddressPool::new();
        let records = DnsRecords::new();
        let server = bounded(DnsServer::start(
            pool.next_external_ip(),
            0,
            records.clone(),
        ))
        .await
        .expect("start dns");
        let web = pool.next_service_ip();
        records.set("web.demo.svc.cluster.local", vec![web]);
        let resolver = PodResolver::for_namespace(server.local_addr(), "demo");
        for name in [
            "web",
            "web.demo",
            "web.demo.svc",
            "WEB.demo.svc.cluster.local.",
        ] {
            let ips = bounded(resolver.resolve(name)).await.expect(name);
            assert_eq!(ips, [std::net::IpAddr::V4(web)], "{name}");
        }
        let other = PodResolver::for_namespace(server.local_addr(), "other");
        let error = bounded(other.resolve("web"))
            .await
            .expect_err("not in namespace other");
        assert!(error.is_nxdomain(), "{error}");
        let error = bounded(resolver.resolve("nope"))
            .await
            .expect_err("unknown name");
        let DnsError::NxDomain { tried, .. } = &error else {
            panic!("expected NXDOMAIN, got {error}");
        };
        assert_eq!(tried.len(), 4);
        records.set("empty.demo.svc.cluster.local", Vec::new());
        let nodata = bounded(resolver.resolve("empty"))
            .await
            .expect_err("no addresses");
        assert!(matches!(nodata, DnsError::NoData { .. }), "{nodata}");
        bounded(server.stop()).await;
    }

    #[tokio::test]
    async fn truncated_udp_answers_are_asked_again_over_tcp() {
        let pool = crate::network::AddressPool::new();
        let records = DnsRecords::new();
        let server = bounded(DnsServer::start(
            pool.next_external_ip(),
            0,
            records.clone(),
        ))
        .await
        .expect("start dns");
        let many: Vec<Ipv4Addr> = (0..60).map(|_| pool.next_pod_ip()).collect();
        records.set("headless.demo.svc.cluster.local", many.clone());
        let resolver = PodResolver::for_namespace(server.local_addr(), "demo");
        let ips = bounded(resolver.resolve("headless"))
            .await
            .expect("resolve over tcp");
        let expected: Vec<std::net::IpAddr> = many.into_iter().map(Into::into).collect();
        assert_eq!(ips, expected);
        bounded(server.stop()).await;
    }
}
