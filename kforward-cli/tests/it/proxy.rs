//! `kforward` behind proxies, as a user runs it: the kubeconfig's `proxy-url` and the
//! environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, `KFORWARD_PROXY_CA`) with real
//! proxies, and an API server that accepts the proxies' addresses only. The environment's
//! proxy never serves a loopback server, so these clusters listen on an address from
//! `198.18.0.0/15` put on `lo` (root needed; on CI a test fails without it).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kforward_testkit::proxies::{
    ProxyKind, ProxyOptions, RealProxy, non_loopback_address_or_skip, start_or_skip,
    with_hosts_file, write_hosts,
};
use kforward_testkit::{BehindProxy, Cluster};

use super::{Running, http_get, kforward, run_to_end};

/// The name tests give the API server, resolved only where a test says so.
const API_NAME: &str = "api.proxied.test";
/// How long a failure may take to be printed.
const FAIL_WITHIN: Duration = Duration::from_secs(5);

/// Every variable that could send kforward to a proxy, removed so that only the test's apply.
const PROXY_VARS: [&str; 10] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "KFORWARD_PROXY_CA",
    "SSL_CERT_FILE",
];

fn clean(mut cmd: Command) -> Command {
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd
}

/// The demo cluster on `198.18.0.1`, its certificate also for [`API_NAME`].
async fn remote_demo() -> Option<Cluster> {
    let ip = non_loopback_address_or_skip(1)?;
    let cluster = Cluster::builder()
        .demo()
        .api_addr((ip, 0).into())
        .tls_name(API_NAME)
        .start()
        .await
        .expect("the demo cluster on a non-loopback address");
    Some(cluster)
}

/// A kubeconfig for `cluster` at `server` (its own URL when `None`), with `proxy_url`.
fn kubeconfig(
    cluster: &Cluster,
    dir: &Path,
    file: &str,
    server: Option<&str>,
    proxy_url: Option<&str>,
) -> std::path::PathBuf {
    kubeconfig_with_ca(cluster, dir, file, server, proxy_url, None)
}

/// As [`kubeconfig`], with `extra_ca` (PEM) in the cluster's CA bundle, where a kubectl user
/// puts an `https://` proxy's CA.
fn kubeconfig_with_ca(
    cluster: &Cluster,
    dir: &Path,
    file: &str,
    server: Option<&str>,
    proxy_url: Option<&str>,
    extra_ca: Option<&str>,
) -> std::path::PathBuf {
    let mut how = BehindProxy::new();
    if let Some(s) = server {
        how = how.server(s);
    }
    if let Some(p) = proxy_url {
        how = how.proxy_url(p);
    }
    if let Some(ca) = extra_ca {
        how = how.extra_ca(ca);
    }
    let path = dir.join(file);
    cluster
        .write_kubeconfig_behind(&path, &how)
        .expect("kubeconfig written");
    path
}

/// `kforward forward svc/web 0:80 -n demo -o json --kubeconfig PATH`, run by `base`.
fn forward(mut base: Command, kubeconfig: &Path) -> Command {
    base.args([
        "forward",
        "svc/web",
        "0:80",
        "-n",
        "demo",
        "-o",
        "json",
        "--kubeconfig",
    ])
    .arg(kubeconfig);
    base
}

/// Runs `cmd` until its forward is ready, checks that it carries two requests, stops it and
/// returns its stderr.
async fn carries(what: &str, cmd: Command) -> String {
    let r = Running::spawn(cmd);
    let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let addr = v["local_addr"].as_str().expect("local_addr").to_string();
    for _ in 0..2 {
        let reply = http_get(&addr).await;
        assert!(reply.contains("\r\n\r\nweb-"), "{what}: {reply}");
    }
    r.signal("-TERM");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{what}: {status:?} {err}");
    err
}

