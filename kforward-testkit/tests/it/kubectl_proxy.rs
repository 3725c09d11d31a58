//! The real kubectl 1.35 through real proxies (tinyproxy, Squid over TLS, microsocks), the
//! API server accepting the proxies' addresses only, as kforward's own tests use them: the
//! testkit serves proxied clients as Kubernetes does, and kforward's choices match
//! kubectl's. The cluster listens on `198.18.0.1`, since kubectl never uses the
//! environment's proxy for a loopback server.

use std::path::{Path, PathBuf};

use kforward_testkit::proxies::{
    ProxyKind, ProxyOptions, RealProxy, non_loopback_address_or_skip, start_or_skip,
};
use kforward_testkit::{BehindProxy, Cluster, DEMO_NAMESPACE};

use crate::bounded;
use crate::kubectl::{Kubectl, http_get_pod_name, port_forward};
use crate::pod_names;

async fn get_pods(k: &Kubectl) -> std::process::Output {
    k.run(&["get", "pods", "-n", DEMO_NAMESPACE, "-o", "name"], &[])
        .await
}

/// A kubeconfig for `cluster` with `proxy_url`; `proxy_ca` joins the cluster's CA in its
/// bundle: Go checks an `https://` proxy with the server's TLS settings, so that is where a
/// kubectl user puts the proxy's CA.
fn kubeconfig(
    cluster: &Cluster,
    dir: &Path,
    file: &str,
    proxy_url: Option<&str>,
    proxy_ca: Option<&str>,
) -> PathBuf {
    let mut how = BehindProxy::new();
    if let Some(p) = proxy_url {
        how = how.proxy_url(p);
    }
    if let Some(ca) = proxy_ca {
        how = how.extra_ca(ca);
    }
    let path = dir.join(file);
    cluster
        .write_kubeconfig_behind(&path, &how)
        .expect("kubeconfig written");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_and_port_forwards_through_each_proxy_over_both_transports() {
    let Some(bin) = crate::kubectl::kubectl().await else {
        return;
    };
    let Some(ip) = non_loopback_address_or_skip(1) else {
        return;
    };
    let cluster = bounded(
        "the demo cluster",
        Cluster::builder().demo().api_addr((ip, 0).into()).start(),
    )
    .await
    .expect("the demo cluster starts");
    let auth = || ProxyOptions::default().with_auth("alice", "s3cret");
    let Some(http) = start_or_skip(ProxyKind::Tinyproxy, auth()).await else {
        return;
    };
    let Some(tls) = start_or_skip(ProxyKind::Squid, auth().with_tls()).await else {
        return;
    };
    let Some(socks) = start_or_skip(
        ProxyKind::Microsocks,
        ProxyOptions::default().with_auth("bob", "pw"),
    )
    .await
    else {
        return;
    };
    let proxies: [&RealProxy; 3] = [&http, &tls, &socks];
    cluster.api_only_from(proxies.map(RealProxy::outbound_ip));
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = std::fs::read_to_string(tls.ca_file().expect("CA")).expect("the proxy's CA");
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let with_ca = kubeconfig(&cluster, dir.path(), "with-ca", None, Some(&ca));

    let web = pod_names(&cluster, "app=web");
    /// What is tried, with which kubeconfig and environment.
    type Case<'a> = (&'a str, PathBuf, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (
            "proxy-url http",
            kubeconfig(&cluster, dir.path(), "a", Some(&http.url()), None),
            vec![],
        ),
        (
            "proxy-url https",
            kubeconfig(&cluster, dir.path(), "b", Some(&tls.url()), Some(&ca)),
            vec![],
        ),
        (
            "proxy-url socks5",
            kubeconfig(&cluster, dir.path(), "c", Some(&socks.url()), None),
            vec![],
        ),
        (
            "HTTPS_PROXY",
            plain.clone(),
            vec![("HTTPS_PROXY", http.url())],
        ),
        (
            "HTTPS_PROXY over TLS",
            with_ca.clone(),
            vec![("HTTPS_PROXY", tls.url())],
        ),
    ];
    for (what, config, env) in cases {
        let k = Kubectl::with(bin.clone(), config, &env);
        let out = get_pods(&k).await;
        assert!(
            out.status.success(),
            "{what}: kubectl get pods: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("pod/web-"),
            "{what}"
        );
        for websockets in [true, false] {
            let (child, port) = port_forward(&k, "svc/web", "80", websockets).await;
            let name = http_get_pod_name(port).await;
            assert!(
                web.contains(&name),
                "{what} (websockets {websockets}): {name:?}"
            );
            drop(child);
        }
    }
    // kubectl's NO_PROXY takes host and port, as kforward's does. A rule for another port
    // leaves kubectl on the proxy (the only way in)...
    let other_port = [("HTTPS_PROXY", http.url()), ("NO_PROXY", format!("{ip}:1"))];
    let out = get_pods(&Kubectl::with(bin.clone(), plain.clone(), &other_port)).await;
    assert!(
        out.status.success(),
        "a rule for another port left kubectl on the proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and the API server's own address and port sends it direct, past a proxy that is
    // not running.
    cluster.api_from_anywhere();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let env = [
        ("HTTPS_PROXY", dead),
        ("NO_PROXY", format!("{ip}:{}", cluster.api_addr().port())),
    ];
    let out = get_pods(&Kubectl::with(bin, plain, &env)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
