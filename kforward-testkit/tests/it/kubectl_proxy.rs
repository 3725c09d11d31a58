//! The real kubectl 1.35 through real proxies (tinyproxy, Squid over TLS, microsocks), the
//! API server accepting the proxies' addresses only, as kforward's own tests use them: the
//! testkit serves proxied clients as Kubernetes does, and kforward's choices match
//! kubectl's. The cluster listens on `198.18.0.1`, since kubectl never uses the
//! environment's proxy for a loopback server.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use kforward_testkit::proxies::{
    ProxyKind, ProxyOptions, RealProxy, non_loopback_address_or_skip, start_or_skip,
};
use kforward_testkit::{Cluster, DEMO_NAMESPACE};

use crate::{bounded, http_get, pod_names};

/// Every variable that could send kubectl to a proxy, removed so that only the test's apply.
const PROXY_VARS: [&str; 9] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
];

/// kubectl with `kubeconfig`, `env` and nothing else proxy-related.
fn kubectl_cmd(
    bin: &Path,
    kubeconfig: &Path,
    cache: &Path,
    env: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=20s")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn get_pods(bin: &Path, kubeconfig: &Path, cache: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = kubectl_cmd(bin, kubeconfig, cache, env);
    cmd.args(["get", "pods", "-n", DEMO_NAMESPACE, "-o", "name"]);
    bounded("kubectl get pods", cmd.output())
        .await
        .expect("kubectl runs")
}

/// `kubectl port-forward svc/web :80` (killed on drop) and the local port it chose.
async fn port_forward(
    bin: &Path,
    kubeconfig: &Path,
    cache: &Path,
    env: &[(&str, String)],
    websockets: bool,
) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = kubectl_cmd(bin, kubeconfig, cache, env);
    cmd.args([
        "port-forward",
        "-n",
        DEMO_NAMESPACE,
        "svc/web",
        ":80",
        "--address",
        "127.0.0.1",
    ])
    .env(
        "KUBECTL_PORT_FORWARD_WEBSOCKETS",
        if websockets { "true" } else { "false" },
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("kubectl port-forward starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = bounded("kubectl port-forward to print its port", lines.next_line())
        .await
        .expect("a line")
        .unwrap_or_else(|| panic!("kubectl port-forward exited (websockets {websockets})"));
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
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
    let mut entry = cluster.kubeconfig_entry();
    if let (Some(ca), Some(extra)) = (entry.ca_pem.as_mut(), proxy_ca) {
        ca.push_str(extra);
    }
    let mut config = kforward_testkit::kubeconfig_json(&[entry]);
    if let Some(p) = proxy_url {
        config["clusters"][0]["cluster"]["proxy-url"] = serde_json::json!(p);
    }
    let path = dir.join(file);
    std::fs::write(&path, config.to_string()).expect("kubeconfig written");
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
    let cache = dir.path().join("cache");
    let ca = std::fs::read_to_string(tls.ca_file().expect("CA")).expect("the proxy's CA");
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let with_ca = kubeconfig(&cluster, dir.path(), "with-ca", None, Some(&ca));

    let web = pod_names(&cluster, "app=web");
    let cases: Vec<(&str, PathBuf, Vec<(&str, String)>)> = vec![
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
        let out = get_pods(&bin, &config, &cache, &env).await;
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
            let (child, port) = port_forward(&bin, &config, &cache, &env, websockets).await;
            let mut s = bounded(
                "connect",
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .expect("connect");
            let (code, body) = bounded("a reply through kubectl", http_get(&mut s)).await;
            assert_eq!(code, 200, "{what} (websockets {websockets})");
            assert!(web.contains(&body.trim().to_string()), "{what}: {body:?}");
            drop(child);
        }
    }
    // kubectl's NO_PROXY takes host and port, as kforward's does. A rule for another port
    // leaves kubectl on the proxy (the only way in)...
    let other_port = [("HTTPS_PROXY", http.url()), ("NO_PROXY", format!("{ip}:1"))];
    let out = get_pods(&bin, &plain, &cache, &other_port).await;
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
    let out = get_pods(&bin, &plain, &cache, &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
