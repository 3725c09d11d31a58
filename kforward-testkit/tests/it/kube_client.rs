//! The testkit's API agrees with kube-rs: typed reads and writes, errors as `Status`,
//! access reviews, port-forward over WebSocket, and the runtime watcher.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kforward_testkit::{DEMO_NAMESPACE, HTTP_IMAGE, KubeconfigEntry, write_kubeconfig};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    api_status, bounded, client, client_from, demo, eventually, http_get, name, pod_ip, pod_names,
    ready_condition,
};

fn web_pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("app".into(), "adhoc".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_container() -> Container {
    Container {
        name: "http".into(),
        image: Some(HTTP_IMAGE.into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[tokio::test]
async fn pods_list_with_label_and_field_selectors() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);

    let all = bounded("list pods", pods.list(&ListParams::default()))
        .await
        .expect("list pods");
    assert_eq!(all.items.len(), 6, "web x2, echo, dns, db-0, db-1");
    assert!(
        all.metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty())
    );

    let web = bounded(
        "list web pods",
        pods.list(&ListParams::default().labels("app=web")),
    )
    .await
    .expect("list app=web");
    let mut names: Vec<String> = web.items.iter().map(name).collect();
    names.sort();
    let mut expected = pod_names(&cluster, "app=web");
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(names.len(), 2);

    let one = &names[0];
    let by_name = bounded(
        "list by field selector",
        pods.list(&ListParams::default().fields(&format!("metadata.name={one}"))),
    )
    .await
    .expect("list metadata.name");
    assert_eq!(
        by_name.items.iter().map(name).collect::<Vec<_>>(),
        vec![one.clone()]
    );

    let none = bounded(
        "list by both selectors",
        pods.list(
            &ListParams::default()
                .labels("app=echo")
                .fields(&format!("metadata.name={one}")),
        ),
    )
    .await
    .expect("list with both selectors");
    assert!(none.items.is_empty(), "selectors are ANDed");
}

#[tokio::test]
async fn pod_get_and_404_status() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    let pod = bounded("get pod", pods.get(&echo)).await.expect("get echo");
    assert_eq!(pod.metadata.namespace.as_deref(), Some(DEMO_NAMESPACE));
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert!(ready_condition(&pod));

    let status = api_status(bounded("get missing pod", pods.get("nope")).await);
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "pods \"nope\" not found");
    let details = status.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("nope", "pods")
    );
}

#[tokio::test]
async fn service_has_named_target_port() {
    let cluster = demo().await;
    let services: Api<Service> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let web = bounded("get service", services.get("web"))
        .await
        .expect("get web");
    let spec = web.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(
        spec.cluster_ip
            .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    assert_eq!(
        spec.selector,
        Some(BTreeMap::from([("app".into(), "web".into())]))
    );
}

#[tokio::test]
async fn endpoint_slices_resolve_the_named_port() {
    let cluster = demo().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let list = bounded(
        "list slices",
        slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")),
    )
    .await
    .expect("list web slices");
    assert_eq!(list.items.len(), 1);
    let slice = &list.items[0];
    assert_eq!(slice.address_type, "IPv4");
    let ports = slice.ports.as_ref().expect("ports");
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, Some(8080), "named targetPort resolved");
    let mut addresses: Vec<String> = slice
        .endpoints
        .iter()
        .flatten()
        .inspect(|e| {
            let c = e.conditions.as_ref().expect("conditions");
            assert_eq!(c.ready, Some(true));
            assert_eq!(c.terminating, Some(false));
            assert_eq!(
                e.target_ref.as_ref().and_then(|r| r.kind.as_deref()),
                Some("Pod")
            );
        })
        .flat_map(|e| e.addresses.clone())
        .collect();
    addresses.sort();
    let mut ips: Vec<String> = cluster
        .pods(DEMO_NAMESPACE, Some("app=web"))
        .iter()
        .map(pod_ip)
        .collect();
    ips.sort();
    assert_eq!(addresses, ips);
}

