//! Forwarding through real sockets: HTTP, bulk data, concurrency, half-close, targets.

use std::collections::HashSet;

use kforward_core::Forwarder;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test]
async fn http_through_svc_web_reaches_a_web_pod() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("svc/web", 0, 80)).await;
    assert_eq!(bound.len(), 1);
    assert_eq!(
        bound[0].pod_port,
        Some(8080),
        "named targetPort http resolves to 8080"
    );
    let body = http_get(bound[0].local_addr, "/").await;
    let pods: Vec<String> = cluster
        .pods("demo", Some("app=web"))
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        pods.contains(&body.trim().to_string()),
        "{body:?} not in {pods:?}"
    );
    f.stop().await;
}

#[tokio::test]
async fn connections_spread_over_both_web_pods() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("svc/web", 0, 80)).await;
    let mut seen = HashSet::new();
    for _ in 0..10 {
        seen.insert(http_get(bound[0].local_addr, "/").await);
    }
    assert_eq!(seen.len(), 2, "both pods answered: {seen:?}");
    f.stop().await;
}

#[tokio::test]
async fn sixty_four_mib_through_svc_echo_arrive_intact() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("svc/echo", 0, 7000)).await;
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let want = Sha256::digest(&data);
    let s = TcpStream::connect(bound[0].local_addr)
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w
    });
    let mut got = Sha256::new();
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(WAIT * 4, async {
        while n < 64 << 20 {
            let k = r.read(&mut buf).await.expect("read");
            assert!(k > 0, "EOF after {n} bytes");
            got.update(&buf[..k]);
            n += k;
        }
    })
    .await
    .expect("64 MiB echoed in time");
    let _w = writer.await.expect("writer");
    assert_eq!(got.finalize(), want);
    f.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_connections() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("svc/echo", 0, 7000)).await;
    let addr = bound[0].local_addr;
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let msg = format!("hello {i} ").repeat(100);
            s.write_all(msg.as_bytes()).await.expect("write");
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).await.expect("read");
            assert_eq!(back, msg.as_bytes());
        }));
    }
    tokio::time::timeout(WAIT * 2, async {
        for t in tasks {
            t.await.expect("connection task");
        }
    })
    .await
    .expect("100 connections in time");
    assert_eq!(f.stats().connections_total, 100);
    f.stop().await;
}

#[tokio::test]
async fn half_close_still_gets_the_whole_reply() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("svc/web", 0, 80)).await;
    // An HTTP/1.0-style client: send the request, shut the write side, read to the end.
    let mut s = TcpStream::connect(bound[0].local_addr)
        .await
        .expect("connect");
    s.write_all(b"GET /bytes/1000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    s.shutdown().await.expect("shutdown write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("reply in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out[..out.len().min(200)]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = out.split(|_| false).next().map_or(0, |_| {
        out.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| out.len() - p - 4)
    });
    assert_eq!(body, 1_000_000);
    f.stop().await;
}

#[tokio::test]
async fn named_port_pod_by_name_selector_and_deployment() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = cluster.pods("demo", Some("app=web"));
    let name = web[0].metadata.name.clone().expect("pod name");
    // A pod by name, with the container port's name.
    let mut by_name = kforward_core::Forward::new(
        ctx.clone(),
        kforward_core::spec::ForwardSpec::new(
            kforward_core::spec::Target::Pod { name: name.clone() },
            [kforward_core::spec::PortMapping::parse_kubectl(":http").expect("port")],
        )
        .with_namespace("demo"),
        quick(),
    );
    let b = by_name.start().await.expect("pod by name");
    assert_eq!(http_get(b[0].local_addr, "/").await.trim(), name);
    by_name.stop().await;
    // A pod by label selector (kftray's workload_type pod with target).
    let cfg: kforward_core::config::ForwardConfig = serde_json::from_value(serde_json::json!({
        "namespace": "demo", "workload_type": "pod", "target": "app=web",
        "local_port": 0, "remote_port": 8080, "protocol": "tcp"
    }))
    .expect("config");
    let from_cfg = kforward_core::spec::ForwardSpec::try_from(&cfg).expect("spec");
    let (mut sel, b) = start(&ctx, from_cfg).await;
    assert!(http_get(b[0].local_addr, "/").await.starts_with("web-"));
    sel.stop().await;
    // deploy/web.
    let (mut dep, b) = start(&ctx, spec("deploy/web", 0, 8080)).await;
    assert!(http_get(b[0].local_addr, "/").await.starts_with("web-"));
    dep.stop().await;
}

#[tokio::test]
async fn two_forwards_in_one_process() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut web, bw) = start(&ctx, spec("svc/web", 0, 80)).await;
    let (mut echo, be) = start(&ctx, spec("svc/echo", 0, 7000)).await;
    assert!(http_get(bw[0].local_addr, "/").await.starts_with("web-"));
    let mut s = TcpStream::connect(be[0].local_addr).await.expect("connect");
    s.write_all(b"ping").await.expect("write");
    let mut b = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&b, b"ping");
    web.stop().await;
    echo.stop().await;
}

/// The library's tunnel used directly, as a tool that embeds kforward would: a write goes
/// out without a flush (write, then read the reply), and the halves from `into_split` carry
/// a checksummed MiB through the echo pod from two tasks, read with `read_chunk`.
#[tokio::test]
async fn tunnel_used_directly_writes_without_flush_and_splits() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let pod = |app: &str| {
        cluster.pods("demo", Some(&format!("app={app}")))[0]
            .metadata
            .name
            .clone()
            .expect("name")
    };
    let mut t = kforward_core::Tunnel::open(&ctx, "demo", &pod("web"), 8080)
        .await
        .expect("tunnel to web");
    t.write_all(b"GET / HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        .await
        .expect("request written");
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, t.read_to_end(&mut reply))
        .await
        .expect("reply in time, with no flush")
        .expect("reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let t = kforward_core::Tunnel::open(&ctx, "demo", &pod("echo"), 7000)
        .await
        .expect("tunnel to echo");
    let (mut rx, mut tx) = t.into_split();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let sent = Sha256::digest(&data);
    let len = data.len();
    let writer = tokio::spawn(async move {
        tx.write_all(&data).await?;
        tx.flush().await?;
        std::io::Result::Ok(tx)
    });
    let read = async {
        let mut got = Sha256::new();
        let mut n = 0;
        while n < len {
            let chunk = rx
                .read_chunk()
                .await?
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            n += chunk.len();
            got.update(&chunk);
        }
        std::io::Result::Ok((n, got.finalize()))
    };
    let (n, got) = tokio::time::timeout(WAIT, read)
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!((n, got), (len, sent));
    let _tx = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer in time")
        .expect("writer task")
        .expect("writes");
}
