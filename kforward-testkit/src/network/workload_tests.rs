//! Tests of pod workloads over real loopback sockets.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;
use crate::network::AddressPool;
use crate::network::http::pattern_byte;

/// Upper bound for every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("test step timed out")
}

fn spec(image: &str, ip: Ipv4Addr, ports: &[(u16, Protocol)]) -> WorkloadSpec {
    WorkloadSpec {
        image: image.into(),
        pod_name: "web-7d4b9-x2x9q".into(),
        namespace: "demo".into(),
        pod_ip: ip,
        ports: ports
            .iter()
            .map(|&(port, protocol)| ContainerPort { port, protocol })
            .collect(),
        env: BTreeMap::new(),
    }
}

/// A parsed HTTP response: status, lower-cased headers, body.
type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> HttpResponse {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("header colon");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("body");
    (status, headers, body)
}

fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .1
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn image_names_pick_the_workload() {
    use WorkloadKind::*;
    for (image, kind) in [
        ("kforward/http:1", Http),
        ("ghcr.io/x/kforward-http", Http),
        ("localhost:5000/kforward/echo:2", Echo),
        ("kforward/udp-echo", UdpEcho),
        ("kforward/passthrough@sha256:abc", Passthrough),
        ("kforward/sleep:1", Sleep),
        ("nginx:1.27", Sleep),
        ("kforward/xhttp", Sleep),
        ("http/nginx", Sleep),
    ] {
        assert_eq!(WorkloadKind::from_image(image), kind, "{image}");
    }
}

#[tokio::test]
async fn http_pod_serves_name_bytes_and_echo_with_keep_alive() {
    let ip = AddressPool::new().next_pod_ip();
    let pod = bounded(start_workload(spec(
        "kforward/http:1",
        ip,
        &[(8080, Protocol::Tcp)],
    )))
    .await
    .expect("start http pod");
    let stream = bounded(TcpStream::connect((ip, 8080)))
        .await
        .expect("connect");
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);

    bounded(writer.write_all(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n"))
        .await
        .expect("send");
    let root = bounded(read_response(&mut reader)).await;
    assert_eq!(root.0, 200);
    assert_eq!(root.2, b"web-7d4b9-x2x9q\n");
    assert_eq!(header(&root, "x-pod-name"), Some("web-7d4b9-x2x9q"));
    assert!(header(&root, "content-type").is_some_and(|v| v.starts_with("text/plain")));

    let n = 300_000u64;
    let request = format!("GET /bytes/{n} HTTP/1.1\r\nHost: pod\r\n\r\n");
    bounded(writer.write_all(request.as_bytes()))
        .await
        .expect("send");
    let bytes = bounded(read_response(&mut reader)).await;
    assert_eq!(bytes.0, 200);
    assert_eq!(bytes.2.len() as u64, n);
    assert!(
        bytes
            .2
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i as u64))
    );

    let body = vec![7u8; 100_000];
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: pod\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    bounded(writer.write_all(head.as_bytes()))
        .await
        .expect("send");
    bounded(writer.write_all(&body)).await.expect("send body");
    let echoed = bounded(read_response(&mut reader)).await;
    assert_eq!((echoed.0, echoed.2 == body), (200, true));

    bounded(writer.write_all(b"GET /nope HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n"))
        .await
        .expect("send");
    let missing = bounded(read_response(&mut reader)).await;
    assert_eq!(missing.0, 404);
    let mut rest = Vec::new();
    let closed = bounded(reader.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    assert_eq!(closed, 0, "server closes after Connection: close");
    bounded(pod.stop()).await;
}

#[tokio::test]
async fn echo_pod_echoes_a_mebibyte_and_half_closes() {
    let ip = AddressPool::new().next_pod_ip();
    let pod = bounded(start_workload(spec(
        "kforward/echo",
        ip,
        &[(7007, Protocol::Tcp)],
    )))
    .await
    .expect("start echo pod");
    let stream = bounded(TcpStream::connect((ip, 7007)))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let expected = sent.clone();
    let write = tokio::spawn(async move {
        bounded(writer.write_all(&sent)).await.expect("write");
        writer.shutdown().await.expect("half-close");
    });
    let mut received = Vec::new();
    bounded(reader.read_to_end(&mut received))
        .await
        .expect("read echo");
    bounded(write).await.expect("writer task");
    assert_eq!(received.len(), expected.len());
    assert!(received == expected);
    drop(pod);
}

#[tokio::test]
async fn udp_echo_pod_repeats_on_request() {
    let ip = AddressPool::new().next_pod_ip();
    let ports = [(5353, Protocol::Udp), (5353, Protocol::Tcp)];
    let pod = bounded(start_workload(spec("kforward/udp-echo:1", ip, &ports)))
        .await
        .expect("start udp-echo pod");
    assert_eq!(pod.listening().len(), 2);
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    client.connect((ip, 5353)).await.expect("connect");
    client.send(b"repeat=3;ping").await.expect("send");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let len = bounded(client.recv(&mut buf)).await.expect("reply");
        assert_eq!(&buf[..len], b"repeat=3;ping");
    }
    client.send(b"once").await.expect("send");
    let len = bounded(client.recv(&mut buf)).await.expect("reply");
    assert_eq!(&buf[..len], b"once");
    bounded(pod.stop()).await;
}

