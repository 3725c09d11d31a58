//! Helpers shared by the end-to-end tests.

use std::net::SocketAddr;
use std::time::Duration;

use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{BoundPort, Forward, ForwardOptions, Forwarder, KubeContext, KubeconfigSource};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn demo() -> Cluster {
    tokio::time::timeout(WAIT, Cluster::demo())
        .await
        .expect("demo cluster in time")
        .expect("demo cluster starts")
}

pub async fn context(cluster: &Cluster) -> KubeContext {
    let src = KubeconfigSource::default().with_path(cluster.kubeconfig_path());
    KubeContext::load(&src).await.expect("kubeconfig loads")
}

pub fn spec(target: &str, local: u16, remote: u16) -> ForwardSpec {
    ForwardSpec::new(
        Target::parse_kubectl(target).expect("target"),
        [PortMapping::new(local, remote)],
    )
    .with_namespace("demo")
}

pub fn quick() -> ForwardOptions {
    ForwardOptions {
        pod_running_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

pub async fn start(ctx: &KubeContext, spec: ForwardSpec) -> (Forward, Vec<BoundPort>) {
    let mut f = Forward::new(ctx.clone(), spec, quick());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("forward starts");
    (f, bound)
}

/// One HTTP/1.1 GET with `Connection: close`; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).to_string();
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "unexpected reply: {text:?}"
        );
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("HTTP reply in time")
}
