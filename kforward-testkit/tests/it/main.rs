//! Integration tests of the testkit: real clients (kube, kubectl, the Python client) against
//! a real testkit cluster, and every feature and fault the testkit offers.
//!
//! Every test starts its own cluster, so tests run in parallel. Every wait is bounded.

mod controllers;
mod faults;
mod headless;
mod kube_client;
mod kubectl;
mod kubectl_proxy;
mod network;
mod python;
mod rollouts;
mod watch;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kforward_testkit::Cluster;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest any single step of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runs `future`, failing the test with `what` when it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Polls `check` (every 50 ms) until it returns `Some`, failing the test with `what` after
/// [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Starts the demo cluster.
pub async fn demo() -> Cluster {
    bounded("the demo cluster to start", Cluster::demo())
        .await
        .expect("start the demo cluster")
}

/// A kube client built the way users build one: from the kubeconfig file.
pub async fn client_from(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a kube config from the kubeconfig");
    kube::Client::try_from(config).expect("a kube client")
}

/// A kube client for `cluster`, from its kubeconfig.
pub async fn client(cluster: &Cluster) -> kube::Client {
    client_from(cluster.kubeconfig_path()).await
}

/// The `Status` of an API error, failing the test on any other result.
pub fn api_status<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error with a Status, got {other:?}"),
    }
}

/// A pod's name.
pub fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pod has a name")
}

/// A pod's IP.
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod has an IP")
}

/// Whether a pod's Ready condition is True.
pub fn ready_condition(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod serves: Ready and not being deleted.
pub fn serving(pod: &Pod) -> bool {
    ready_condition(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// The names of the pods in `demo` matching `selector`.
pub fn pod_names(cluster: &Cluster, selector: &str) -> Vec<String> {
    cluster
        .pods(kforward_testkit::DEMO_NAMESPACE, Some(selector))
        .iter()
        .map(name)
        .collect()
}

/// A service's ClusterIP.
pub fn cluster_ip(cluster: &Cluster, service: &str) -> String {
    cluster
        .service(kforward_testkit::DEMO_NAMESPACE, service)
        .expect("the service exists")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the service has a ClusterIP")
}

/// Sends `GET /` and reads one HTTP/1.1 response; returns the status code and the body.
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> (u16, String) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: testkit\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the HTTP request");
    read_http_response(stream).await
}

/// Reads one HTTP/1.1 response with a `Content-Length` body.
pub async fn read_http_response<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).await.expect("read the response head");
        assert!(
            n > 0,
            "connection closed inside the response head: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.expect("read the response body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    (status, String::from_utf8(body).expect("a UTF-8 body"))
}
