//! The controllers behind the API: a deleted pod is replaced, a rollout replaces pods one at
//! a time without losing availability, and EndpointSlices follow readiness.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kforward_testkit::DEMO_NAMESPACE;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::{WAIT, bounded, client, demo, eventually, name, pod_ip, pod_names, serving};

#[tokio::test]
async fn deleted_echo_pod_is_replaced_by_a_new_ready_pod() {
    let cluster = demo().await;
    let old = cluster.pods(DEMO_NAMESPACE, Some("app=echo")).remove(0);
    let (old_name, old_ip) = (name(&old), pod_ip(&old));
    cluster
        .delete_pod(DEMO_NAMESPACE, &old_name)
        .expect("delete the echo pod");
    bounded(
        "a Ready replacement and the old pod gone",
        cluster.wait_for("echo replaced", WAIT, |c| {
            let pods = c.pods(DEMO_NAMESPACE, Some("app=echo"));
            let ready = c.ready_pods(DEMO_NAMESPACE, "app=echo");
            pods.len() == 1 && ready.len() == 1 && name(&ready[0]) != old_name
        }),
    )
    .await
    .expect("echo replaced");
    let new = cluster.ready_pods(DEMO_NAMESPACE, "app=echo").remove(0);
    assert_ne!(name(&new), old_name);
    assert_ne!(pod_ip(&new), old_ip, "a new pod gets a new IP");
    assert!(
        cluster.pod(DEMO_NAMESPACE, &old_name).is_err(),
        "the old pod is removed"
    );
}

/// What the rollout test learns from each pod event.
#[derive(Default)]
struct Rollout {
    pods: BTreeMap<String, Pod>,
    old: BTreeSet<String>,
    /// Old pods that have been marked for deletion, in order.
    retired: Vec<String>,
    lowest_serving: usize,
}

impl Rollout {
    fn serving(&self) -> usize {
        self.pods.values().filter(|p| serving(p)).count()
    }

    fn new_serving(&self) -> usize {
        self.pods
            .values()
            .filter(|p| !self.old.contains(&name(p)) && serving(p))
            .count()
    }

    fn apply(&mut self, event: WatchEvent<Pod>) {
        match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                let n = name(&p);
                let newly_retired = self.old.contains(&n)
                    && p.metadata.deletion_timestamp.is_some()
                    && !self.retired.contains(&n);
                self.pods.insert(n.clone(), p);
                if newly_retired {
                    self.retired.push(n.clone());
                    assert!(
                        self.new_serving() >= self.retired.len(),
                        "old pod {n} was marked for deletion while only {} new pod(s) were Ready \
                         ({} old pod(s) retired)",
                        self.new_serving(),
                        self.retired.len()
                    );
                }
            }
            WatchEvent::Deleted(p) => {
                self.pods.remove(&name(&p));
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(s) => panic!("watch error during the rollout: {s:?}"),
        }
        self.lowest_serving = self.lowest_serving.min(self.serving());
    }

    fn done(&self) -> bool {
        self.pods.len() == 2
            && self.pods.keys().all(|n| !self.old.contains(n))
            && self.serving() == 2
    }
}

#[tokio::test]
async fn rollout_restart_replaces_web_pods_one_at_a_time() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let list = bounded(
        "list web pods",
        pods.list(&ListParams::default().labels("app=web")),
    )
    .await
    .expect("list web pods");
    let rv = list.metadata.resource_version.clone().expect("list rv");
    let mut state = Rollout {
        old: list.items.iter().map(name).collect(),
        pods: list.items.into_iter().map(|p| (name(&p), p)).collect(),
        ..Default::default()
    };
    state.lowest_serving = state.serving();
    assert_eq!(state.lowest_serving, 2);

    // Every change to a web pod, in resourceVersion order, from the listed state on.
    let mut stream = bounded(
        "start the watch",
        pods.watch(&WatchParams::default().labels("app=web"), &rv),
    )
    .await
    .expect("watch web pods")
    .boxed();
    cluster
        .rollout_restart(DEMO_NAMESPACE, "web")
        .expect("rollout restart");
    bounded("the rollout to replace every web pod", async {
        while !state.done() {
            let event = stream
                .next()
                .await
                .expect("the watch ended during the rollout")
                .expect("a watch event");
            state.apply(event);
        }
    })
    .await;
    assert_eq!(state.lowest_serving, 2, "never fewer than 2 Ready web pods");
    assert_eq!(state.retired.len(), 2, "both old pods were retired");
    bounded(
        "the deployment to report ready",
        cluster.wait_deployment_ready(DEMO_NAMESPACE, "web", WAIT),
    )
    .await
    .expect("deployment ready");
    let now: BTreeSet<String> = pod_names(&cluster, "app=web").into_iter().collect();
    assert!(
        now.is_disjoint(&state.old),
        "every web pod was replaced: {now:?}"
    );
}

/// The addresses of the ready endpoints of the web slice.
async fn ready_web_endpoints(slices: &Api<EndpointSlice>) -> BTreeSet<String> {
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list web slices");
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect()
}