/// `kforward` with the environment `vars` (and nothing else proxy-related).
fn kforward_with(vars: &[(&str, String)]) -> Command {
    let mut c = clean(kforward());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

struct Proxies {
    tiny: RealProxy,
    tiny_auth: RealProxy,
    tls: RealProxy,
    socks: RealProxy,
    socks_resolving: RealProxy,
}

async fn proxies(api_ip: IpAddr) -> Option<Proxies> {
    let auth = || ProxyOptions::default().with_auth("alice", "s3cret");
    Some(Proxies {
        tiny: start_or_skip(ProxyKind::Tinyproxy, ProxyOptions::default()).await?,
        tiny_auth: start_or_skip(ProxyKind::Tinyproxy, auth()).await?,
        tls: start_or_skip(ProxyKind::Squid, auth().with_tls()).await?,
        socks: start_or_skip(
            ProxyKind::Microsocks,
            ProxyOptions::default().with_auth("bob", "p@ss:w"),
        )
        .await?,
        // Resolves the API server's name, which kforward's machine cannot.
        socks_resolving: start_or_skip(
            ProxyKind::Microsocks,
            ProxyOptions::default().with_host(API_NAME, api_ip),
        )
        .await?,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_goes_through_every_kind_of_proxy_from_the_kubeconfig_or_the_environment() {
    let Some(cluster) = remote_demo().await else {
        return;
    };
    let api = cluster.api_addr();
    let Some(p) = proxies(api.ip()).await else {
        return;
    };
    cluster.api_only_from(
        [&p.tiny, &p.tiny_auth, &p.tls, &p.socks, &p.socks_resolving].map(RealProxy::outbound_ip),
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = p.tls.ca_file().expect("the TLS proxy's CA");
    let ca = ca.to_string_lossy().to_string();
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let by_name = format!("https://{API_NAME}:{}", api.port());
    let socks = p.socks.url().replace("p@ss:w", "p%40ss%3Aw");
    let ca_pem = std::fs::read_to_string(&ca).expect("the proxy's CA");
    let bundled = |file: &str, proxy_url: Option<&str>| {
        kubeconfig_with_ca(&cluster, dir.path(), file, None, proxy_url, Some(&ca_pem))
    };

    // Without a proxy the API server is out of reach.
    let (code, _, err) = run_to_end(forward(kforward_with(&[]), &plain));
    assert_eq!(code, 1, "{err}");

    /// What is tried, with which kubeconfig and environment.
    type Case<'a> = (&'a str, std::path::PathBuf, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (
            "proxy-url http",
            kubeconfig(&cluster, dir.path(), "a", None, Some(&p.tiny.url())),
            vec![],
        ),
        (
            "proxy-url http with Basic auth",
            kubeconfig(&cluster, dir.path(), "b", None, Some(&p.tiny_auth.url())),
            vec![],
        ),
        (
            "proxy-url https",
            kubeconfig(&cluster, dir.path(), "c", None, Some(&p.tls.url())),
            vec![("KFORWARD_PROXY_CA", ca.clone())],
        ),
        (
            "proxy-url https, its CA in the kubeconfig's bundle as for kubectl",
            bundled("c2", Some(&p.tls.url())),
            vec![],
        ),
        (
            "proxy-url socks5 with auth",
            kubeconfig(&cluster, dir.path(), "d", None, Some(&socks)),
            vec![],
        ),
        (
            "proxy-url socks5h, a name only the proxy resolves",
            kubeconfig(
                &cluster,
                dir.path(),
                "e",
                Some(&by_name),
                Some(
                    &p.socks_resolving
                        .url()
                        .replacen("socks5://", "socks5h://", 1),
                ),
            ),
            vec![],
        ),
        (
            "HTTPS_PROXY",
            plain.clone(),
            vec![("HTTPS_PROXY", p.tiny_auth.url())],
        ),
        (
            "https_proxy over TLS, CA from SSL_CERT_FILE",
            plain.clone(),
            vec![("https_proxy", p.tls.url()), ("SSL_CERT_FILE", ca.clone())],
        ),
        (
            "ALL_PROXY socks5",
            plain.clone(),
            vec![("ALL_PROXY", socks.clone())],
        ),
        (
            "HTTPS_PROXY, NO_PROXY not matching",
            plain.clone(),
            vec![
                ("HTTPS_PROXY", p.tiny.url()),
                (
                    "NO_PROXY",
                    format!("localhost,.example.com,{}:1,10.0.0.0/8", api.ip()),
                ),
            ],
        ),
        (
            "kube's stock stack, HTTPS_PROXY",
            plain.clone(),
            vec![
                ("HTTPS_PROXY", p.tiny_auth.url()),
                ("KFORWARD_KUBE_CLIENT", "stock".into()),
            ],
        ),
        // kube's stack checks an https:// proxy with the cluster's CAs, as Go does.
        (
            "kube's stock stack, HTTPS_PROXY over TLS",
            bundled("g", None),
            vec![
                ("HTTPS_PROXY", p.tls.url()),
                ("KFORWARD_KUBE_CLIENT", "stock".into()),
            ],
        ),
        // kube's SOCKS5 client sends no credentials: a proxy without auth.
        (
            "kube's stock stack, proxy-url socks5",
            kubeconfig(
                &cluster,
                dir.path(),
                "f",
                None,
                Some(&p.socks_resolving.url()),
            ),
            vec![("KFORWARD_KUBE_CLIENT", "stock".into())],
        ),
    ];
    for (what, config, vars) in cases {
        let mut vars = vars;
        vars.push(("RUST_LOG", "kforward_core=debug".into()));
        let err = carries(what, forward(kforward_with(&vars), &config)).await;
        if !vars.iter().any(|(k, _)| *k == "KFORWARD_KUBE_CLIENT") {
            assert!(
                err.contains("connecting to the API server through the proxy"),
                "{what}: the debug log names the route: {err}"
            );
        }
        assert!(
            !err.contains("s3cret") && !err.contains("p%40ss"),
            "{what}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_proxy_rules_by_host_suffix_range_and_port_bypass_the_environments_proxy() {
    let Some(cluster) = remote_demo().await else {
        return;
    };
    let api = cluster.api_addr();
    let dir = tempfile::tempdir().expect("temporary directory");
    // A proxy nobody runs: going through it would fail.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let by_name = kubeconfig(
        &cluster,
        dir.path(),
        "named",
        Some(&format!("https://{API_NAME}:{}", api.port())),
        None,
    );
    let hosts = write_hosts(dir.path(), &[(API_NAME.to_string(), api.ip())]).expect("hosts");
    let named = |vars: &[(&str, String)]| {
        let mut c = clean(with_hosts_file(env!("CARGO_BIN_EXE_kforward"), &hosts));
        c.env_remove("KUBECONFIG").env("NO_COLOR", "1");
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    };
    let ip = api.ip().to_string();
    let port_rule = format!("{ip}:{}", api.port());
    for (what, rule, by_host) in [
        ("an address", ip.as_str(), false),
        ("a range", "198.18.0.0/15", false),
        ("an address and port", port_rule.as_str(), false),
        ("a host", API_NAME, true),
        ("a .suffix", ".proxied.test", true),
        ("a bare domain", "proxied.test", true),
        ("a *.suffix", "*.proxied.test", true),
    ] {
        let vars = [
            ("HTTPS_PROXY", dead.clone()),
            // Empty entries, as Go skips them (kube's own loader refuses them).
            ("NO_PROXY", format!("example.com,, {rule},")),
            ("RUST_LOG", "kforward_core=debug".to_string()),
        ];
        let cmd = if by_host {
            forward(named(&vars), &by_name)
        } else {
            forward(kforward_with(&vars), &plain)
        };
        let err = carries(what, cmd).await;
        let expect = format!("NO_PROXY rule {:?} matches", rule.trim_start_matches('*'));
        assert!(err.contains(&expect), "{what}: {expect} in {err}");
    }
    // A rule for another port does not match: the dead proxy is used, and said so at once.
    let vars = [
        ("HTTPS_PROXY", dead.clone()),
        ("NO_PROXY", format!("{ip}:1")),
    ];
    let started = Instant::now();
    let (code, _, err) = run_to_end(forward(kforward_with(&vars), &plain));
    assert_eq!(code, 1, "{err}");
    assert!(
        started.elapsed() < FAIL_WITHIN + Duration::from_secs(2),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("through the proxy"))
        .unwrap_or_else(|| panic!("a line naming the proxy: {err}"));
    assert!(
        line.contains(&format!("{dead} (HTTPS_PROXY)"))
            && line.contains(&cluster.server_url())
            && line.contains("cannot connect to the proxy"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_failures_print_one_line_naming_the_proxy_and_what_to_check() {
    let Some(cluster) = remote_demo().await else {
        return;
    };
    let api = cluster.api_addr();
    let Some(squid) = start_or_skip(
        ProxyKind::Squid,
        ProxyOptions::default()
            .with_auth("alice", "s3cret")
            .deny_port(api.port())
            .with_tls(),
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let ca = squid.ca_file().expect("CA").to_string_lossy().to_string();
    let shown = squid
        .url_without_auth()
        .replacen("https://", "https://alice@", 1);
    for (what, vars, expect) in [
        (
            "no CA for the proxy's certificate",
            vec![("HTTPS_PROXY", squid.url())],
            "KFORWARD_PROXY_CA",
        ),
        (
            "wrong credentials",
            vec![
                ("HTTPS_PROXY", squid.url().replace("s3cret", "nope")),
                ("KFORWARD_PROXY_CA", ca.clone()),
            ],
            "rejected the credentials (407",
        ),
        (
            "the proxy's rules",
            vec![
                ("HTTPS_PROXY", squid.url()),
                ("KFORWARD_PROXY_CA", ca.clone()),
            ],
            "refuse this destination (403",
        ),
    ] {
        let started = Instant::now();
        let (code, out, err) = run_to_end(forward(kforward_with(&vars), &plain));
        assert!(
            started.elapsed() < FAIL_WITHIN + Duration::from_secs(2),
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(code, 1, "{what}: {out} {err}");
        let line = err
            .lines()
            .find(|l| l.contains(expect))
            .unwrap_or_else(|| panic!("{what}: {expect} in {err}"));
        assert!(
            line.contains(&shown) && line.contains("(HTTPS_PROXY)"),
            "{what}: {line}"
        );
        assert!(line.contains(&cluster.server_url()), "{what}: {line}");
        assert!(
            !err.contains("s3cret") && !err.contains("nope"),
            "{what}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_and_run_reach_a_private_host_through_the_relays_egress_proxy() {
    let cluster = Cluster::demo().await.expect("cluster");
    let host = kforward_testkit::DEMO_EXTERNAL_HOST;
    let ext = cluster.external_host_addr(host).expect("external host");
    let opts = ProxyOptions::default()
        .with_auth("alice", "s3cret")
        .with_host(host, ext.ip());
    let Some(squid) = start_or_skip(ProxyKind::Squid, opts.clone()).await else {
        return;
    };
    let Some(strict) = start_or_skip(ProxyKind::Squid, opts.deny_port(ext.port())).await else {
        return;
    };
    // Pods reach the outside only through the proxies.
    cluster.egress_only_through([squid.outbound_ip(), strict.outbound_ip()]);
    let kc = cluster.kubeconfig_path().display().to_string();
    let dest = format!("{host}:{}", ext.port());
    let hello = format!("hello from {host} to {}", squid.outbound_ip());

    let proxy_cmd = |proxy: &RealProxy| {
        let mut c = clean(kforward());
        c.args([
            "proxy",
            &dest,
            "0",
            "-n",
            "demo",
            "-o",
            "json",
            "--kubeconfig",
            &kc,
        ])
        .arg("--relay-env")
        .arg(format!("HTTPS_PROXY={}", proxy.url()));
        c
    };
    let r = Running::spawn(proxy_cmd(&squid));
    let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let addr = v["local_addr"].as_str().expect("local_addr").to_string();
    let reply = http_get(&addr).await;
    assert!(reply.contains(&hello), "{reply}");
    r.signal("-TERM");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?} {err}");

    // `run`: a proxy entry and a service entry, the relay's egress from the file's relay
    // section (naming the refusing proxy), which --relay-env overrides variable by variable.
    let forwards = serde_json::json!([
        {"alias": "web", "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80,
         "local_address": "127.0.0.1", "kubeconfig": kc},
        {"alias": "private", "workload_type": "proxy", "remote_address": host,
         "namespace": "demo", "local_port": 0, "remote_port": ext.port(),
         "local_address": "127.0.0.1", "kubeconfig": kc},
    ]);
    let file_text = serde_json::json!({
        "relay": {"env": {"HTTPS_PROXY": strict.url(), "NO_PROXY": ".svc,.cluster.local"}},
        "forwards": forwards,
    })
    .to_string();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("forwards.json");
    std::fs::write(&file, file_text).expect("write");
    let r = Running::spawn({
        let mut c = clean(kforward());
        c.args(["run", "-o", "json", "-f"])
            .arg(&file)
            .arg("--relay-env")
            .arg(format!("HTTPS_PROXY={}", squid.url()));
        c
    });
    let ready = tokio::task::block_in_place(|| r.ready_addrs(2));
    assert!(http_get(&ready["web"]).await.contains("\r\n\r\nweb-"));
    let reply = http_get(&ready["private"]).await;
    assert!(reply.contains(&hello), "{reply}");
    r.signal("-INT");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?} {err}");

    // A proxy that refuses the destination: the connection fails, and the error says why.
    let r = Running::spawn(proxy_cmd(&strict));
    let line = tokio::task::block_in_place(|| r.line_with("\"event\":\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let addr = v["local_addr"].as_str().expect("local_addr").to_string();
    let started = Instant::now();
    let reply = try_get(&addr).await;
    assert!(!reply.contains("hello"), "{reply}");
    let error = tokio::task::block_in_place(|| r.line_with("\"event\":\"error\""));
    assert!(started.elapsed() < FAIL_WITHIN, "{error}");
    assert!(
        error.contains("refuse this destination (403")
            && error.contains("(HTTPS_PROXY of the relay pod)"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    drop(r);

    // An egress proxy the relay cannot use is refused before anything starts, from the
    // command line or the config file (naming the field and the value).
    let mut c = clean(kforward());
    c.args(["proxy", &dest, "0", "-n", "demo", "--kubeconfig", &kc])
        .args(["--relay-env", "HTTPS_PROXY=socks5://proxy.corp:1080"]);
    let (code, _, err) = run_to_end(c);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--relay-env") && err.contains("give the relay an http:// one"),
        "{err}"
    );
    let bad = serde_json::json!({
        "relay": {"env": {"HTTPS_PROXY": "socks5://proxy.corp:1080"}},
        "forwards": forwards,
    });
    std::fs::write(&file, bad.to_string()).expect("write");
    let mut c = clean(kforward());
    c.args(["run", "-f"]).arg(&file);
    let (code, out, err) = run_to_end(c);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains(r#"field "relay.env": value "HTTPS_PROXY=socks5://proxy.corp:1080""#)
            && err.contains("give the relay an http:// one"),
        "{err}"
    );
    assert!(!out.contains("ready"), "nothing started: {out}");
}

/// One HTTP GET; the reply, or what went wrong (a reset connection is an answer here).
async fn try_get(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(30), work).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no reply in time".to_string(),
    }
}

/// `kforward doctor -n demo -o json --kubeconfig PATH` with the environment `vars`: the
/// exit code and the api-server check.
fn doctor_api_check(vars: &[(&str, String)], kubeconfig: &Path) -> (i32, serde_json::Value) {
    let mut cmd = kforward_with(vars);
    cmd.args(["doctor", "-n", "demo", "-o", "json", "--kubeconfig"])
        .arg(kubeconfig);
    let (code, out, err) = tokio::task::block_in_place(|| run_to_end(cmd));
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "api-server"))
        .cloned()
        .unwrap_or_else(|| panic!("an api-server check: {report}"));
    (code, check)
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_which_proxy_of_the_environment_reaches_the_api_server_and_honours_no_proxy() {
    let Some(cluster) = remote_demo().await else {
        return;
    };
    let Some(tiny) = start_or_skip(
        ProxyKind::Tinyproxy,
        ProxyOptions::default().with_auth("alice", "s3cret"),
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let plain = kubeconfig(&cluster, dir.path(), "plain", None, None);
    let ip = cluster.api_addr().ip().to_string();
    let shown = tiny
        .url_without_auth()
        .replacen("http://", "http://alice@", 1);

    // NO_PROXY keeps the server direct (while it still accepts this machine).
    let (code, check) = doctor_api_check(
        &[
            ("HTTPS_PROXY", tiny.url()),
            ("NO_PROXY", format!("example.com,{ip}")),
        ],
        &plain,
    );
    assert_eq!(code, 0, "{check}");
    assert_eq!(check["route"], "direct", "{check}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "reached directly (NO_PROXY rule \"{ip}\" matches)"
        )),
        "{detail}"
    );

    // Only the proxy may reach it now: through HTTPS_PROXY, named without the password.
    cluster.api_only_from([tiny.outbound_ip()]);
    let (code, check) = doctor_api_check(&[("HTTPS_PROXY", tiny.url())], &plain);
    assert_eq!(code, 0, "{check}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "answers, reached through the proxy {shown} (HTTPS_PROXY)"
        )),
        "{detail}"
    );
    assert_eq!(check["proxy_origin"], "HTTPS_PROXY", "{check}");
    assert!(!check.to_string().contains("s3cret"), "{check}");

    // NO_PROXY now sends it direct, which the server refuses: the check fails, saying so.
    let (code, check) = doctor_api_check(
        &[("HTTPS_PROXY", tiny.url()), ("NO_PROXY", ip.clone())],
        &plain,
    );
    assert_ne!(code, 0, "{check}");
    assert_eq!(check["status"], "fail", "{check}");
    assert_eq!(check["route"], "direct", "{check}");

    // A proxy nobody runs, from ALL_PROXY: named in the failure.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let (code, check) = doctor_api_check(&[("ALL_PROXY", dead.clone())], &plain);
    assert_ne!(code, 0, "{check}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("through the proxy {dead} (ALL_PROXY)"))
            && detail.contains(&cluster.server_url()),
        "{detail}"
    );
}
