//! The API server behind real proxies (tinyproxy, Squid, microsocks, Dante) named by the
//! kubeconfig's `proxy-url`, with the testkit's API server accepting the proxies' outbound
//! addresses only: a forward that works went through a proxy. The environment's proxies
//! (`HTTPS_PROXY`, `NO_PROXY`) and `https://` proxies (`KFORWARD_PROXY_CA`) are tested in
//! the CLI's tests, whose processes get their own environment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kforward_core::client::ApiRoute;
use kforward_core::doctor::{DoctorOptions, Report, Status, diagnose};
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{Error, Forward, Forwarder, KubeContext, KubeconfigSource};
use kforward_testkit::Cluster;
use kforward_testkit::proxies::{ProxyKind, ProxyOptions, start_or_skip};

use crate::common::{WAIT, demo, http_get, quick, spec, start};

/// How long a failure through a proxy may take to be reported (the bound).
const FAIL_WITHIN: Duration = Duration::from_secs(5);

/// A context for `cluster` whose kubeconfig names `proxy_url`, with the server at
/// `server` instead of the cluster's when given.
async fn through_to(
    cluster: &Cluster,
    dir: &tempfile::TempDir,
    proxy_url: &str,
    server: Option<&str>,
) -> KubeContext {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let path = dir.path().join(format!(
        "kubeconfig-{}",
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut how = kforward_testkit::BehindProxy::new().proxy_url(proxy_url);
    if let Some(server) = server {
        how = how.server(server);
    }
    cluster
        .write_kubeconfig_behind(&path, &how)
        .expect("kubeconfig written");
    // A fresh client: the cache would hand back one made for an equal kubeconfig.
    KubeContext::load_fresh(&KubeconfigSource::default().with_path(&path))
        .await
        .expect("kubeconfig loads")
}

async fn through(cluster: &Cluster, dir: &tempfile::TempDir, proxy_url: &str) -> KubeContext {
    through_to(cluster, dir, proxy_url, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_proxy_url_carries_lists_watches_and_tunnels() {
    let kinds = [
        (ProxyKind::Tinyproxy, ProxyOptions::default(), "http"),
        (
            ProxyKind::Tinyproxy,
            ProxyOptions::default().with_auth("alice", "s3cret"),
            "http",
        ),
        (
            ProxyKind::Microsocks,
            ProxyOptions::default().with_auth("bob", "p@ss:w"),
            "socks5",
        ),
        (ProxyKind::Microsocks, ProxyOptions::default(), "socks5h"),
        (ProxyKind::Dante, ProxyOptions::default(), "socks5"),
    ];
    let mut proxies = Vec::new();
    for (kind, opts, scheme) in kinds {
        let Some(p) = start_or_skip(kind, opts).await else {
            return;
        };
        proxies.push((p, scheme));
    }
    let cluster = demo().await;
    cluster.api_only_from(proxies.iter().map(|(p, _)| p.outbound_ip()));
    // Straight to the API server is refused now.
    let direct = crate::common::context(&cluster).await;
    let mut f = Forward::new(direct, spec("svc/web", 0, 80), quick());
    let refused = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time");
    assert!(refused.is_err(), "the API server accepts the proxies only");

    let dir = tempfile::tempdir().expect("temporary directory");
    for (proxy, scheme) in &proxies {
        // The URL as the user writes it: credentials percent-encoded.
        let url = proxy
            .url()
            .replacen("socks5://", &format!("{scheme}://"), 1)
            .replace("p@ss:w", "p%40ss%3Aw");
        let ctx = through(&cluster, &dir, &url).await;
        let route = ctx.api_route().expect("a route").to_string();
        assert!(
            route.starts_with(&format!("through the proxy {scheme}://"))
                && route.contains("proxy-url of cluster")
                && !route.contains("ss:w")
                && !route.contains("s3cret"),
            "{route}"
        );
        // A service forward: a list, a watch of EndpointSlices, and one tunnel per connection.
        let (mut fwd, bound) = start(&ctx, spec("svc/web", 0, 80)).await;
        for _ in 0..3 {
            let body = http_get(bound[0].local_addr, "/").await;
            assert!(body.starts_with("web-"), "{url}: {body}");
        }
        fwd.stop().await;
        let log = proxy.logs();
        assert!(!log.is_empty(), "{url}: the proxy logged its connections");
    }
}

/// Starts forwarding through `url` and returns the error, failing the test unless it came
/// within [`FAIL_WITHIN`].
async fn failure(cluster: &Cluster, dir: &tempfile::TempDir, url: &str) -> Error {
    let ctx = through(cluster, dir, url).await;
    let started = Instant::now();
    let mut f = Forward::new(ctx, spec("svc/web", 0, 80), quick());
    let err = match tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
    {
        Ok(_) => panic!("{url}: forwarding worked"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < FAIL_WITHIN,
        "{url}: the error took {:?}: {err}",
        started.elapsed()
    );
    err
}

/// Checks that `err` is a proxy error naming the proxy (without its password) and the API
/// server, on one line, with `expect` in it.
fn names_the_proxy(err: &Error, cluster: &Cluster, proxy: &str, expect: &str, retryable: bool) {
    let text = err.to_string();
    assert!(matches!(err, Error::Proxy { .. }), "{err:?}");
    assert!(text.contains(proxy), "{text}");
    assert!(text.contains(&cluster.server_url()), "{text}");
    assert!(text.contains(expect), "{text}");
    assert!(!text.contains("s3cret") && !text.contains('\n'), "{text}");
    assert_eq!(err.is_retryable(), retryable, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_proxy_failure_says_what_to_check_within_seconds() {
    let cluster = demo().await;
    let api_port = cluster.api_addr().port();
    let Some(tiny) = start_or_skip(
        ProxyKind::Tinyproxy,
        ProxyOptions::default().with_auth("alice", "s3cret"),
    )
    .await
    else {
        return;
    };
    let Some(squid) = start_or_skip(
        ProxyKind::Squid,
        ProxyOptions::default()
            .with_auth("alice", "s3cret")
            .deny_port(api_port),
    )
    .await
    else {
        return;
    };
    let Some(socks) = start_or_skip(
        ProxyKind::Microsocks,
        ProxyOptions::default().with_auth("bob", "s3cret"),
    )
    .await
    else {
        return;
    };
    let Some(dante) = start_or_skip(
        ProxyKind::Dante,
        ProxyOptions::default().deny_port(api_port),
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };

    // Nothing listens where the proxy should be.
    let url = format!("http://alice:s3cret@{closed}");
    let e = failure(&cluster, &dir, &url).await;
    names_the_proxy(
        &e,
        &cluster,
        &format!("http://alice@{closed}"),
        "cannot connect to the proxy",
        true,
    );

    // 407: no credentials, then wrong ones (Squid answers 407 to both).
    let e = failure(&cluster, &dir, &squid.url_without_auth()).await;
    names_the_proxy(
        &e,
        &cluster,
        &squid.url_without_auth(),
        "wants credentials (407",
        false,
    );
    let wrong = squid.url().replace("s3cret", "wrong");
    let e = failure(&cluster, &dir, &wrong).await;
    names_the_proxy(
        &e,
        &cluster,
        "alice@",
        "rejected the credentials (407",
        false,
    );
    // tinyproxy answers wrong credentials with 401.
    let e = failure(&cluster, &dir, &tiny.url().replace("s3cret", "wrong")).await;
    names_the_proxy(
        &e,
        &cluster,
        "alice@",
        "rejected the credentials (401",
        false,
    );

    // 403: Squid's rules refuse the API server's port.
    let e = failure(&cluster, &dir, &squid.url()).await;
    names_the_proxy(
        &e,
        &cluster,
        &squid.url().replace(":s3cret", ""),
        "refuse this destination (403",
        false,
    );

    // 5xx: the proxy cannot reach the server (nothing listens behind it): tinyproxy answers
    // 500, Squid 503.
    let nowhere = format!("https://{closed}");
    for (proxy, code) in [(&tiny, "(500"), (&squid, "(503")] {
        let ctx = through_to(&cluster, &dir, &proxy.url(), Some(&nowhere)).await;
        let started = Instant::now();
        let mut f = Forward::new(ctx, spec("svc/web", 0, 80), quick());
        let e = tokio::time::timeout(WAIT, f.start())
            .await
            .expect("in time")
            .expect_err("nothing behind the proxy");
        assert!(started.elapsed() < FAIL_WITHIN, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("could not reach the destination") && text.contains(code),
            "{text}"
        );
        assert!(text.contains(&nowhere), "{text}");
        assert!(e.is_retryable(), "{e}");
    }

    // SOCKS5: wrong password, rules refusing the destination.
    let e = failure(&cluster, &dir, &socks.url().replace("s3cret", "wrong")).await;
    names_the_proxy(
        &e,
        &cluster,
        "socks5://bob@",
        "rejected the user name and password",
        false,
    );
    let e = failure(&cluster, &dir, &socks.url_without_auth()).await;
    names_the_proxy(
        &e,
        &cluster,
        &socks.url_without_auth(),
        "wants credentials",
        false,
    );
    let e = failure(&cluster, &dir, &dante.url()).await;
    names_the_proxy(&e, &cluster, &dante.url(), "(reply 2)", false);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_the_proxy_the_api_server_is_reached_through_and_the_one_that_fails() {
    let Some(tiny) = start_or_skip(
        ProxyKind::Tinyproxy,
        ProxyOptions::default().with_auth("alice", "s3cret"),
    )
    .await
    else {
        return;
    };
    let cluster = demo().await;
    cluster.api_only_from([tiny.outbound_ip()]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let run_doctor = |file: &str, proxy_url: String| {
        let path = dir.path().join(file);
        cluster
            .write_kubeconfig_behind(
                &path,
                &kforward_testkit::BehindProxy::new().proxy_url(proxy_url),
            )
            .expect("kubeconfig written");
        async move {
            let opts = DoctorOptions {
                namespace: Some("demo".into()),
                ..DoctorOptions::default()
            };
            diagnose(&KubeconfigSource::default().with_path(&path), &opts).await
        }
    };
    let api = |r: &Report| {
        r.checks
            .iter()
            .find(|c| c.name == "api-server")
            .cloned()
            .unwrap_or_else(|| panic!("an api-server check: {:#?}", r.checks))
    };

    // Through the proxy, the only way in: every check passes, and the route is named
    // without the password.
    let report = run_doctor("through", tiny.url()).await;
    assert!(report.ok(), "{:#?}", report.checks);
    let check = api(&report);
    let shown = tiny
        .url_without_auth()
        .replacen("http://", "http://alice@", 1);
    assert!(
        check.detail.contains(&format!(
            "answers, reached through the proxy {shown} (proxy-url of cluster"
        )),
        "{}",
        check.detail
    );
    assert!(!check.detail.contains("s3cret"), "{}", check.detail);
    assert_eq!(check.extra["route"], "proxy");
    assert_eq!(check.extra["proxy"], shown.as_str());
    assert!(
        check.extra["proxy_origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("proxy-url of cluster")),
        "{:?}",
        check.extra
    );

    // A proxy nobody runs: the API server check fails naming it, the rest is skipped.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let started = Instant::now();
    let report = run_doctor("dead", dead.clone()).await;
    assert!(!report.ok());
    assert!(started.elapsed() < FAIL_WITHIN, "{:?}", started.elapsed());
    let check = api(&report);
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert!(
        check.detail.contains(&format!("through the proxy {dead}"))
            && check.detail.contains(&cluster.server_url()),
        "{}",
        check.detail
    );
    assert_eq!(check.extra["proxy"], dead.as_str());
    let skipped = report.checks.iter().filter(|c| c.status == Status::Skip);
    assert!(skipped.count() > 3, "{:#?}", report.checks);

    // A wrong password: the proxy's refusal (tinyproxy answers 401, not 407), named.
    let report = run_doctor("wrong", tiny.url().replace("s3cret", "nope")).await;
    let check = api(&report);
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert!(
        check.detail.contains(&shown) && check.detail.contains("rejected the credentials"),
        "{}",
        check.detail
    );
    assert!(!check.detail.contains("nope"), "{}", check.detail);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_url_is_used_for_a_loopback_server_and_a_bad_one_is_refused_at_load() {
    let cluster = demo().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig_with_proxy(&path, "ftp://bob:s3cret@proxy.example:21")
        .expect("kubeconfig");
    let err = KubeContext::load_fresh(&KubeconfigSource::default().with_path(&path))
        .await
        .expect_err("ftp is no proxy scheme");
    let text = err.to_string();
    assert!(
        text.contains("proxy-url of cluster") && text.contains("\"ftp\""),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let Some(proxy) = start_or_skip(ProxyKind::Tinyproxy, ProxyOptions::default()).await else {
        return;
    };
    let ctx = through(&cluster, &dir, &proxy.url()).await;
    assert!(matches!(ctx.api_route(), Some(ApiRoute::Proxy { .. })));
    cluster.api_only_from([proxy.outbound_ip()]);
    let (mut fwd, bound) = start(&ctx, spec("deploy/web", 0, 8080)).await;
    let body = http_get(bound[0].local_addr, "/").await;
    assert!(body.starts_with("web-"), "{body}");
    fwd.stop().await;
}

/// One HTTP GET through `addr` with `Host: host`; the whole reply, empty when the connection
/// was closed without one.
async fn get(addr: std::net::SocketAddr, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).to_string()
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("reply in time")
}

fn proxy_spec(host: &str, port: u16) -> ForwardSpec {
    ForwardSpec::new(
        Target::Remote { host: host.into() },
        [PortMapping::new(0, port)],
    )
    .with_namespace("demo")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_reaches_a_private_host_through_its_egress_proxy_and_cluster_names_directly() {
    let cluster = demo().await;
    let host = "private.example.internal";
    let real = cluster
        .add_external_host(host, 0, None)
        .await
        .expect("external host");
    // The proxy knows the private name; pods may reach external hosts through it only.
    let opts = ProxyOptions::default()
        .with_auth("alice", "s3cret")
        .with_host(host, real.ip());
    let Some(squid) = start_or_skip(ProxyKind::Squid, opts.clone()).await else {
        return;
    };
    let Some(strict) = start_or_skip(ProxyKind::Squid, opts.deny_port(real.port())).await else {
        return;
    };
    cluster.egress_only_through([squid.outbound_ip(), strict.outbound_ip()]);
    let ctx = crate::common::context(&cluster).await;
    let mut fopts = quick();
    fopts.relay.env.insert("HTTPS_PROXY".into(), squid.url());

    let mut f = Forward::new(ctx.clone(), proxy_spec(host, real.port()), fopts.clone());
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("proxy forward starts");
    for _ in 0..3 {
        let reply = get(bound[0].local_addr, host).await;
        assert!(
            reply.contains(&format!("hello from {host} to {}", squid.outbound_ip())),
            "{reply}"
        );
    }
    // The relay pod got the proxy and a NO_PROXY that keeps the cluster's names direct.
    let relay = cluster.pods("demo", Some("app.kubernetes.io/name=kforward-relay"));
    let env = &relay[0].spec.as_ref().expect("spec").containers[0].env;
    let no_proxy = env
        .iter()
        .flatten()
        .find(|e| e.name == "NO_PROXY")
        .and_then(|e| e.value.clone())
        .expect("a default NO_PROXY");
    assert!(
        no_proxy.contains(".svc") && no_proxy.contains(".cluster.local"),
        "{no_proxy}"
    );
    f.stop().await;

    // A cluster name stays direct: through Squid it would not resolve.
    let mut f = Forward::new(
        ctx.clone(),
        proxy_spec("web.demo.svc.cluster.local", 80),
        fopts.clone(),
    );
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("proxy forward starts");
    let reply = get(bound[0].local_addr, "web").await;
    assert!(reply.contains("\r\n\r\nweb-"), "{reply}");
    f.stop().await;
    assert!(
        !squid.logs().contains("web.demo"),
        "the cluster name did not go to the proxy: {}",
        squid.logs()
    );

    // A proxy that refuses the destination: the connection fails with the proxy's reason.
    let mut fopts = quick();
    fopts.relay.env.insert("HTTPS_PROXY".into(), strict.url());
    let mut f = Forward::new(ctx.clone(), proxy_spec(host, real.port()), fopts);
    let mut events = f.subscribe();
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("in time")
        .expect("proxy forward starts");
    let started = Instant::now();
    let reply = get(bound[0].local_addr, host).await;
    assert!(!reply.contains("hello"), "{reply}");
    let error = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(kforward_core::Event::Error { message, .. }) => return message,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("an error event");
    assert!(started.elapsed() < FAIL_WITHIN, "{error}");
    assert!(
        error.contains("refuse this destination (403") && error.contains("HTTPS_PROXY"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    f.stop().await;
}
