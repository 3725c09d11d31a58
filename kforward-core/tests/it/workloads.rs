//! Workload targets kubectl port-forward takes besides pods, services and deployments:
//! statefulsets (one pod, the one kubectl picks, kept while ready) and replicasets (their
//! ready pods, spread), both following pod replacement; and headless services.

use std::collections::HashSet;

use kforward_core::spec::{RemotePort, Target};
use kforward_core::{Endpoint, Endpoints, Event, Forwarder};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::TryRecvError;

use crate::common::*;

/// Waits until `eps` is exactly `want`, bounded.
async fn endpoints_become(eps: &Endpoints, want: &[(&str, u16)]) {
    let want: Vec<Endpoint> = want
        .iter()
        .map(|(pod, port)| Endpoint {
            pod: (*pod).to_string(),
            port: *port,
        })
        .collect();
    let mut rx = eps.subscribe();
    let seen = tokio::time::timeout(WAIT, rx.wait_for(|v| *v == want)).await;
    assert!(
        matches!(seen, Ok(Ok(_))),
        "endpoints {:?}, waited for {want:?}",
        eps.current()
    );
}

fn uid(cluster: &Cluster, pod: &str) -> Option<String> {
    cluster.pod("demo", pod).ok().and_then(|p| p.metadata.uid)
}

/// Deletes `pod` and waits until a new pod of that name (a statefulset's) is ready.
async fn replace(cluster: &Cluster, pod: &str) {
    let old = uid(cluster, pod);
    cluster.delete_pod("demo", pod).expect("delete the pod");
    let back = cluster.wait_for("the pod back under its name", WAIT, |c| {
        c.ready_pods("demo", "app=db")
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(pod) && p.metadata.uid != old)
    });
    tokio::time::timeout(WAIT, back)
        .await
        .expect("in time")
        .expect("recreated");
}

async fn echo(addr: std::net::SocketAddr, msg: &[u8]) {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("read the echo");
        assert_eq!(back, msg);
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("echo in time");
}

#[tokio::test]
async fn a_statefulset_forwards_to_kubectls_pod_and_keeps_it_while_ready() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let sts = Target::parse_kubectl("statefulset/db").expect("target");
    let eps = Endpoints::resolve(&ctx, "demo", &sts, &RemotePort::Name("db".into()))
        .await
        .expect("sts/db resolves");
    // Both pods are ready; kubectl takes the one ready the longest: db-0 (OrderedReady).
    endpoints_become(&eps, &[("db-0", 5432)]).await;

    let (mut f, bound) = start(&ctx, spec("sts/db", 0, 5432)).await;
    echo(bound[0].local_addr, b"to db-0").await;

    // db-0 goes: the forward moves to db-1 and stays there when db-0 is back.
    replace(&cluster, "db-0").await;
    endpoints_become(&eps, &[("db-1", 5432)]).await;
    cluster.settle(WAIT).await.expect("settle");
    assert_eq!(
        eps.current(),
        [Endpoint {
            pod: "db-1".into(),
            port: 5432
        }]
    );
    echo(bound[0].local_addr, b"to db-1").await;

    // db-1 goes too: the new db-0, ready the longest now, takes over.
    replace(&cluster, "db-1").await;
    endpoints_become(&eps, &[("db-0", 5432)]).await;
    echo(bound[0].local_addr, b"to the new db-0").await;

    // Not ready counts as gone, as for the other targets.
    cluster
        .set_pod_ready("demo", "db-0", false)
        .expect("db-0 not ready");
    endpoints_become(&eps, &[("db-1", 5432)]).await;
    echo(bound[0].local_addr, b"to db-1 again").await;
    f.stop().await;
}

