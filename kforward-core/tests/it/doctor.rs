//! `doctor::diagnose` against the testkit: green by default, and each fault named with
//! what it disables.

use std::time::Duration;

use kforward_core::KubeconfigSource;
use kforward_core::doctor::{DoctorOptions, Report, Status, diagnose};
use kforward_core::relay::{RelayOptions, default_image};
use kforward_testkit::Cluster;

use crate::common::*;

async fn doctor(cluster: &Cluster, opts: DoctorOptions) -> Report {
    let src = KubeconfigSource::default().with_path(cluster.kubeconfig_path());
    tokio::time::timeout(WAIT, diagnose(&src, &opts))
        .await
        .expect("the doctor finishes in time")
}

fn check<'a>(r: &'a Report, name: &str) -> &'a kforward_core::doctor::Check {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {:#?}", r.checks))
}

#[tokio::test]
async fn all_green_by_default_with_every_transport_offered() {
    let cluster = demo().await;
    let r = doctor(&cluster, DoctorOptions::default()).await;
    assert!(r.ok(), "{:#?}", r.checks);
    assert!(
        r.checks.iter().all(|c| c.status == Status::Pass),
        "{:#?}",
        r.checks
    );
    assert_eq!(r.namespace, "demo");
    let t = check(&r, "port-forward transports");
    for name in ["SPDY over WebSocket", "SPDY", "WebSocket v4.channel.k8s.io"] {
        assert_eq!(t.extra["transports"][name], true, "{}", t.detail);
    }
    assert!(
        check(&r, "server-version")
            .detail
            .starts_with("Kubernetes v1.")
    );
    // A loopback server with no proxy set: direct, and said why.
    let api = check(&r, "api-server");
    assert!(
        api.detail.contains("answers, reached directly ("),
        "{}",
        api.detail
    );
    assert_eq!(api.extra["route"], "direct", "{:?}", api.extra);
    let json = r.to_json();
    assert_eq!(json["ok"], true);
    assert!(
        json["checks"]
            .as_array()
            .is_some_and(|c| c.len() == r.checks.len())
    );
}

#[tokio::test]
async fn denied_port_forward_and_pod_creation_are_named_with_what_they_disable() {
    let cluster = demo().await;
    cluster.deny("create", "pods/portforward");
    cluster.deny("create", "pods");
    let r = doctor(&cluster, DoctorOptions::default()).await;
    assert!(!r.ok());
    let pf = check(&r, "access: create pods/portforward");
    assert_eq!(pf.status, Status::Fail);
    assert!(pf.disables[0].contains("every forward"), "{pf:?}");
    let create = check(&r, "access: create pods");
    // Without --relay only UDP and proxy forwards need it: a warning.
    assert_eq!(create.status, Status::Warn);
    assert!(
        create.detail.contains("UDP forwards and proxy forwards"),
        "{create:?}"
    );
    assert_eq!(check(&r, "port-forward transports").status, Status::Skip);
    // The rest is allowed.
    assert_eq!(check(&r, "access: get pods").status, Status::Pass);
    // With --relay the relay's permissions are needed.
    let opts = DoctorOptions {
        relay: Some(RelayOptions::default()),
        ..DoctorOptions::default()
    };
    let r = doctor(&cluster, opts).await;
    assert_eq!(check(&r, "access: create pods").status, Status::Fail);
    let relay = check(&r, "relay");
    assert_eq!(relay.status, Status::Fail);
    assert!(relay.detail.contains("permission denied"), "{relay:?}");
}

#[tokio::test]
async fn a_paused_api_server_is_named_by_its_url() {
    let cluster = demo().await;
    cluster.pause();
    let opts = DoctorOptions {
        request_timeout: Duration::from_secs(1),
        ..DoctorOptions::default()
    };
    let r = doctor(&cluster, opts).await;
    cluster.resume();
    let api = check(&r, "api-server");
    assert_eq!(api.status, Status::Fail);
    assert!(api.detail.contains(&cluster.server_url()), "{api:?}");
    assert_eq!(check(&r, "credentials").status, Status::Skip);
}

#[tokio::test]
async fn the_relay_check_times_a_relay_pod_or_names_the_image_it_cannot_pull() {
    let cluster = demo().await;
    let opts = DoctorOptions {
        relay: Some(RelayOptions::default()),
        ..DoctorOptions::default()
    };
    let r = doctor(&cluster, opts.clone()).await;
    let relay = check(&r, "relay");
    assert_eq!(relay.status, Status::Pass, "{relay:?}");
    assert!(relay.took.is_some());
    cluster
        .wait_for("the doctor's relay pod to be deleted", WAIT, |c| {
            c.pods("demo", Some("app.kubernetes.io/name=kforward-relay"))
                .is_empty()
        })
        .await
        .expect("deleted");
    cluster.air_gap();
    let r = doctor(&cluster, opts).await;
    assert!(!r.ok());
    let relay = check(&r, "relay");
    assert_eq!(relay.status, Status::Fail);
    assert!(
        relay.detail.contains(&default_image()) && relay.detail.contains("--relay-image"),
        "{relay:?}"
    );
}
