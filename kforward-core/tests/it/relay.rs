//! UDP and proxy forwards through the in-cluster relay (the testkit's relay pods run the real
//! relay server).

use std::net::SocketAddr;
use std::time::Duration;

use kforward_core::relay::protocol::Transport;
use kforward_core::relay::{RelayConnector, RelayOptions, RelayPods};
use kforward_core::spec::{ForwardSpec, PortMapping, Protocol, Target};
use kforward_core::{Forward, Forwarder};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::*;

const RELAY_SELECTOR: &str = "app.kubernetes.io/name=kforward-relay";

fn udp_spec(target: Target, remote: u16) -> ForwardSpec {
    ForwardSpec::new(target, [PortMapping::new(0, remote)])
        .with_namespace("demo")
        .with_protocol(Protocol::Udp)
}

async fn start_udp(ctx: &kforward_core::KubeContext, spec: ForwardSpec) -> (Forward, SocketAddr) {
    let mut f = Forward::new(ctx.clone(), spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("udp forward starts");
    (f, bound[0].local_addr)
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind client")
}

/// Sends `msg` and waits for its echo, resending a few times (a new session may be opening).
async fn ask(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    for _ in 0..20 {
        sock.send_to(msg, to).await.expect("send");
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf)).await {
            return buf[..r.expect("recv")].to_vec();
        }
    }
    panic!("no reply to {:?}", String::from_utf8_lossy(msg));
}

fn relay_pods(cluster: &Cluster) -> Vec<String> {
    cluster
        .pods("demo", Some(RELAY_SELECTOR))
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

async fn wait_no_relay_pods(cluster: &Cluster) {
    cluster
        .wait_for("relay pods to be deleted", WAIT, |c| {
            c.pods("demo", Some(RELAY_SELECTOR)).is_empty()
        })
        .await
        .expect("relay pod deleted after stop");
}

#[tokio::test]
async fn ten_thousand_udp_datagrams_through_svc_dns_none_lost() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, addr) =
        start_udp(&ctx, udp_spec(Target::Service { name: "dns".into() }, 5353)).await;
    assert_eq!(relay_pods(&cluster).len(), 1, "one relay pod while running");
    let sock = client().await;
    // The first answer opens the session; after that, each datagram waits for its echo.
    assert_eq!(ask(&sock, addr, b"warm-up").await, b"warm-up");
    let mut buf = vec![0u8; 2048];
    let work = async {
        for i in 0..10_000u32 {
            let msg = format!("datagram {i}");
            sock.send_to(msg.as_bytes(), addr).await.expect("send");
            let n = sock.recv(&mut buf).await.expect("recv");
            assert_eq!(&buf[..n], msg.as_bytes(), "echo of datagram {i}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("10,000 echoes in time");
    tokio::time::timeout(WAIT, f.stop()).await.expect("stops");
    wait_no_relay_pods(&cluster).await;
}

#[tokio::test]
async fn udp_peers_each_get_only_their_replies_and_repeats_arrive() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, addr) =
        start_udp(&ctx, udp_spec(Target::Service { name: "dns".into() }, 5353)).await;
    let mut peers = Vec::new();
    for _ in 0..4 {
        peers.push(client().await);
    }
    for (p, sock) in peers.iter().enumerate() {
        let msg = format!("hello from peer {p}");
        assert_eq!(ask(sock, addr, msg.as_bytes()).await, msg.as_bytes());
    }
    // Interleaved traffic: every peer sends, then every peer reads only its own.
    for round in 0..20 {
        for (p, sock) in peers.iter().enumerate() {
            sock.send_to(format!("peer {p} round {round}").as_bytes(), addr)
                .await
                .expect("send");
        }
        for (p, sock) in peers.iter().enumerate() {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
                .await
                .expect("reply in time")
                .expect("recv");
            assert_eq!(&buf[..n], format!("peer {p} round {round}").as_bytes());
        }
    }
    // Several replies to one datagram.
    let sock = &peers[0];
    sock.send_to(b"repeat=3;many", addr).await.expect("send");
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("each of 3 replies in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"repeat=3;many");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), peers[1].recv(&mut buf))
            .await
            .is_err(),
        "other peers get nothing"
    );
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

/// Datagram `seq` of `peer`: its numbers, then a pattern both depend on. Each burst of
/// [`BURST`] has one of 60,000 bytes and one of 9,000; the rest are 6 to 1,400 bytes.
fn burst_datagram(peer: u8, seq: u32) -> Vec<u8> {
    let len = match seq % BURST {
        0 => 60_000,
        25 => 9_000,
        _ => 6 + (seq as usize * 37) % 1_400,
    };
    let mut d = vec![peer];
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend((d.len()..len).map(|i| (i as u32 ^ seq) as u8 ^ peer));
    d
}

/// Datagrams a peer sends at once before it reads the echoes.
const BURST: u32 = 50;

/// A UDP echo on a thread of its own, on the host's loopback (the relay pod reaches it as
/// a destination outside the cluster): answers every datagram at once, as a DNS server.
fn loopback_echo() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind echo");
    // Room for the three peers' bursts at once (Linux caps it at `net.core.rmem_max`).
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
    let addr = sock.local_addr().expect("echo address");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        // Ends 5 s after the last datagram.
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Three local peers at once, each sending 1,000 datagrams (of 6 bytes to 60,000) in bursts
/// of 50 sent back to back before reading: every datagram comes back to its own peer,
/// intact and in order. The relay and the client batch what is queued into one message;
/// this checks that batches split and join at the right places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_udp_datagrams_arrive_whole_and_in_order_per_peer() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = loopback_echo();
    let spec = udp_spec(
        Target::Remote {
            host: echo.ip().to_string(),
        },
        echo.port(),
    )
    .with_addresses(["127.0.0.1".parse().expect("ip")]);
    let (mut f, addr) = start_udp(&ctx, spec).await;
    let peer = |p: u8| async move {
        let sock = client().await;
        // The session opens on the first datagram.
        assert_eq!(ask(&sock, addr, b"warm-up").await, b"warm-up");
        let mut buf = vec![0u8; 65_536];
        for first in (0..1000).step_by(BURST as usize) {
            for seq in first..first + BURST {
                sock.send_to(&burst_datagram(p, seq), addr)
                    .await
                    .expect("send");
            }
            for seq in first..first + BURST {
                // A warm-up sent again while the session opened may echo late.
                let n = loop {
                    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("peer {p}: no echo of datagram {seq}"))
                        .expect("recv");
                    if &buf[..n] != b"warm-up" {
                        break n;
                    }
                };
                assert!(
                    buf[..n] == burst_datagram(p, seq),
                    "peer {p}: datagram {seq} came back as {n} bytes starting {:?}",
                    &buf[..n.min(5)]
                );
            }
        }
    };
    let peers = [0u8, 1, 2].map(|p| tokio::spawn(peer(p)));
    for p in peers {
        tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .expect("every burst in time")
            .expect("peer");
    }
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