#[tokio::test]
async fn a_replicaset_spreads_over_its_ready_pods_and_follows_replacement() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let sets = cluster.replicasets("demo", Some("app=web"));
    let rs = sets[0].metadata.name.clone().expect("web's replicaset");
    let (mut f, bound) = start(&ctx, spec(&format!("rs/{rs}"), 0, 8080)).await;
    let addr = bound[0].local_addr;
    let answered = |n: usize| async move {
        let mut seen = HashSet::new();
        for _ in 0..n {
            seen.insert(http_get(addr, "/").await.trim().to_string());
        }
        seen
    };
    let before = answered(10).await;
    let pods: HashSet<String> = cluster
        .ready_pods("demo", "app=web")
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before, pods, "both of the replicaset's pods answered");

    for pod in &before {
        cluster.delete_pod("demo", pod).expect("delete a web pod");
    }
    let replaced = cluster.wait_for("two new web pods", WAIT, |c| {
        let ready: Vec<_> = c.ready_pods("demo", "app=web");
        ready.len() == 2
            && ready.iter().all(|p| {
                p.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| !before.contains(n))
            })
    });
    tokio::time::timeout(WAIT, replaced)
        .await
        .expect("in time")
        .expect("replaced");
    let eps_moved = async {
        loop {
            let body = http_get(addr, "/").await;
            if !before.contains(body.trim()) {
                return body;
            }
        }
    };
    let body = tokio::time::timeout(WAIT, eps_moved)
        .await
        .expect("a new pod answers in time");
    assert!(body.starts_with("web-"), "{body}");
    let after = answered(10).await;
    assert!(after.is_disjoint(&before), "{after:?} / {before:?}");
    f.stop().await;
}

#[tokio::test]
async fn workload_errors_name_the_kind_and_the_ports_there() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    for (target, kind) in [("sts/nope", "statefulset"), ("rs/nope", "replicaset")] {
        let mut f = kforward_core::Forward::new(ctx.clone(), spec(target, 0, 80), quick());
        let e = tokio::time::timeout(WAIT, f.start())
            .await
            .expect("in time")
            .expect_err("no such object");
        assert_eq!(
            e.to_string(),
            format!("{kind} \"nope\" not found in namespace \"demo\"")
        );
    }
    let db = Target::StatefulSet { name: "db".into() };
    let e = Endpoints::resolve(&ctx, "demo", &db, &RemotePort::Name("http".into()))
        .await
        .expect_err("db has no port http");
    assert_eq!(
        e.to_string(),
        "sts/db has no port named \"http\" (ports there: db (5432))"
    );
}

/// A SPDY session stays bound to the pod it was opened for (the kubelet serves it for
/// that pod's sandbox), so when a pod is deleted and created again under its name (a
/// StatefulSet's), the forward must not keep using the session it had: connections opened
/// while the pod is replaced wait for it and get their bytes through, and so do those after.
#[tokio::test]
async fn a_pod_forward_follows_its_pod_deleted_and_created_again_under_its_name() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, bound) = start(&ctx, spec("pod/db-0", 0, 5432)).await;
    let addr = bound[0].local_addr;
    echo(addr, b"to db-0").await;

    let mut events = f.subscribe();
    let old = uid(&cluster, "db-0");
    cluster.delete_pod("demo", "db-0").expect("delete db-0");
    // Opened at once: the session it lands on may still be the old pod's.
    echo(addr, b"while db-0 is replaced").await;
    let back = cluster.wait_for("db-0 back under its name", WAIT, |c| {
        c.ready_pods("demo", "app=db")
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("db-0") && p.metadata.uid != old)
    });
    tokio::time::timeout(WAIT, back)
        .await
        .expect("in time")
        .expect("recreated");
    for i in 0..5 {
        echo(addr, format!("to the new db-0, {i}").as_bytes()).await;
    }
    // The kept session was the old pod's: a connection found it gone and was moved, and
    // the forward said so (its pod has the same name, its sandbox is another).
    let mut moved = Vec::new();
    loop {
        match events.try_recv() {
            Ok(Event::ConnectionMoved { from, pod, .. }) => moved.push((from, pod)),
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(
        moved.contains(&("db-0".to_string(), "db-0".to_string())),
        "no connection_moved from db-0 to db-0: {moved:?}"
    );
    f.stop().await;
}
