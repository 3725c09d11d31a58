//! The PROXY protocol through kforward, against real peers: HAProxy and nginx behind a
//! testkit passthrough pod (a service forward) and behind the relay (a remote-address
//! forward) must see the local client's address, with v1 and with v2; and
//! `accept_proxy_protocol` with curl's `--haproxy-protocol` as the client.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kforward_core::proxy_protocol::{Accept, Addresses, Version, encode};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::supervisor::{Supervisor, SupervisorOptions};
use kforward_core::{Forward, Forwarder, KubeContext};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::peers::{Peer, haproxy, nginx, tool};

/// Makes deployment and service `name` in demo: one passthrough pod whose port 8080 goes
/// to `to`, behind service port 80.
async fn passthrough(cluster: &Cluster, name: &str, to: SocketAddr) {
    let mut d =
        kforward_testkit::deployment(name, "kforward/passthrough", 1, &[("http", 8080, "TCP")]);
    if let Some(pod) = d.spec.template.spec.as_mut() {
        pod.containers[0].env = Some(vec![EnvVar {
            name: "PASSTHROUGH_TARGET".into(),
            value: Some(to.to_string()),
            ..Default::default()
        }]);
    }
    cluster.create_deployment("demo", &d).expect("deployment");
    let svc = kforward_testkit::service(name, name, &[("http", 80, IntOrString::Int(8080), "TCP")]);
    cluster.create_service("demo", &svc).expect("service");
    cluster
        .wait_deployment_ready("demo", name, WAIT)
        .await
        .expect("passthrough pod ready");
}

async fn started(ctx: &KubeContext, spec: ForwardSpec) -> (Forward, SocketAddr) {
    let mut f = Forward::new(ctx.clone(), spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("forward starts");
    (f, bound[0].local_addr)
}

/// One GET through `addr`, optionally after `header`; the client's own address and the
/// reply.
async fn get(addr: SocketAddr, header: &[u8]) -> (SocketAddr, String) {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let me = s.local_addr().expect("local addr");
        s.write_all(header).await.expect("header");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply).await;
        (me, reply)
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("reply in time")
}