#[tokio::test]
async fn tcp_proxy_reaches_a_host_only_pods_can_reach() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let host = kforward_testkit::DEMO_EXTERNAL_HOST;
    let real = cluster.external_host_addr(host).expect("external host");
    // Directly, the host resets us.
    let mut direct = TcpStream::connect(real).await.expect("connect");
    let _ = direct.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut out = Vec::new();
    assert!(
        matches!(direct.read_to_end(&mut out).await, Err(_) | Ok(0)),
        "a direct connection is refused"
    );
    let spec = ForwardSpec::new(
        Target::Remote { host: host.into() },
        [PortMapping::new(0, real.port())],
    )
    .with_namespace("demo");
    let mut f = Forward::new(ctx, spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("proxy starts");
    let relay_ip = cluster.pods("demo", Some(RELAY_SELECTOR))[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("relay pod ip");
    for _ in 0..3 {
        let reply = http_get(bound[0].local_addr, host).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            reply.contains(&format!("hello from {host} to {relay_ip}")),
            "{reply}"
        );
    }
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

#[tokio::test]
async fn udp_proxy_reaches_a_host_only_pods_can_reach() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let host = kforward_testkit::DEMO_EXTERNAL_HOST;
    let real = cluster.external_host_udp_addr(host).expect("external udp");
    let spec = ForwardSpec::new(
        Target::Remote { host: host.into() },
        [PortMapping::new(0, real.port())],
    )
    .with_namespace("demo")
    .with_protocol(Protocol::Udp);
    let mut f = Forward::new(ctx, spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("starts");
    let sock = client().await;
    assert_eq!(
        ask(&sock, bound[0].local_addr, b"private ping").await,
        b"private ping"
    );
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

#[tokio::test]
async fn an_unresolvable_name_gives_a_clear_error() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let pods = RelayPods::new(ctx, RelayOptions::default());
    let conn = RelayConnector::new(pods.clone(), "demo");
    let err = tokio::time::timeout(
        WAIT,
        conn.connect(Transport::Tcp, "db.nowhere.internal", 5432, "test"),
    )
    .await
    .expect("in time")
    .expect_err("no such name");
    assert!(
        err.to_string()
            .starts_with("could not resolve \"db.nowhere.internal\" from inside the cluster"),
        "{err}"
    );
    assert!(!err.is_retryable());
    pods.delete_all().await;
    wait_no_relay_pods(&cluster).await;
}

#[tokio::test]
async fn a_relay_pod_deleted_mid_session_is_replaced() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, addr) =
        start_udp(&ctx, udp_spec(Target::Service { name: "dns".into() }, 5353)).await;
    let sock = client().await;
    assert_eq!(ask(&sock, addr, b"before").await, b"before");
    let old = relay_pods(&cluster);
    assert_eq!(old.len(), 1);
    cluster
        .delete_pod("demo", &old[0])
        .expect("delete relay pod");
    // The session breaks with the pod; the next datagrams get a new relay pod.
    let work = async {
        loop {
            let reply = ask(&sock, addr, b"after").await;
            if reply == b"after" {
                let now = relay_pods(&cluster);
                if now.len() == 1 && now[0] != old[0] {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("recovers with a new relay pod");
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

/// One `GET /` with `Host: host` through `addr`; the whole reply.
async fn http_get(addr: std::net::SocketAddr, host: &str) -> String {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut reply = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    reply
}

fn phase(cluster: &Cluster, name: &str) -> Option<String> {
    cluster
        .pods("demo", Some(RELAY_SELECTOR))
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.status.and_then(|s| s.phase))
}

#[tokio::test]
async fn an_idle_relay_exits_and_the_next_connection_gets_a_new_pod() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let opts = kforward_core::ForwardOptions {
        relay: RelayOptions {
            idle_exit: Duration::from_millis(500),
            ..RelayOptions::default()
        },
        ..quick()
    };
    let host = kforward_testkit::DEMO_EXTERNAL_HOST;
    let real = cluster.external_host_addr(host).expect("external host");
    let spec = ForwardSpec::new(
        Target::Remote { host: host.into() },
        [PortMapping::new(0, real.port())],
    )
    .with_namespace("demo");
    let mut f = Forward::new(ctx, spec, opts);
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("proxy starts");
    let get = || http_get(bound[0].local_addr, host);
    assert!(get().await.starts_with("HTTP/1.1 200"));
    let first = relay_pods(&cluster);
    assert_eq!(first.len(), 1);
    // No client for half a second: the relay exits and the kubelet reports its pod
    // completed (restartPolicy Never).
    cluster
        .wait_for("the idle relay's pod to complete", WAIT, |c| {
            phase(c, &first[0]).as_deref() == Some("Succeeded")
        })
        .await
        .expect("relay exited when idle");
    // The next connection is carried by a new relay pod; the completed one is removed.
    assert!(get().await.starts_with("HTTP/1.1 200"));
    let now = relay_pods(&cluster);
    assert!(!now.contains(&first[0]), "{now:?}");
    cluster
        .wait_for("the completed relay pod to be deleted", WAIT, |c| {
            phase(c, &first[0]).is_none()
        })
        .await
        .expect("completed pod deleted");
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

/// A headless service has no ClusterIP to send to, and its name resolves to the pods, which
/// listen on the target port, not the service port: a UDP forward goes to a ready pod's
/// address and target port, as for the other pod targets.
#[tokio::test]
async fn udp_to_a_headless_service_reaches_its_pods_target_port() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dns-direct"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "dns"},
            "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}],
        },
    }))
    .expect("a service");
    cluster
        .create_service("demo", &svc)
        .expect("create the headless service");
    let target = Target::Service {
        name: "dns-direct".into(),
    };
    let (mut f, addr) = start_udp(&ctx, udp_spec(target, 53)).await;
    let sock = client().await;
    assert_eq!(
        ask(&sock, addr, b"through dns-direct").await,
        b"through dns-direct"
    );
    f.stop().await;
}

