//! Shared watches: one list and one watch per resource kind and namespace, whatever the
//! targets select (services, a pod by name, a label selector, a statefulset), and each
//! target still sees only its own pods, and follows them when they are replaced.

use kforward_core::Endpoints;
use kforward_core::spec::LabelSelector;
use kforward_core::spec::{RemotePort, Target};

use crate::common::*;

fn pods_of(eps: &Endpoints) -> Vec<String> {
    eps.current().into_iter().map(|e| e.pod).collect()
}

fn ready(cluster: &kforward_testkit::Cluster, selector: &str) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .ready_pods("demo", selector)
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_of_one_namespace_share_one_watch_per_kind_and_see_only_their_pods() {
    let cluster = demo().await;
    let sorted = |eps: &Endpoints| {
        let mut v = pods_of(eps);
        v.sort();
        v
    };
    let ctx = context(&cluster).await;
    let web_pods = ready(&cluster, "app=web");
    let echo_pods = ready(&cluster, "app=echo");
    assert_eq!((web_pods.len(), echo_pods.len()), (2, 1));
    let before = cluster.stats();

    let resolve = |target: Target, port: RemotePort| {
        let ctx = ctx.clone();
        async move {
            tokio::time::timeout(WAIT, Endpoints::resolve(&ctx, "demo", &target, &port))
                .await
                .expect("resolved in time")
                .expect("resolves")
        }
    };
    let svc = |name: &str| Target::Service { name: name.into() };
    let web = resolve(svc("web"), RemotePort::Number(80)).await;
    let echo = resolve(svc("echo"), RemotePort::Number(7000)).await;
    let db = resolve(svc("db"), RemotePort::Number(5432)).await;
    let by_name = resolve(
        Target::Pod {
            name: web_pods[0].clone(),
        },
        RemotePort::Number(8080),
    )
    .await;
    let by_selector = resolve(
        Target::PodSelector {
            // `!=` matches pods without the label, as the API server's selectors do.
            selector: LabelSelector::parse("app=echo,track!=canary").expect("selector"),
        },
        RemotePort::Number(7000),
    )
    .await;
    let sts = resolve(
        Target::StatefulSet { name: "db".into() },
        RemotePort::Number(5432),
    )
    .await;

    // Six targets: one watch of services (the three service targets read theirs from it),
    // one of EndpointSlices and one of pods (the statefulset, the pod and the selector).
    // A shared watch starts after its list, in the background, so the count may reach the
    // API server a moment after `resolve` returned: wait for it (bounded), then it is exact.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.stats().watches_total - before.watches_total < 3
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = cluster.stats();
    assert_eq!(after.watches_total - before.watches_total, 3);
    // One more forward to a service of the namespace asks the API server nothing.
    let web_again = resolve(svc("web"), RemotePort::Number(80)).await;
    assert_eq!(cluster.stats().requests, after.requests);
    assert_eq!(sorted(&web_again), web_pods);

    assert_eq!(sorted(&web), web_pods);
    assert_eq!(sorted(&echo), echo_pods);
    assert_eq!(sorted(&by_selector), echo_pods);
    assert_eq!(pods_of(&by_name), [web_pods[0].clone()]);
    assert_eq!(
        web.current().iter().map(|e| e.port).collect::<Vec<_>>(),
        [8080, 8080],
        "the service's named port, resolved per pod"
    );
    assert_eq!(sorted(&db).len(), 2);
    assert_eq!(pods_of(&sts).len(), 1);

    // A web pod is replaced: web follows it; echo's followers are not even woken.
    let mut echo_rx = echo.subscribe();
    echo_rx.mark_unchanged();
    let mut selector_rx = by_selector.subscribe();
    selector_rx.mark_unchanged();
    cluster
        .delete_pod("demo", &web_pods[0])
        .expect("delete a web pod");
    let mut web_rx = web.subscribe();
    let moved = tokio::time::timeout(
        WAIT,
        web_rx.wait_for(|v| v.len() == 2 && v.iter().all(|e| e.pod != web_pods[0])),
    )
    .await;
    assert!(matches!(moved, Ok(Ok(_))), "web now {:?}", web.current());
    let mut name_rx = by_name.subscribe();
    let gone = tokio::time::timeout(WAIT, name_rx.wait_for(Vec::is_empty)).await;
    assert!(
        matches!(gone, Ok(Ok(_))),
        "the deleted pod, by name: {:?}",
        by_name.current()
    );
    assert!(!echo_rx.has_changed().unwrap_or(true), "echo was woken");
    assert!(
        !selector_rx.has_changed().unwrap_or(true),
        "the echo selector was woken"
    );
    assert_eq!(sorted(&echo), echo_pods);
    assert_eq!(
        cluster.stats().watches_total - before.watches_total,
        3,
        "no watch was opened again"
    );
}
