//! A stub resolver that behaves like glibc with a pod's resolv.conf (search list, ndots).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::codec::{DnsResponse, TYPE_A, encode_query, parse_response};
use crate::network::error::DnsError;

/// How long one UDP attempt waits for its answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP queries sent per name before giving up (glibc's `attempts`).
const ATTEMPTS: u32 = 3;
/// The `ndots` of a Kubernetes pod's resolv.conf.
const KUBERNETES_NDOTS: u8 = 5;
/// Largest response read over UDP.
const MAX_UDP_RESPONSE: usize = 4096;

/// Resolves names the way a process in a pod does, by asking the cluster DNS server for real.
///
/// An IP literal is returned as is. A name with a trailing dot is absolute and asked once.
/// Otherwise, with fewer than `ndots` dots each search domain is tried first and then the
/// name as given; with `ndots` dots or more the name as given comes first. Only IPv4 (`A`)
/// records are asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodResolver {
    /// The DNS server (the `nameserver` line).
    pub dns: SocketAddr,
    /// The search domains, in order (the `search` line).
    pub search: Vec<String>,
    /// Names with fewer dots than this go through the search list first.
    pub ndots: u8,
}

impl PodResolver {
    /// The resolver of a pod in `namespace`: search `<ns>.svc.cluster.local
    /// svc.cluster.local cluster.local`, `ndots:5`.
    pub fn for_namespace(dns: SocketAddr, namespace: &str) -> Self {
        Self {
            dns,
            search: vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".to_owned(),
                "cluster.local".to_owned(),
            ],
            ndots: KUBERNETES_NDOTS,
        }
    }

    /// The absolute names tried for `name`, in order (without trailing dots).
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let expanded = self
            .search
            .iter()
            .map(|domain| format!("{name}.{}", domain.trim_end_matches('.')));
        let dots = name.matches('.').count();
        if dots >= usize::from(self.ndots) {
            std::iter::once(name.to_owned()).chain(expanded).collect()
        } else {
            expanded.chain(std::iter::once(name.to_owned())).collect()
        }
    }

    /// Resolves `name` to its IPv4 addresses.
    ///
    /// # Errors
    ///
    /// [`DnsError::NxDomain`] when no candidate exists, [`DnsError::NoData`] when a
    /// candidate exists without addresses, [`DnsError::ServerFailure`] for other rcodes,
    /// [`DnsError::Timeout`] or [`DnsError::Io`] when the server cannot be reached, and
    /// [`DnsError::InvalidName`] for names that cannot be asked.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if name.is_empty() || name == "." {
            return Err(DnsError::InvalidName {
                name: name.to_owned(),
                reason: "empty name",
            });
        }
        let tried = self.candidates(name);
        let (mut nodata, mut failure) = (false, None);
        for candidate in &tried {
            let response = self.query(candidate).await?;
            match response.rcode {
                0 if !response.addresses.is_empty() => {
                    return Ok(response.addresses.into_iter().map(IpAddr::V4).collect());
                }
                0 => nodata = true,
                3 => {}
                rcode => {
                    failure.get_or_insert(DnsError::ServerFailure {
                        server: self.dns,
                        name: candidate.clone(),
                        rcode,
                    });
                }
            }
        }
        if nodata {
            return Err(DnsError::NoData {
                name: name.to_owned(),
            });
        }
        Err(failure.unwrap_or(DnsError::NxDomain {
            name: name.to_owned(),
            tried,
        }))
    }

    /// Asks for the A records of the absolute `name` over UDP, falling back to TCP when the
    /// answer is truncated.
    async fn query(&self, name: &str) -> Result<DnsResponse, DnsError> {
        let io = |source| DnsError::Io {
            server: self.dns,
            source,
        };
        let id: u16 = rand::random();
        let query = encode_query(id, name, TYPE_A)?;
        let local: SocketAddr = match self.dns {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(self.dns).await.map_err(io)?;
        let mut buf = vec![0u8; MAX_UDP_RESPONSE];
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            socket.send(&query).await.map_err(io)?;
            let deadline = Instant::now() + ATTEMPT_TIMEOUT;
            loop {
                let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
                let len = match received {
                    Err(_) => break,
                    Ok(Ok(len)) => len,
                    Ok(Err(error)) => {
                        // ECONNREFUSED: nothing listens; the next attempt may find it.
                        last_error = Some(error);
                        break;
                    }
                };
                match parse_response(&buf[..len]) {
                    Ok(response) if matches_query(&response, id, name) => {
                        if response.truncated {
                            return self.query_tcp(&query, id, name).await;
                        }
                        return Ok(response);
                    }
                    // Stale, spoofed or garbled: keep waiting for the real answer.
                    Ok(_) | Err(_) => tracing::debug!(%name, "ignoring unexpected DNS datagram"),
                }
            }
        }
        Err(match last_error {
            Some(source) => io(source),
            None => DnsError::Timeout {
                server: self.dns,
                name: name.to_owned(),
                attempts: ATTEMPTS,
            },
        })
    }

    /// Asks `query` again over TCP, as a resolver does after a truncated UDP answer.
    async fn query_tcp(&self, query: &[u8], id: u16, name: &str) -> Result<DnsResponse, DnsError> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.dns).await?;
            let mut out = Vec::with_capacity(2 + query.len());
            out.extend_from_slice(&u16::try_from(query.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(query);
            stream.write_all(&out).await?;
            let len = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .map_err(|_| DnsError::Timeout {
                server: self.dns,
                name: name.to_owned(),
                attempts: 1,
            })?
            .map_err(|source| DnsError::Io {
                server: self.dns,
                source,
            })?;
        let response = parse_response(&buf)?;
        if !matches_query(&response, id, name) {
            return Err(DnsError::Malformed {
                reason: format!("TCP answer from {} does not match the query", self.dns),
            });
        }
        Ok(response)
    }
}

/// An answer belongs to a query when the ID matches and the question, if repeated, is the
/// same name (case-insensitively).
fn matches_query(response: &DnsResponse, id: u16, name: &str) -> bool {
    response.id == id
        && response
            .name
            .as_deref()
            .is_none_or(|asked| asked.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> PodResolver {
        PodResolver::for_namespace("127.200.0.1:53".parse().expect("addr"), "demo")
    }

    #[test]
    fn short_names_go_through_the_search_list_first() {
        assert_eq!(
            resolver().candidates("web"),
            [
                "web.demo.svc.cluster.local",
                "web.svc.cluster.local",
                "web.cluster.local",
                "web"
            ]
        );
    }

    #[test]
    fn names_with_ndots_dots_are_tried_as_is_first() {
        let mut resolver = resolver();
        resolver.ndots = 1;
        assert_eq!(resolver.candidates("example.com")[0], "example.com");
        assert_eq!(resolver.candidates("example.com").len(), 4);
    }

    #[test]
    fn trailing_dot_is_absolute() {
        assert_eq!(
            resolver().candidates("web.other.svc.cluster.local."),
            ["web.other.svc.cluster.local"]
        );
    }

    #[tokio::test]
    async fn ip_literals_need_no_server() {
        let ips = resolver().resolve("127.0.0.9").await.expect("literal");
        assert_eq!(ips, [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))]);
    }
}