#[tokio::test]
async fn deployment_get_and_strategic_merge_patch() {
    let cluster = demo().await;
    let deployments: Api<Deployment> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let web = bounded("get deployment", deployments.get("web"))
        .await
        .expect("get web");
    assert_eq!(web.spec.replicas, Some(2));
    assert_eq!(web.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
    let generation = web.metadata.generation.expect("generation");

    let patch = json!({"metadata": {"labels": {"team": "kforward"}}});
    let patched = bounded(
        "patch labels",
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)),
    )
    .await
    .expect("strategic merge patch of labels");
    let labels = patched.metadata.labels.expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("kforward"));
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("web"),
        "merged, not replaced"
    );
    assert_eq!(
        patched.metadata.generation,
        Some(generation),
        "metadata only"
    );

    let patch = json!({"spec": {"replicas": 3}});
    let patched = bounded(
        "patch replicas",
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)),
    )
    .await
    .expect("strategic merge patch of replicas");
    assert_eq!(patched.metadata.generation, Some(generation + 1));
    bounded(
        "web to have 3 ready replicas",
        cluster.wait_deployment_ready(DEMO_NAMESPACE, "web", crate::WAIT),
    )
    .await
    .expect("scaled to 3");
    assert_eq!(cluster.ready_pods(DEMO_NAMESPACE, "app=web").len(), 3);

    // Lists with a patch merge key merge by it: a new image keeps the container's ports.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "kforward/http:2"}
    ]}}}});
    let patched = bounded(
        "patch the image",
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)),
    )
    .await
    .expect("strategic merge patch of the image");
    let containers = &patched.spec.template.spec.expect("pod spec").containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("kforward/http:2"));
    let ports = containers[0].ports.as_ref().expect("ports kept");
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("http"), 8080)
    );
}

#[tokio::test]
async fn pod_create_runs_and_delete_removes_it() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let created = bounded(
        "create pod",
        pods.create(
            &PostParams::default(),
            &web_pod("adhoc", vec![http_container()]),
        ),
    )
    .await
    .expect("create pod");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let ready = eventually("the new pod to turn Ready", || async {
        let p = pods.get("adhoc").await.expect("get the new pod");
        ready_condition(&p).then_some(p)
    })
    .await;
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    let ip = pod_ip(&ready);
    let mut conn = bounded(
        "connect to the pod IP",
        tokio::net::TcpStream::connect((ip.as_str(), 8080)),
    )
    .await
    .expect("connect to the new pod");
    let (code, body) = bounded("GET the new pod", http_get(&mut conn)).await;
    assert_eq!((code, body.as_str()), (200, "adhoc\n"));

    bounded("delete pod", pods.delete("adhoc", &DeleteParams::default()))
        .await
        .expect("delete the pod");
    eventually("the pod to be removed", || async {
        match pods.get("adhoc").await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            Ok(_) => None,
            Err(e) => panic!("unexpected error while waiting for removal: {e}"),
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_token_gets_401_status() {
    let cluster = demo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    let entry = KubeconfigEntry {
        token: "not-the-token".into(),
        ..cluster.kubeconfig_entry()
    };
    write_kubeconfig(&path, &[entry]).expect("write a kubeconfig with a bad token");
    let pods: Api<Pod> = Api::namespaced(client_from(&path).await, DEMO_NAMESPACE);
    let status =
        api_status(bounded("list with a bad token", pods.list(&ListParams::default())).await);
    assert_eq!(status.code, 401);
    assert_eq!(
        status.reason, "Unauthorized",
        "the body is a Status: {status:?}"
    );
    assert_eq!(status.message, "Unauthorized");
    assert!(status.is_failure());
}

#[tokio::test]
async fn duplicate_create_conflicts_and_pod_without_containers_is_invalid() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let existing = pod_names(&cluster, "app=echo").remove(0);
    let status = api_status(
        bounded(
            "create duplicate",
            pods.create(
                &PostParams::default(),
                &web_pod(&existing, vec![http_container()]),
            ),
        )
        .await,
    );
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(
        status.message,
        format!("pods \"{existing}\" already exists")
    );

    let status = api_status(
        bounded(
            "create without containers",
            pods.create(&PostParams::default(), &web_pod("empty", Vec::new())),
        )
        .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        "Pod \"empty\" is invalid: spec.containers: Required value"
    );
    assert!(
        cluster.pod(DEMO_NAMESPACE, "empty").is_err(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn self_subject_access_review_follows_deny() {
    let cluster = demo().await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client(&cluster).await);
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(DEMO_NAMESPACE.into()),
                verb: Some("create".into()),
                resource: Some("pods".into()),
                subresource: Some("portforward".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let allowed = bounded("review", reviews.create(&PostParams::default(), &review))
        .await
        .expect("create a review");
    assert!(allowed.status.expect("status").allowed);

    cluster.deny("create", "pods/portforward");
    let denied = bounded(
        "review after deny",
        reviews.create(&PostParams::default(), &review),
    )
    .await
    .expect("create a review after deny");
    let status = denied.status.expect("status");
    assert!(!status.allowed);
    assert_eq!(status.denied, Some(true));
}

#[tokio::test]
async fn portforward_to_web_pod_serves_its_name() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let web = pod_names(&cluster, "app=web").remove(0);
    let mut pf = bounded("port-forward", pods.portforward(&web, &[8080]))
        .await
        .expect("port-forward to web");
    let mut stream = pf.take_stream(8080).expect("a stream for port 8080");
    let (code, body) = bounded("GET through the port-forward", http_get(&mut stream)).await;
    assert_eq!(code, 200);
    assert_eq!(body, format!("{web}\n"));
    drop(stream);
    // After the server closes the WebSocket, kube-rs may report SendAfterClosing: tolerated.
    let _ = bounded("port-forward to end", pf.join()).await;
}

#[tokio::test]
async fn portforward_to_echo_pod_echoes() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let echo = pod_names(&cluster, "app=echo").remove(0);
    let mut pf = bounded("port-forward", pods.portforward(&echo, &[7000]))
        .await
        .expect("port-forward to echo");
    let mut stream = pf.take_stream(7000).expect("a stream for port 7000");
    // More than one kube-rs chunk (4096 bytes) and one testkit frame each way.
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let write = async {
        wr.write_all(&sent)
            .await
            .expect("write through the port-forward");
    };
    let read = async {
        let mut got = vec![0u8; sent.len()];
        rd.read_exact(&mut got).await.expect("read the echo");
        got
    };
    let ((), got) = bounded(
        "echo through the port-forward",
        futures::future::join(write, read),
    )
    .await;
    assert!(got == sent, "the echo matches what was sent");
    drop(stream);
    pf.abort();
}

#[tokio::test]
async fn portforward_without_upgrade_is_400() {
    let cluster = demo().await;
    let kube = client(&cluster).await;
    let web = pod_names(&cluster, "app=web").remove(0);
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{DEMO_NAMESPACE}/pods/{web}/portforward?ports=8080"
    ))
    .body(Vec::new())
    .expect("a request");
    let status = api_status(bounded("plain GET", kube.request_text(request)).await);
    assert_eq!(status.code, 400);
    assert_eq!(status.reason, "BadRequest");
    assert_eq!(status.message, "Upgrade request required");
}