/// A TCP server on the host's loopback (the relay pod reaches it as a destination outside
/// the cluster) that answers only after the client's EOF, as `wc -c` or a checksum service
/// does: the number of bytes it read, then it closes.
async fn count_after_eof() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(k) => n += k as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(format!("{n}\n").as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A remote-address forward (through the relay).
async fn start_remote(ctx: &kforward_core::KubeContext, dest: SocketAddr) -> (Forward, SocketAddr) {
    let spec = ForwardSpec::new(
        Target::Remote {
            host: dest.ip().to_string(),
        },
        [PortMapping::new(0, dest.port())],
    )
    .with_namespace("demo");
    let mut f = Forward::new(ctx.clone(), spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("remote forward starts");
    (f, bound[0].local_addr)
}

/// Through a remote-address forward, a client that sends N bytes and shuts its write side
/// gets what the destination sends only after its EOF, then EOF, for N = 1 B, 256 KiB and
/// 64 MiB. Neither the `v4.channel.k8s.io` tunnel to the relay nor a container runtime
/// passes a half-close on; the relay's framed TCP does (before it, the destination never
/// saw EOF and the client got nothing but kforward's EOF after 15 s of quiet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_reaches_a_relayed_destination_and_its_answer_then_eof_come_back() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let dest = count_after_eof().await;
    let (mut f, addr) = start_remote(&ctx, dest).await;
    for n in [1usize, 256 << 10, 64 << 20] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let data = vec![7u8; n];
        let exchange = async {
            s.write_all(&data).await?;
            s.shutdown().await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            std::io::Result::Ok(out)
        };
        let got = tokio::time::timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{n} bytes: no answer and EOF in time"))
            .expect("the exchange");
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{n}\n"),
            "{n} bytes: the destination's answer after the half-close"
        );
    }
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