/// Checks that `peer`, reached through `forward_addr`, answers and logs the client's own
/// address and port.
async fn sees_the_client(peer: &Peer, name: &str, forward_addr: SocketAddr, what: &str) {
    let (me, reply) = get(forward_addr, b"").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{what}: {reply:?}");
    assert!(
        reply.contains(&format!("{name} saw {me}")),
        "{what}: {name} should see {me}: {reply:?}"
    );
    peer.logged(&format!("client={me}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_and_nginx_see_the_local_client_with_v1_and_v2() {
    let (Some(haproxy_bin), Some(nginx_bin)) = (tool("haproxy"), tool("nginx")) else {
        return;
    };
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let peers = [
        ("haproxy", haproxy(&haproxy_bin).await),
        ("nginx", nginx(&nginx_bin).await),
    ];
    for (name, peer) in &peers {
        passthrough(&cluster, name, peer.addr).await;
        for version in [Version::V1, Version::V2] {
            // A service forward: kforward writes the header into the pod stream.
            let svc = spec(&format!("svc/{name}"), 0, 80).with_proxy_protocol(version);
            let (mut f, addr) = started(&ctx, svc).await;
            sees_the_client(peer, name, addr, &format!("svc/{name} {version}")).await;
            f.stop().await;
            // A remote-address forward: the header goes through the relay.
            let remote = ForwardSpec::new(
                Target::Remote {
                    host: peer.addr.ip().to_string(),
                },
                [PortMapping::new(0, peer.addr.port())],
            )
            .with_namespace("demo")
            .with_proxy_protocol(version);
            let (mut f, addr) = started(&ctx, remote).await;
            sees_the_client(peer, name, addr, &format!("proxy to {name} {version}")).await;
            f.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_accept_drops_a_client_without_a_header_and_serves_the_others() {
    let (Some(nginx_bin), Some(curl)) = (tool("nginx"), tool("curl")) else {
        return;
    };
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let peer = nginx(&nginx_bin).await;
    passthrough(&cluster, "nginx", peer.addr).await;
    let svc = spec("svc/nginx", 0, 80)
        .with_proxy_protocol(Version::V1)
        .with_accept_proxy_protocol(Accept::Strict);
    let (mut f, addr) = started(&ctx, svc).await;
    let curl_get = |with_header: bool| {
        let curl = curl.clone();
        let url = format!("http://{addr}/");
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(&curl);
            c.args(["-sS", "--max-time", "20", &url]);
            if with_header {
                c.arg("--haproxy-protocol");
            }
            c.output().expect("curl runs")
        })
    };
    // curl's header names curl itself; nginx sees that address.
    let out = curl_get(true).await.expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(body.starts_with("nginx saw 127.0.0.1:"), "{body}");
    // A client that names another one: the target sees the original client.
    let original = Addresses {
        source: "203.0.113.9:4711".parse().expect("addr"),
        destination: addr,
    };
    for version in [Version::V1, Version::V2] {
        let (_, reply) = get(addr, &encode(version, Some(original))).await;
        assert!(
            reply.contains("nginx saw 203.0.113.9:4711"),
            "{version}: {reply}"
        );
    }
    peer.logged("client=203.0.113.9:4711").await;
    // Without a header: closed, nothing reaches nginx.
    let (_, reply) = get(addr, b"").await;
    assert_eq!(reply, "", "a client without a header is dropped");
    let out = curl_get(false).await.expect("curl");
    assert!(
        !out.status.success(),
        "curl without a header fails: {out:?}"
    );
    // And the others are still served.
    let out = curl_get(true).await.expect("curl");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("nginx saw 127.0.0.1:"),
        "{out:?}"
    );
    let stats = f.stats();
    assert_eq!(stats.connections_failed, 2, "{stats:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_accept_takes_a_header_when_there_is_one() {
    let Some(nginx_bin) = tool("nginx") else {
        return;
    };
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let peer = nginx(&nginx_bin).await;
    passthrough(&cluster, "nginx", peer.addr).await;
    let svc = spec("svc/nginx", 0, 80)
        .with_proxy_protocol(Version::V2)
        .with_accept_proxy_protocol(Accept::Optional);
    let (mut f, addr) = started(&ctx, svc).await;
    let original = Addresses {
        source: "[2001:db8::5]:4711".parse().expect("addr"),
        destination: addr,
    };
    let (_, reply) = get(addr, &encode(Version::V1, Some(original))).await;
    assert!(reply.contains("nginx saw 2001:db8::5:4711"), "{reply}");
    sees_the_client(&peer, "nginx", addr, "no header, optional").await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_send_a_local_header_so_the_target_does_not_count_them_as_clients() {
    let cluster = demo().await;
    // The target: a plain listener that reads what each connection starts with.
    let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    passthrough(&cluster, "plain", target.local_addr().expect("addr")).await;
    let sup = Supervisor::new(SupervisorOptions {
        probe_interval: Duration::from_millis(200),
        ..Default::default()
    });
    let id = sup.add(
        spec("svc/plain", 0, 80)
            .with_proxy_protocol(Version::V2)
            .with_kubeconfig(cluster.kubeconfig_path()),
    );
    let first = async {
        let (mut s, _) = target.accept().await.expect("accept");
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.expect("16 bytes");
        head
    };
    let head = tokio::time::timeout(WAIT, first)
        .await
        .expect("a probe in time");
    assert_eq!(
        head.to_vec(),
        encode(Version::V2, None),
        "a v2 LOCAL header"
    );
    assert!(sup.status_of(id).is_some());
    sup.shutdown().await;
}

#[tokio::test]
async fn udp_with_a_proxy_protocol_setting_is_refused() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let udp = spec("svc/dns", 0, 5353)
        .with_protocol(kforward_core::spec::Protocol::Udp)
        .with_proxy_protocol(Version::V1);
    let mut f = Forward::new(ctx, udp, quick());
    let err = f.start().await.expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("--proxy-protocol (proxy_protocol) works for TCP forwards only"),
        "{err}"
    );
}