#[tokio::test]
async fn passthrough_reaches_target_from_the_pod_ip() {
    let ip = AddressPool::new().next_pod_ip();
    let target = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let target_addr = target.local_addr().expect("target addr");
    let udp_target = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind udp target");
    let udp_target_addr = udp_target.local_addr().expect("udp target addr");
    let mut spec = spec(
        "kforward/passthrough",
        ip,
        &[(5432, Protocol::Tcp), (5300, Protocol::Udp)],
    );
    spec.env
        .insert(PASSTHROUGH_TARGET.into(), target_addr.to_string());
    spec.env.insert(
        format!("{PASSTHROUGH_TARGET}_5300"),
        udp_target_addr.to_string(),
    );
    let pod = bounded(start_workload(spec))
        .await
        .expect("start passthrough pod");

    let mut client = bounded(TcpStream::connect((ip, 5432)))
        .await
        .expect("connect");
    let (mut upstream, seen) = bounded(target.accept()).await.expect("accept at target");
    assert_eq!(
        seen.ip(),
        std::net::IpAddr::V4(ip),
        "target sees the pod IP"
    );
    bounded(client.write_all(b"hello")).await.expect("send");
    let mut buf = [0u8; 5];
    bounded(upstream.read_exact(&mut buf))
        .await
        .expect("read at target");
    assert_eq!(&buf, b"hello");
    bounded(upstream.write_all(b"world")).await.expect("reply");
    bounded(client.read_exact(&mut buf))
        .await
        .expect("read reply");
    assert_eq!(&buf, b"world");

    let udp_client = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind udp client");
    udp_client
        .send_to(b"q", (ip, 5300))
        .await
        .expect("send udp");
    let mut dgram = [0u8; 16];
    let (len, from) = bounded(udp_target.recv_from(&mut dgram))
        .await
        .expect("udp at target");
    assert_eq!(
        (&dgram[..len], from.ip()),
        (&b"q"[..], std::net::IpAddr::V4(ip))
    );
    udp_target.send_to(b"a", from).await.expect("udp reply");
    let (len, from) = bounded(udp_client.recv_from(&mut dgram))
        .await
        .expect("udp reply back");
    assert_eq!(
        (&dgram[..len], from),
        (&b"a"[..], SocketAddr::from((ip, 5300)))
    );
    bounded(pod.stop()).await;
}

#[tokio::test]
async fn passthrough_without_target_is_a_config_error() {
    let ip = AddressPool::new().next_pod_ip();
    let result = start_workload(spec("kforward/passthrough", ip, &[(8080, Protocol::Tcp)])).await;
    assert!(
        matches!(result, Err(NetworkError::BadImageConfig { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn sleep_pod_refuses_connections() {
    let ip = AddressPool::new().next_pod_ip();
    let pod = bounded(start_workload(spec(
        "kforward/sleep",
        ip,
        &[(8080, Protocol::Tcp)],
    )))
    .await
    .expect("start sleep pod");
    assert!(pod.listening().is_empty());
    let result = bounded(TcpStream::connect((ip, 8080))).await;
    assert_eq!(
        result.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
}

#[tokio::test]
async fn stop_closes_live_connections_and_listeners() {
    let ip = AddressPool::new().next_pod_ip();
    let pod = bounded(start_workload(spec(
        "kforward/echo",
        ip,
        &[(9000, Protocol::Tcp)],
    )))
    .await
    .expect("start echo pod");
    let mut client = bounded(TcpStream::connect((ip, 9000)))
        .await
        .expect("connect");
    bounded(client.write_all(b"x")).await.expect("send");
    let mut one = [0u8; 1];
    bounded(client.read_exact(&mut one))
        .await
        .expect("echo before stop");
    bounded(pod.stop()).await;
    let mut buf = [0u8; 1];
    let after = bounded(client.read(&mut buf)).await;
    assert!(
        matches!(after, Ok(0) | Err(_)),
        "connection closed: {after:?}"
    );
    let refused = bounded(TcpStream::connect((ip, 9000))).await;
    assert!(refused.is_err(), "listener closed");
}

#[tokio::test]
async fn bind_conflict_names_the_address() {
    let ip = AddressPool::new().next_pod_ip();
    let _first = bounded(start_workload(spec(
        "kforward/echo",
        ip,
        &[(8181, Protocol::Tcp)],
    )))
    .await
    .expect("start first pod");
    let second = start_workload(spec("kforward/http", ip, &[(8181, Protocol::Tcp)])).await;
    let error = second.expect_err("port is taken");
    assert!(error.is_addr_in_use(), "{error}");
    assert!(error.to_string().contains(&format!("{ip}:8181")), "{error}");
}
