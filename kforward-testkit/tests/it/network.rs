//! The cluster network: ClusterIP forwarding for TCP and UDP, cluster DNS, and the external
//! host that only pod addresses can reach.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kforward_testkit::{DEMO_EXTERNAL_HOST, DEMO_NAMESPACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::{bounded, cluster_ip, demo, http_get, pod_ip, pod_names, read_http_response};

#[tokio::test]
async fn cluster_ip_forwards_tcp_to_the_echo_pod() {
    let cluster = demo().await;
    let ip = cluster_ip(&cluster, "echo");
    let mut conn = bounded(
        "connect to echo's ClusterIP",
        TcpStream::connect((ip.as_str(), 7000)),
    )
    .await
    .expect("connect to the echo service");
    conn.write_all(b"hello through kube-proxy")
        .await
        .expect("write");
    let mut buf = [0u8; 24];
    bounded("the echo", conn.read_exact(&mut buf))
        .await
        .expect("read the echo");
    assert_eq!(&buf, b"hello through kube-proxy");
}

#[tokio::test]
async fn cluster_ip_port_80_reaches_both_web_pods() {
    let cluster = demo().await;
    let ip = cluster_ip(&cluster, "web");
    let mut answered = BTreeSet::new();
    for _ in 0..6 {
        let mut conn = bounded(
            "connect to web's ClusterIP:80",
            TcpStream::connect((ip.as_str(), 80)),
        )
        .await
        .expect("connect to the web service on port 80 (needs root)");
        let (code, body) = bounded("GET through the service", http_get(&mut conn)).await;
        assert_eq!(code, 200);
        answered.insert(body.trim().to_string());
    }
    let pods: BTreeSet<String> = pod_names(&cluster, "app=web").into_iter().collect();
    assert_eq!(answered, pods, "connections are spread over both web pods");
}

#[tokio::test]
async fn cluster_ip_forwards_udp_with_repeated_replies() {
    let cluster = demo().await;
    let ip: Ipv4Addr = cluster_ip(&cluster, "dns")
        .parse()
        .expect("an IPv4 ClusterIP");
    let service = SocketAddr::from((ip, 5353));
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a UDP socket");
    socket
        .send_to(b"repeat=3;hi", service)
        .await
        .expect("send a datagram");
    let mut buf = [0u8; 64];
    for i in 0..3 {
        let (len, from) = bounded("a UDP reply", socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(&buf[..len], b"repeat=3;hi", "reply {i}");
        assert_eq!(from, service, "replies come from the service address");
    }
}

#[tokio::test]
async fn cluster_dns_resolves_services_and_the_external_host() {
    let cluster = demo().await;
    let resolver = cluster.resolver(DEMO_NAMESPACE).expect("a cluster DNS");
    let web: IpAddr = cluster_ip(&cluster, "web").parse().expect("an IP");
    let echo: IpAddr = cluster_ip(&cluster, "echo").parse().expect("an IP");
    for (query, want) in [
        ("web", web),
        ("web.demo", web),
        ("web.demo.svc", web),
        ("web.demo.svc.cluster.local", web),
        ("echo.demo.svc.cluster.local.", echo),
    ] {
        let got = bounded("resolve", resolver.resolve(query))
            .await
            .unwrap_or_else(|e| panic!("resolve {query}: {e}"));
        assert_eq!(got, vec![want], "{query}");
    }
    let external = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("the demo's external host");
    let got = bounded(
        "resolve the external host",
        resolver.resolve(DEMO_EXTERNAL_HOST),
    )
    .await
    .expect("resolve the external host");
    assert_eq!(got, vec![external.ip()]);

    let missing = bounded("resolve a missing name", resolver.resolve("nope")).await;
    assert!(
        missing.as_ref().is_err_and(|e| e.is_nxdomain()),
        "a missing name is NXDOMAIN: {missing:?}"
    );
    // Another namespace's resolver does not find `web` by its short name.
    let other = cluster.resolver("default").expect("a cluster DNS");
    assert!(
        bounded("resolve web from default", other.resolve("web"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn external_host_answers_pod_addresses_only() {
    let cluster = demo().await;
    let external = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("the demo's external host");

    // From 127.0.0.1: reset, nothing served.
    let outcome = bounded("a direct connection", async {
        let mut conn = TcpStream::connect(external).await?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await?;
        Ok::<_, std::io::Error>(got)
    })
    .await;
    match outcome {
        Err(_) => {}
        Ok(got) => assert!(got.is_empty(), "nothing for 127.0.0.1: {got:?}"),
    }

    // From a pod's address: served, and the host sees the pod's IP.
    let ip: Ipv4Addr = pod_ip(&cluster.pods(DEMO_NAMESPACE, Some("app=echo"))[0])
        .parse()
        .expect("an IPv4 pod IP");
    assert!(cluster.is_pod_ip(ip.into()));
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind to the pod's IP");
    let mut conn = bounded("connect from the pod IP", socket.connect(external))
        .await
        .expect("connect from the pod's IP");
    conn.write_all(
        b"GET / HTTP/1.1\r\nHost: private.example.internal\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("send the request");
    let (code, body) = bounded("the external host's answer", read_http_response(&mut conn)).await;
    assert_eq!(code, 200);
    assert_eq!(body, format!("hello from {DEMO_EXTERNAL_HOST} to {ip}\n"));
}
