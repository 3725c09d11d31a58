//! Relay pods where a real cluster gets in the way: an air-gapped node, an admission
//! webhook, Pod Security, a node selector no node matches. Each must be reported quickly,
//! naming the image or the reason and the flag that changes it.

use std::time::Duration;

use kforward_core::relay::{PodPatch, RelayOptions, RelayPods, default_image};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Error, Forward, ForwardOptions, Forwarder};
use kforward_testkit::{Cluster, DEMO_EXTERNAL_HOST, POD_SECURITY_ENFORCE};

use crate::common::*;

/// The issue's bound: reported within 10 s of the kubelet (or the API server) saying so.
const REPORTED_WITHIN: Duration = Duration::from_secs(10);
const MIRRORED: &str = "registry.corp.example:5000/tools/kforward-relay:0.1.0";

fn proxy_spec(cluster: &Cluster) -> ForwardSpec {
    let real = cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("external host");
    ForwardSpec::new(
        Target::Remote {
            host: DEMO_EXTERNAL_HOST.into(),
        },
        [PortMapping::new(0, real.port())],
    )
    .with_namespace("demo")
}

/// Starts a proxy forward with `relay`, bounded by [`REPORTED_WITHIN`].
async fn start_proxy(
    cluster: &Cluster,
    relay: RelayOptions,
) -> (Forward, Result<Vec<kforward_core::BoundPort>, Error>) {
    let ctx = context(cluster).await;
    let opts = ForwardOptions { relay, ..quick() };
    let mut f = Forward::new(ctx, proxy_spec(cluster), opts);
    let r = tokio::time::timeout(REPORTED_WITHIN, f.start())
        .await
        .expect("the outcome is known within 10 s");
    (f, r)
}

fn no_relay_pods_left(cluster: &Cluster) -> bool {
    cluster
        .pods("demo", Some("app.kubernetes.io/name=kforward-relay"))
        .is_empty()
}

#[tokio::test]
async fn air_gapped_the_default_image_fails_fast_naming_it_and_a_mirrored_one_works() {
    let cluster = demo().await;
    cluster.air_gap();
    let (_f, r) = start_proxy(&cluster, RelayOptions::default()).await;
    let e = r.expect_err("the default image cannot be pulled");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{:?}", default_image())) && msg.contains("--relay-image"),
        "{msg}"
    );
    assert!(
        msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff"),
        "{msg}"
    );
    assert!(!e.is_retryable(), "a missing image needs the user");
    cluster
        .wait_for(
            "the failed relay pod to be deleted",
            WAIT,
            no_relay_pods_left,
        )
        .await
        .expect("no pod left behind");

    cluster.preload_image(MIRRORED);
    let relay = RelayOptions {
        image: MIRRORED.into(),
        ..RelayOptions::default()
    };
    let (mut f, r) = start_proxy(&cluster, relay).await;
    let addr = r.expect("the mirrored image runs")[0].local_addr;
    let reply = http_get(addr, "/").await;
    assert!(
        reply.contains("hello from private.example.internal"),
        "{reply}"
    );
    f.stop().await;
}

#[tokio::test]
async fn an_invalid_image_name_is_named() {
    let cluster = demo().await;
    let relay = RelayOptions {
        image: "Registry.Example/Relay".into(),
        ..RelayOptions::default()
    };
    let (_f, r) = start_proxy(&cluster, relay).await;
    let msg = r.expect_err("invalid").to_string();
    assert!(
        msg.contains("InvalidImageName") && msg.contains("Registry.Example/Relay"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_admission_webhook_refusal_is_reported_with_its_message() {
    let cluster = demo().await;
    cluster.deny_pods(
        "demo",
        "policy.corp.example",
        "pods must carry the label team",
    );
    let (_f, r) = start_proxy(&cluster, RelayOptions::default()).await;
    let e = r.expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("admission webhook \"policy.corp.example\" denied the request: pods must carry the label team")
            && msg.contains("--relay-pod-patch"),
        "{msg}"
    );
    assert!(!e.is_permission_denied(), "admission is not RBAC: {msg}");
    // With the label the policy wants, added by a patch, the webhook is satisfied here
    // by being removed; the patch shows up on the pod.
    cluster.allow_pods("demo");
    let relay = RelayOptions {
        pod_patch: Some(
            PodPatch::parse(r#"{"metadata":{"labels":{"team":"tools"}}}"#, "test").expect("patch"),
        ),
        ..RelayOptions::default()
    };
    let (mut f, r) = start_proxy(&cluster, relay).await;
    r.expect("admitted");
    let pods = cluster.pods("demo", Some("team=tools"));
    assert_eq!(pods.len(), 1, "the patched label is on the relay pod");
    f.stop().await;
}

#[tokio::test]
async fn pod_security_restricted_admits_the_relay_unless_a_patch_weakens_it() {
    let cluster = demo().await;
    cluster
        .label_namespace("demo", POD_SECURITY_ENFORCE, "restricted")
        .expect("label");
    let (mut f, r) = start_proxy(&cluster, RelayOptions::default()).await;
    r.expect("the relay meets the restricted profile");
    f.stop().await;
    let weakened = RelayOptions {
        pod_patch: Some(
            PodPatch::parse(
                r#"{"spec":{"containers":[{"name":"relay","securityContext":{"allowPrivilegeEscalation":true}}]}}"#,
                "weaken.json",
            )
            .expect("patch"),
        ),
        ..RelayOptions::default()
    };
    let (_f, r) = start_proxy(&cluster, weakened).await;
    let msg = r.expect_err("refused").to_string();
    assert!(
        msg.contains("violates PodSecurity \"restricted:latest\"")
            && msg.contains("allowPrivilegeEscalation != false")
            && msg.contains("--relay-pod-patch"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_node_selector_no_node_matches_is_reported_as_unschedulable() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let relay = RelayOptions {
        pod_patch: Some(
            PodPatch::parse(r#"{"spec":{"nodeSelector":{"pool":"gpu"}}}"#, "test").expect("patch"),
        ),
        ..RelayOptions::default()
    };
    let pods = RelayPods::new(ctx, relay);
    let r = tokio::time::timeout(REPORTED_WITHIN, pods.pod_for("demo"))
        .await
        .expect("in time");
    let e = r.expect_err("unschedulable");
    let msg = e.to_string();
    assert!(
        msg.contains("Unschedulable") && msg.contains("didn't match Pod's node affinity/selector"),
        "{msg}"
    );
    assert!(e.is_retryable(), "a node may come");
    pods.delete_all().await;
    // A selector the node matches schedules.
    let ctx = context(&cluster).await;
    let fits = RelayOptions {
        pod_patch: Some(
            PodPatch::parse(
                r#"{"spec":{"nodeSelector":{"kubernetes.io/os":"linux"}}}"#,
                "t",
            )
            .expect("patch"),
        ),
        ..RelayOptions::default()
    };
    let pods = RelayPods::new(ctx, fits);
    tokio::time::timeout(REPORTED_WITHIN, pods.pod_for("demo"))
        .await
        .expect("in time")
        .expect("scheduled and ready");
    pods.delete_all().await;
}
