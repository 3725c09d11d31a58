//! Every fault switch, through the Rust API and through the `/testkit/*` admin endpoints.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kforward_testkit::{Cluster, DEMO_NAMESPACE};
use kube::api::{Api, ListParams, WatchParams};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{
    api_status, bounded, client, client_from, demo, eventually, name, pod_names, ready_condition,
};

/// How long a request to a paused API server is given before the test calls it stalled.
const STALLED: Duration = Duration::from_secs(1);

fn demo_pods(client: kube::Client) -> Api<Pod> {
    Api::namespaced(client, DEMO_NAMESPACE)
}

#[tokio::test]
async fn drop_port_forwards_ends_a_live_stream() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    let mut pf = bounded("port-forward", pods.portforward(&echo, &[7000]))
        .await
        .expect("port-forward to echo");
    let mut stream = pf.take_stream(7000).expect("a stream");
    stream.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    bounded("the echo", stream.read_exact(&mut buf))
        .await
        .expect("read the echo");
    assert_eq!(cluster.stats().live_port_forwards, 1);

    cluster.drop_port_forwards();
    let mut rest = Vec::new();
    let end = bounded("the stream to end", stream.read_to_end(&mut rest)).await;
    assert!(
        end.is_err() || rest.is_empty(),
        "nothing more arrives after the drop: {end:?} {rest:?}"
    );
    eventually("live port-forwards back to 0", || async {
        (cluster.stats().live_port_forwards == 0).then_some(())
    })
    .await;
    assert!(pf.join().await.is_err(), "kube-rs sees the cut as an error");

    // New port-forwards work after the drop.
    let mut pf = bounded("port-forward again", pods.portforward(&echo, &[7000]))
        .await
        .expect("port-forward again");
    let mut stream = pf.take_stream(7000).expect("a stream");
    stream.write_all(b"pong").await.expect("write");
    bounded("the echo", stream.read_exact(&mut buf))
        .await
        .expect("read the echo");
    assert_eq!(&buf, b"pong");
    pf.abort();
}

#[tokio::test]
async fn pause_stalls_requests_until_resume() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    cluster.pause();
    let stalled = tokio::time::timeout(STALLED, pods.get(&echo)).await;
    assert!(
        stalled.is_err(),
        "a paused API server does not answer: {stalled:?}"
    );
    cluster.resume();
    let pod = bounded("a GET after resume", pods.get(&echo))
        .await
        .expect("GET after resume");
    assert_eq!(name(&pod), echo);
}

#[tokio::test]
async fn restart_api_ends_watches_and_serves_again_on_the_same_url() {
    let cluster = demo().await;
    let url = cluster.server_url();
    let pods = demo_pods(client(&cluster).await);
    let list = bounded("list", pods.list(&ListParams::default()))
        .await
        .expect("list pods");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = bounded("start a watch", pods.watch(&WatchParams::default(), &rv))
        .await
        .expect("watch pods")
        .boxed();

    bounded("restart the API server", cluster.restart_api())
        .await
        .expect("restart");
    match bounded("the watch to end", stream.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(event)) => panic!("no event expected during the restart: {event:?}"),
    }
    assert_eq!(cluster.server_url(), url, "same address after the restart");
    let list = bounded("list after the restart", pods.list(&ListParams::default()))
        .await
        .expect("the same client works after the restart");
    assert_eq!(list.items.len(), 6, "stored objects survive");
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    cluster.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    bounded("a slow GET", pods.get(&echo)).await.expect("GET");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "took only {took:?}");
    cluster.set_latency(Duration::ZERO);
}

