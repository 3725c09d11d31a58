//! The forward proxy's connections on the forwarding pipeline: the pump's half-close and
//! counters, and another ready pod when the one picked fails, as for `kforward forward`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kforward_core::Event;
use kforward_core::forward_proxy::{ForwardProxyOptions, Route};
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{WAIT, context, demo};
use crate::forward_proxy::{proxy, socks5_connect};

/// A client that ends its writes gets the replies, and then the end of the connection
/// once they have been quiet for the linger, as through a forward: the v4 transport cannot
/// pass the half-close to the echo server, which would never close by itself.
/// (`copy_bidirectional` waited for the server to close: this read never ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_its_replies_then_the_end_after_the_linger() {
    let cluster = demo().await;
    let mut p = proxy(
        &cluster,
        ForwardProxyOptions {
            half_close_linger: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let (code, mut s) = socks5_connect(p.addr, "echo.demo", 7000).await;
    assert_eq!(code, 0, "CONNECT succeeds");
    s.write_all(b"ping, then EOF").await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .expect("the connection ends after the linger")
        .expect("read");
    assert_eq!(back, b"ping, then EOF");
    // Counted as a forward's connection: both directions' bytes in its closing event.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match p.events.recv().await {
                Ok(Event::ConnectionClosed {
                    bytes_out,
                    bytes_in,
                    ..
                }) => return (bytes_out, bytes_in),
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, (14, 14));
}

/// A service whose endpoints still list a pod that is gone (the EndpointSlice written by
/// hand, as for a service without a selector, and not updated yet): every connection to
/// it reaches the ready pod, the ones routed to the gone pod on their second try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_pod_in_the_endpoints_is_retried_on_another_ready_pod() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = cluster.pods("demo", Some("app=web"))[0].clone();
    let (web_name, web_ip) = (
        web.metadata.name.clone().expect("name"),
        web.status.and_then(|s| s.pod_ip).expect("pod ip"),
    );
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("stale".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
                ),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    cluster.create_service("demo", &svc).expect("service");
    let endpoint = |pod: &str, ip: &str| Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            ..Default::default()
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some("demo".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("stale-1".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                "stale".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![
            endpoint("web-gone-0", "127.0.0.254"),
            endpoint(&web_name, &web_ip),
        ]),
        ports: Some(vec![EndpointPort {
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    kube::Api::<EndpointSlice>::namespaced(ctx.client().clone(), "demo")
        .create(&PostParams::default(), &slice)
        .await
        .expect("the slice is created");
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let mut pods = Vec::new();
    for _ in 0..4 {
        let (code, mut s) = socks5_connect(p.addr, "stale.demo.svc.cluster.local", 80).await;
        assert_eq!(code, 0, "CONNECT succeeds");
        s.write_all(b"GET / HTTP/1.1\r\nHost: stale\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut page = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut page))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains(&web_name), "{page}");
        // The routes reported for this connection, up to the pod that answered.
        loop {
            match p.route_of("stale.demo.svc.cluster.local:80").await {
                Route::Pod { pod, .. } if pod == web_name => break,
                Route::Pod { pod, .. } => pods.push(pod),
                other => panic!("route {other:?}"),
            }
        }
    }
    // Round robin over both endpoints: the gone pod was picked, and given up for the other.
    assert!(pods.iter().any(|p| p == "web-gone-0"), "{pods:?}");
}