#[tokio::test]
async fn runtime_watcher_sees_a_pod_replaced() {
    let cluster = demo().await;
    let pods: Api<Pod> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let old = pod_names(&cluster, "app=echo").remove(0);
    let mut events = watcher(pods, watcher::Config::default().labels("app=echo")).boxed();
    let mut seen: BTreeMap<String, Pod> = BTreeMap::new();
    let mut buffer = BTreeMap::new();
    // The initial list first.
    bounded("the watcher's initial list", async {
        loop {
            match events
                .next()
                .await
                .expect("watcher stream")
                .expect("watcher event")
            {
                watcher::Event::Init => buffer.clear(),
                watcher::Event::InitApply(p) => {
                    buffer.insert(name(&p), p);
                }
                watcher::Event::InitDone => break,
                other => panic!("unexpected event before InitDone: {other:?}"),
            }
        }
    })
    .await;
    seen.append(&mut buffer);
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), vec![old.clone()]);

    cluster
        .delete_pod(DEMO_NAMESPACE, &old)
        .expect("delete the echo pod");
    let mut saw_deleted = false;
    let replacement = bounded("the watcher to see the replacement Ready", async {
        loop {
            match events
                .next()
                .await
                .expect("watcher stream")
                .expect("watcher event")
            {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    seen.insert(name(&p), p);
                }
                watcher::Event::Delete(p) => {
                    saw_deleted |= name(&p) == old;
                    seen.remove(&name(&p));
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            if saw_deleted
                && let Some(p) = seen.values().find(|p| name(p) != old && ready_condition(p))
            {
                break p.clone();
            }
        }
    })
    .await;
    assert!(!seen.contains_key(&old), "the deleted pod disappeared");
    assert_ne!(pod_ip(&replacement), "");
}