#[tokio::test]
async fn deny_answers_403_in_rbac_words() {
    let cluster = demo().await;
    let kube = client(&cluster).await;
    let pods = demo_pods(kube.clone());
    let web = pod_names(&cluster, "app=web").remove(0);

    cluster.deny("get", "pods");
    let status = api_status(bounded("a denied GET", pods.get(&web)).await);
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        format!(
            "pods \"{web}\" is forbidden: User \"kforward-dev\" cannot get resource \"pods\" in API group \"\" in the namespace \"demo\""
        )
    );
    // Other verbs still work.
    bounded("a list", pods.list(&ListParams::default()))
        .await
        .expect("list is not denied");

    cluster.deny("create", "pods/portforward");
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{DEMO_NAMESPACE}/pods/{web}/portforward?ports=8080"
    ))
    .body(Vec::new())
    .expect("a request");
    let status = api_status(bounded("a denied port-forward", kube.request_text(request)).await);
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        format!(
            "pods \"{web}\" is forbidden: User \"kforward-dev\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"demo\""
        )
    );
    assert!(
        bounded(
            "a denied kube port-forward",
            pods.portforward(&web, &[8080])
        )
        .await
        .is_err()
    );

    cluster.deny("list", "namespaces");
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    let status = api_status(
        bounded(
            "a denied cluster-scoped list",
            namespaces.list(&ListParams::default()),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "namespaces is forbidden: User \"kforward-dev\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );

    cluster.allow_all();
    bounded("a GET after allow_all", pods.get(&web))
        .await
        .expect("allowed again");
}

#[tokio::test]
async fn expired_token_gets_401_and_the_rewritten_kubeconfig_works() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    bounded("GET", pods.get(&echo))
        .await
        .expect("GET with the first token");
    let old = cluster.token();
    let new = cluster.expire_token().expect("expire the token");
    assert_ne!(old, new);
    assert_eq!(cluster.token(), new);
    let status = api_status(bounded("GET with the old token", pods.get(&echo)).await);
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));

    let fresh = demo_pods(client_from(cluster.kubeconfig_path()).await);
    bounded("GET with the new token", fresh.get(&echo))
        .await
        .expect("the re-read kubeconfig carries the new token");
}

#[tokio::test]
async fn set_pod_ready_flips_the_ready_condition() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let web = pod_names(&cluster, "app=web").remove(0);
    cluster
        .set_pod_ready(DEMO_NAMESPACE, &web, false)
        .expect("set NotReady");
    let pod = bounded("GET", pods.get(&web)).await.expect("GET");
    assert!(!ready_condition(&pod));
    let condition = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    assert_eq!(condition.status, "False");
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    cluster
        .set_pod_ready(DEMO_NAMESPACE, &web, true)
        .expect("set Ready");
    let pod = bounded("GET", pods.get(&web)).await.expect("GET");
    assert!(ready_condition(&pod));
    assert!(
        cluster
            .set_pod_ready(DEMO_NAMESPACE, "nope", false)
            .is_err(),
        "404"
    );
}

#[tokio::test]
async fn counters_count_requests_and_port_forwards() {
    let cluster = demo().await;
    let pods = demo_pods(client(&cluster).await);
    let web = pod_names(&cluster, "app=web").remove(0);
    let before = cluster.stats();
    bounded("GET", pods.get(&web)).await.expect("GET");
    let after_get = cluster.stats();
    assert!(after_get.requests > before.requests);
    assert_eq!(after_get.port_forwards_total, before.port_forwards_total);

    let mut pf = bounded("port-forward", pods.portforward(&web, &[8080]))
        .await
        .expect("port-forward");
    let mut stream = pf.take_stream(8080).expect("a stream");
    let (code, _) = bounded("GET through the port-forward", crate::http_get(&mut stream)).await;
    assert_eq!(code, 200);
    // (The web pod closes after answering, so the stream may already be over: live
    // streams are counted in `drop_port_forwards_ends_a_live_stream`.)
    let during = cluster.stats();
    assert_eq!(during.port_forwards_total, before.port_forwards_total + 1);
    assert!(during.requests > after_get.requests);
    drop(stream);
    let _ = bounded("the port-forward to end", pf.join()).await;
    eventually("live port-forwards back to 0", || async {
        (cluster.stats().live_port_forwards == 0).then_some(())
    })
    .await;
    assert_eq!(
        cluster.stats().port_forwards_total,
        before.port_forwards_total + 1
    );
}