/// The destination ends its writes first: the client gets its bytes, then EOF, and what the
/// client sends after that still reaches the destination, whose EOF comes when the client
/// shuts its write side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_destination_that_ends_first_still_gets_the_clients_bytes() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dest = l.local_addr().expect("address");
    let (count_tx, count_rx) = tokio::sync::oneshot::channel::<u64>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let _ = s.write_all(b"bye\n").await;
        let _ = s.shutdown().await;
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k @ 1..) = s.read(&mut buf).await {
            n += k as u64;
        }
        let _ = count_tx.send(n);
    });
    let (mut f, addr) = start_remote(&ctx, dest).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the destination's bytes and EOF in time")
        .expect("read");
    assert_eq!(got, b"bye\n");
    let data = vec![9u8; 100_000];
    s.write_all(&data).await.expect("write after the EOF");
    s.shutdown().await.expect("shutdown");
    let n = tokio::time::timeout(WAIT, count_rx)
        .await
        .expect("the destination saw EOF in time")
        .expect("count");
    assert_eq!(n, 100_000);
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}

/// A relay image from before framed TCP (the testkit runs images tagged `0.0.x` as one)
/// refuses it as a bad request: the connection is asked for again as plain TCP and works,
/// and so do the ones after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_from_before_framed_tcp_gets_plain_tcp() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let host = kforward_testkit::DEMO_EXTERNAL_HOST;
    let real = cluster.external_host_addr(host).expect("external host");
    let spec = ForwardSpec::new(
        Target::Remote { host: host.into() },
        [PortMapping::new(0, real.port())],
    )
    .with_namespace("demo");
    let opts = kforward_core::ForwardOptions {
        relay: RelayOptions {
            image: "ghcr.io/kforward/kforward-relay:0.0.9".into(),
            ..RelayOptions::default()
        },
        ..quick()
    };
    let mut f = Forward::new(ctx, spec, opts);
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("starts");
    for _ in 0..3 {
        let reply = http_get(bound[0].local_addr, host).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    f.stop().await;
    wait_no_relay_pods(&cluster).await;
}