#[tokio::test]
async fn endpoint_slices_follow_pod_readiness() {
    let cluster = demo().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let web = cluster.pods(DEMO_NAMESPACE, Some("app=web"));
    let (target, other) = (&web[0], &web[1]);
    let (target_ip, other_ip) = (pod_ip(target), pod_ip(other));
    assert_eq!(
        bounded("list slices", ready_web_endpoints(&slices)).await,
        BTreeSet::from([target_ip.clone(), other_ip.clone()])
    );

    cluster
        .set_pod_ready(DEMO_NAMESPACE, &name(target), false)
        .expect("set NotReady");
    eventually("the NotReady pod to leave the ready endpoints", || async {
        (ready_web_endpoints(&slices).await == BTreeSet::from([other_ip.clone()])).then_some(())
    })
    .await;
    // It stays in the slice, marked not ready, as the EndpointSlice controller does.
    let list = bounded(
        "list slices",
        slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")),
    )
    .await
    .expect("list");
    let endpoint = list.items[0]
        .endpoints
        .iter()
        .flatten()
        .find(|e| e.addresses.contains(&target_ip))
        .expect("the NotReady pod is still listed");
    assert_eq!(
        endpoint.conditions.as_ref().and_then(|c| c.ready),
        Some(false)
    );

    cluster
        .set_pod_ready(DEMO_NAMESPACE, &name(target), true)
        .expect("set Ready");
    eventually("the pod to come back to the ready endpoints", || async {
        (ready_web_endpoints(&slices).await
            == BTreeSet::from([target_ip.clone(), other_ip.clone()]))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn statefulset_pods_start_in_order_and_come_back_under_their_names() {
    use std::time::Duration;
    let cluster = bounded(
        "a cluster",
        kforward_testkit::Cluster::builder()
            .ready_delay(Duration::from_millis(200))
            .start(),
    )
    .await
    .expect("start a cluster");
    cluster.create_namespace("data").expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, "data");
    let mut events = bounded(
        "watch pods",
        pods.watch(&WatchParams::default().labels("app=pg"), "0"),
    )
    .await
    .expect("watch")
    .boxed();
    let sts = kforward_testkit::statefulset(
        "pg",
        kforward_testkit::ECHO_IMAGE,
        3,
        "pg",
        &[("pg", 5432, "TCP")],
    );
    cluster.create_statefulset("data", &sts).expect("create pg");
    // OrderedReady: a pod is created only once every lower ordinal is Running and Ready.
    let mut seen: BTreeMap<String, Pod> = BTreeMap::new();
    bounded("three ready pods, in order", async {
        while seen.values().filter(|p| serving(p)).count() < 3 {
            let ev = events
                .next()
                .await
                .expect("an event")
                .expect("a good event");
            if let WatchEvent::Added(p) = &ev {
                let n = name(p);
                let ordinal: usize = n.trim_start_matches("pg-").parse().expect("an ordinal");
                for lower in 0..ordinal {
                    let before = seen.get(&format!("pg-{lower}"));
                    assert!(
                        before.is_some_and(serving),
                        "pg-{ordinal} made before pg-{lower} was ready"
                    );
                }
            }
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                seen.insert(name(&p), p);
            }
        }
    })
    .await;
    let pg1 = cluster.pod("data", "pg-1").expect("pg-1");
    let spec = pg1.spec.clone().expect("spec");
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("pg-1"), Some("pg"))
    );
    let labels = pg1.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("statefulset.kubernetes.io/pod-name")
            .map(String::as_str),
        Some("pg-1")
    );
    assert_eq!(
        labels
            .get("apps.kubernetes.io/pod-index")
            .map(String::as_str),
        Some("1")
    );
    let status = cluster
        .statefulset("data", "pg")
        .expect("pg")
        .status
        .expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (3, Some(3)));
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(
        labels.get("controller-revision-hash"),
        status.update_revision.as_ref()
    );

    cluster.delete_pod("data", "pg-1").expect("delete pg-1");
    bounded(
        "pg-1 back under its name",
        cluster.wait_for("a new pg-1", WAIT, |c| {
            c.ready_pods("data", "app=pg")
                .iter()
                .any(|p| name(p) == "pg-1" && p.metadata.uid != pg1.metadata.uid)
        }),
    )
    .await
    .expect("pg-1 recreated");
}

#[tokio::test]
async fn deleting_a_deployment_deletes_its_replicaset_and_pods() {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    let cluster = demo().await;
    let kube = client(&cluster).await;
    let sets: Api<ReplicaSet> = Api::namespaced(kube.clone(), DEMO_NAMESPACE);
    let web = ListParams::default().labels("app=web");
    assert_eq!(
        bounded("list", sets.list(&web))
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let deployments: Api<Deployment> = Api::namespaced(kube, DEMO_NAMESPACE);
    bounded("delete web", deployments.delete("web", &Default::default()))
        .await
        .expect("delete web");
    bounded(
        "the garbage collector",
        cluster.wait_for("web's ReplicaSet and pods gone", WAIT, |c| {
            c.replicasets(DEMO_NAMESPACE, Some("app=web")).is_empty()
                && c.pods(DEMO_NAMESPACE, Some("app=web")).is_empty()
        }),
    )
    .await
    .expect("web's dependents deleted");
}