/// One HTTP/1.1 request over a fresh connection; the status code and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut conn = TcpStream::connect(addr)
        .await
        .expect("connect to the API server");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read the response");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    // hyper sends small bodies with Content-Length; no chunked decoding needed here.
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked body: {head}"
    );
    (code, body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn admin_endpoints_over_plain_http() {
    let cluster = bounded(
        "a plain-HTTP cluster to start",
        Cluster::builder().plain_http().start(),
    )
    .await
    .expect("start a plain-HTTP cluster");
    let addr = cluster.api_addr();
    assert!(cluster.server_url().starts_with("http://"));
    let token = cluster.token();
    let list = "/api/v1/namespaces";

    let (code, body) = bounded("GET stats", http(addr, "GET", "/testkit/stats", None)).await;
    assert_eq!(code, 200);
    let stats = json(&body);
    for key in ["requests", "live_port_forwards", "port_forwards_total"] {
        assert!(stats[key].is_u64(), "stats has {key}: {stats}");
    }
    let requests = stats["requests"].as_u64().expect("a number");

    let (code, body) = bounded("a GET", http(addr, "GET", list, Some(&token))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["kind"], "NamespaceList");

    // Pause: API requests stall, the admin endpoints still answer.
    let (code, body) = bounded("POST pause", http(addr, "POST", "/testkit/pause", None)).await;
    assert_eq!((code, json(&body)["ok"].as_bool()), (200, Some(true)));
    let stalled = tokio::time::timeout(STALLED, http(addr, "GET", list, Some(&token))).await;
    assert!(stalled.is_err(), "paused: {stalled:?}");
    let (code, _) = bounded(
        "GET stats while paused",
        http(addr, "GET", "/testkit/stats", None),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = bounded("POST resume", http(addr, "POST", "/testkit/resume", None)).await;
    assert_eq!(code, 200);
    let (code, _) = bounded("a GET after resume", http(addr, "GET", list, Some(&token))).await;
    assert_eq!(code, 200);

    // Deny and allow-all.
    let (code, _) = bounded(
        "POST deny",
        http(
            addr,
            "POST",
            "/testkit/deny?verb=list&resource=namespaces",
            None,
        ),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = bounded("a denied GET", http(addr, "GET", list, Some(&token))).await;
    assert_eq!(code, 403);
    assert_eq!(json(&body)["kind"], "Status");
    let (code, _) = bounded(
        "POST allow-all",
        http(addr, "POST", "/testkit/allow-all", None),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = bounded(
        "a GET after allow-all",
        http(addr, "GET", list, Some(&token)),
    )
    .await;
    assert_eq!(code, 200);

    // Expire the token: the old one gets 401 with a Status body.
    let (code, _) = bounded(
        "POST expire-token",
        http(addr, "POST", "/testkit/expire-token", None),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = bounded(
        "a GET with the old token",
        http(addr, "GET", list, Some(&token)),
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(json(&body)["reason"], "Unauthorized");
    let (code, _) = bounded(
        "a GET with the new token",
        http(addr, "GET", list, Some(&cluster.token())),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = bounded("a GET with no token", http(addr, "GET", list, None)).await;
    assert_eq!(code, 401);

    // Wrong method, missing parameter, unknown switch.
    let (code, _) = bounded("GET pause", http(addr, "GET", "/testkit/pause", None)).await;
    assert_eq!(code, 405);
    let (code, _) = bounded(
        "POST latency without ms",
        http(addr, "POST", "/testkit/latency", None),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = bounded("POST unknown", http(addr, "POST", "/testkit/nope", None)).await;
    assert_eq!(code, 404);

    let (_, body) = bounded("GET stats again", http(addr, "GET", "/testkit/stats", None)).await;
    assert!(json(&body)["requests"].as_u64().expect("a number") > requests);
}

#[tokio::test]
async fn a_kube_client_works_over_plain_http() {
    let cluster = bounded(
        "a plain-HTTP demo cluster to start",
        Cluster::builder().plain_http().demo().start(),
    )
    .await
    .expect("start a plain-HTTP demo cluster");
    let pods = demo_pods(client(&cluster).await);
    let list = bounded("list", pods.list(&ListParams::default()))
        .await
        .expect("list over plain HTTP");
    assert_eq!(list.items.len(), 6, "web x2, echo, dns, db-0, db-1");
}
