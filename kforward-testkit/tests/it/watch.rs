//! Watch semantics through kube's `Api::watch`: resume after a resourceVersion,
//! `timeoutSeconds`, 410 after compaction, and `resourceVersion=0`.

use std::collections::BTreeSet;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kforward_testkit::{Cluster, DEMO_NAMESPACE};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use kube::{Client, ResourceExt};

use crate::{bounded, client, demo, name};

async fn empty_cluster() -> Cluster {
    bounded("an empty cluster to start", Cluster::start())
        .await
        .expect("start a cluster")
}

/// Creates a namespace through the API and returns its resourceVersion.
async fn create_namespace(api: &Api<Namespace>, ns: &str) -> String {
    let created = bounded(
        "create a namespace",
        api.create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        ),
    )
    .await
    .expect("create a namespace");
    created.resource_version().expect("a resourceVersion")
}

/// The next event, failing on an error or the end of the stream.
async fn next_event<K>(
    what: &str,
    stream: &mut (impl Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin),
) -> WatchEvent<K> {
    bounded(what, stream.next())
        .await
        .unwrap_or_else(|| panic!("the watch ended before {what}"))
        .unwrap_or_else(|e| panic!("watch error before {what}: {e}"))
}

fn namespaces(client: Client) -> Api<Namespace> {
    Api::all(client)
}

#[tokio::test]
async fn watch_from_a_version_sends_only_later_events() {
    let cluster = empty_cluster().await;
    let api = namespaces(client(&cluster).await);
    let between = create_namespace(&api, "watch-a").await;
    create_namespace(&api, "watch-b").await;

    let mut stream = bounded(
        "start the watch",
        api.watch(&WatchParams::default(), &between),
    )
    .await
    .expect("watch namespaces")
    .boxed();
    match next_event("the first event", &mut stream).await {
        WatchEvent::Added(ns) => assert_eq!(ns.name_any(), "watch-b", "watch-a came before"),
        other => panic!("expected ADDED watch-b, got {other:?}"),
    }
    // Nothing else is queued: the next event is the next change.
    create_namespace(&api, "watch-c").await;
    match next_event("the event of watch-c", &mut stream).await {
        WatchEvent::Added(ns) => assert_eq!(ns.name_any(), "watch-c"),
        other => panic!("expected ADDED watch-c, got {other:?}"),
    }
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let cluster = empty_cluster().await;
    let api = namespaces(client(&cluster).await);
    let list = bounded("list", api.list(&Default::default()))
        .await
        .expect("list namespaces");
    let rv = list
        .metadata
        .resource_version
        .expect("a list resourceVersion");
    let mut stream = bounded(
        "start the watch",
        api.watch(&WatchParams::default().timeout(1), &rv),
    )
    .await
    .expect("watch namespaces")
    .boxed();
    let end = bounded("the watch to end by its timeout", stream.next()).await;
    assert!(end.is_none(), "the stream ends cleanly, got {end:?}");
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let cluster = empty_cluster().await;
    let api = namespaces(client(&cluster).await);
    let old = create_namespace(&api, "before-compaction").await;
    create_namespace(&api, "after").await;
    cluster.compact();

    let mut stream = bounded("start the watch", api.watch(&WatchParams::default(), &old))
        .await
        .expect("a watch from a compacted version still answers 200")
        .boxed();
    match next_event("the ERROR event", &mut stream).await {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status.message.starts_with("too old resource version: "),
                "{}",
                status.message
            );
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    let end = bounded("the watch to end", stream.next()).await;
    assert!(
        end.is_none(),
        "nothing follows the ERROR event, got {end:?}"
    );

    // A watch from the current version works again.
    let list = bounded("list", api.list(&Default::default()))
        .await
        .expect("list again");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = bounded("watch again", api.watch(&WatchParams::default(), &rv))
        .await
        .expect("watch from the current version")
        .boxed();
    create_namespace(&api, "fresh").await;
    match next_event("the new event", &mut stream).await {
        WatchEvent::Added(ns) => assert_eq!(ns.name_any(), "fresh"),
        other => panic!("expected ADDED fresh, got {other:?}"),
    }
}

#[tokio::test]
async fn resource_version_zero_starts_with_added_for_existing_objects() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let expected: BTreeSet<String> = cluster
        .pods(DEMO_NAMESPACE, None)
        .iter()
        .map(name)
        .collect();
    assert_eq!(expected.len(), 6);
    let mut stream = bounded("start the watch", pods.watch(&WatchParams::default(), "0"))
        .await
        .expect("watch pods from 0")
        .boxed();
    let mut added = BTreeSet::new();
    while added.len() < expected.len() {
        match next_event("the initial ADDED events", &mut stream).await {
            WatchEvent::Added(p) => {
                assert!(added.insert(name(&p)), "each pod once");
            }
            other => panic!("expected only ADDED at first, got {other:?}"),
        }
    }
    assert_eq!(added, expected);

    // Then live changes follow.
    let victim = expected
        .iter()
        .find(|n| n.starts_with("echo-"))
        .expect("echo pod");
    cluster.delete_pod(DEMO_NAMESPACE, victim).expect("delete");
    match next_event("the deletion mark", &mut stream).await {
        WatchEvent::Modified(p) => {
            assert_eq!(&name(&p), victim);
            assert!(p.metadata.deletion_timestamp.is_some());
        }
        other => panic!("expected MODIFIED with a deletionTimestamp, got {other:?}"),
    }
}
