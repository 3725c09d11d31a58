//! Every error a user can meet, with its message.

use std::time::Duration;

use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Error, Forward, ForwardOptions, Forwarder, KubeContext, KubeconfigSource};

use crate::common::*;

async fn start_err(ctx: &KubeContext, spec: ForwardSpec, opts: ForwardOptions) -> Error {
    let mut f = Forward::new(ctx.clone(), spec, opts);
    tokio::time::timeout(WAIT, f.start())
        .await
        .expect("answer in time")
        .expect_err("start must fail")
}

#[tokio::test]
async fn local_port_in_use_names_the_address_and_suggests_a_free_port() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let e = start_err(&ctx, spec("svc/web", port, 80), quick()).await;
    let msg = e.to_string();
    assert_eq!(
        msg,
        format!("local port 127.0.0.1:{port} is already in use (try 0:80 to pick a free one)")
    );
}

#[tokio::test]
async fn missing_service_and_pod_name_namespace_and_name() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let e = start_err(&ctx, spec("svc/nope", 0, 80), quick()).await;
    assert_eq!(
        e.to_string(),
        "service \"nope\" not found in namespace \"demo\""
    );
    let e = start_err(&ctx, spec("pod/nope", 0, 80), quick()).await;
    assert_eq!(
        e.to_string(),
        "pod \"nope\" not found in namespace \"demo\""
    );
    let e = start_err(&ctx, spec("deploy/nope", 0, 80), quick()).await;
    assert_eq!(
        e.to_string(),
        "deployment \"nope\" not found in namespace \"demo\""
    );
}

#[tokio::test]
async fn a_udp_forward_to_a_missing_target_fails_at_start_as_tcp_does() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    for target in ["svc/nope", "pod/nope"] {
        let udp = spec(target, 0, 53).with_protocol(kforward_core::spec::Protocol::Udp);
        let e = start_err(&ctx, udp, quick()).await;
        let kind = if target.starts_with("svc") {
            "service"
        } else {
            "pod"
        };
        assert_eq!(
            e.to_string(),
            format!("{kind} \"nope\" not found in namespace \"demo\""),
        );
    }
    // No relay pod is made for a target that does not exist.
    assert!(
        cluster
            .pods("demo", Some("app.kubernetes.io/name=kforward-relay"))
            .is_empty()
    );
}

#[tokio::test]
async fn no_ready_pod_waits_then_says_so() {
    let cluster = demo().await;
    cluster.scale("demo", "echo", 0).expect("scale");
    cluster
        .wait_for("echo to have no pods", WAIT, |c| {
            c.pods("demo", Some("app=echo")).is_empty()
        })
        .await
        .expect("scaled down");
    let ctx = context(&cluster).await;
    let opts = ForwardOptions {
        pod_running_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let e = start_err(&ctx, spec("svc/echo", 0, 7000), opts).await;
    assert_eq!(
        e.to_string(),
        "no ready pod for svc/echo in namespace \"demo\" after waiting 1s (see --pod-running-timeout)"
    );
}

#[tokio::test]
async fn forbidden_names_verb_resource_and_namespace() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    cluster.deny("create", "pods/portforward");
    let e = kforward_core::Tunnel::open(
        &ctx,
        "demo",
        &cluster.pods("demo", Some("app=web"))[0]
            .metadata
            .name
            .clone()
            .expect("name"),
        8080,
    )
    .await
    .expect_err("403");
    assert!(e.is_permission_denied());
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "permission denied: your user cannot create pods/portforward in namespace \"demo\""
        ),
        "{msg}"
    );
    // Services are read from a shared list of the namespace's services when the user may
    // list them, and asked for one by one (a GET) otherwise: deny both.
    cluster.deny("*", "services");
    let e = start_err(&ctx, spec("svc/web", 0, 80), quick()).await;
    assert!(
        e.to_string()
            .starts_with("permission denied: your user cannot get services in namespace \"demo\""),
        "{e}"
    );
}

#[tokio::test]
async fn expired_credentials_are_a_401() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    cluster.expire_token().expect("expire");
    let e = start_err(&ctx, spec("svc/web", 0, 80), quick()).await;
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(
        e.to_string()
            .contains("rejected the credentials (401 Unauthorized)"),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_context_lists_the_contexts() {
    let cluster = demo().await;
    let src = KubeconfigSource::default()
        .with_path(cluster.kubeconfig_path())
        .with_context("prod");
    let e = KubeContext::load(&src).await.expect_err("unknown context");
    assert_eq!(
        e.to_string(),
        format!(
            "context \"prod\" does not exist in the kubeconfig (contexts there: {})",
            cluster.name()
        )
    );
}

#[tokio::test]
async fn unreachable_api_server_names_the_url() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let url = cluster.server_url();
    drop(cluster);
    let e = start_err(&ctx, spec("svc/web", 0, 80), quick()).await;
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach the API server at {url}")),
        "{e}"
    );
}

#[tokio::test]
async fn refused_pod_port_reports_the_error_channel() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let pod = cluster.pods("demo", Some("app=web"))[0]
        .metadata
        .name
        .clone()
        .expect("name");
    let mut t = kforward_core::Tunnel::open(&ctx, "demo", &pod, 9999)
        .await
        .expect("tunnel opens");
    t.ready().await.expect("the port prefix arrives first");
    let mut buf = [0u8; 16];
    let e = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut t, &mut buf))
        .await
        .expect("in time")
        .expect_err("refused");
    assert!(e.to_string().contains("connect: connection refused"), "{e}");
    let _ = (Target::Pod { name: pod }, PortMapping::new(0, 1));
}
