//! The example's two functions against the testkit's demo cluster.

use std::time::Duration;

use kforward_core::{KubeContext, KubeconfigSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_supervised_forward_reports_ready_and_carries_http() {
    let cluster = kforward_testkit::Cluster::demo().await.expect("cluster");
    let started = kforward_example::forward_until_ready(
        Some(cluster.kubeconfig_path()),
        Some("demo"),
        "svc/web",
        80,
        Duration::from_secs(30),
    )
    .await
    .expect("ready");
    let mut conn = tokio::net::TcpStream::connect(started.local_addr)
        .await
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_string(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    assert!(reply.contains("\r\n\r\nweb-"), "{reply}");
    started.supervisor.shutdown().await;
}

#[tokio::test]
async fn http_over_a_tunnel_without_a_local_port() {
    let cluster = kforward_testkit::Cluster::demo().await.expect("cluster");
    let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path()))
        .await
        .expect("context");
    let pod = cluster
        .ready_pods("demo", "app=web")
        .into_iter()
        .find_map(|p| p.metadata.name)
        .expect("a web pod");
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        kforward_example::http_get_over_tunnel(&ctx, "demo", &pod, 8080, "/"),
    )
    .await
    .expect("in time")
    .expect("reply");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(&pod),
        "{reply}"
    );
}
