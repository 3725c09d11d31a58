//! The forward proxy end to end: real clients (curl, Python requests with PySocks, ncat
//! with redis-cli, headless Chromium) and a hand-written SOCKS5 client for the reply codes,
//! against the testkit's demo cluster.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::EnvVar;
use kforward_core::forward_proxy::{ForwardProxy, ForwardProxyOptions, ProxyAuth, Route};
use kforward_core::no_proxy::NoProxy;
use kforward_core::{Event, Forwarder};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::Command;
use tokio::sync::{broadcast, oneshot};

use crate::common::{WAIT, context, demo};

/// A running proxy; stopped on drop.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) events: broadcast::Receiver<Event>,
    _stop: oneshot::Sender<()>,
}

pub(crate) async fn proxy(cluster: &Cluster, opts: ForwardProxyOptions) -> Proxy {
    let ctx = context(cluster).await;
    let p = ForwardProxy::new(
        ctx,
        ForwardProxyOptions {
            namespace: Some("demo".into()),
            ..opts
        },
    );
    let events = p.subscribe();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        p.run(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("proxy runs");
    });
    Proxy {
        addr,
        events,
        _stop: stop,
    }
}

impl Proxy {
    /// The route of the next connection to `destination` the proxy reports.
    pub(crate) async fn route_of(&mut self, destination: &str) -> Route {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Ok(Event::Routed {
                        destination: d,
                        route,
                        ..
                    }) if d == destination => return route,
                    Ok(_) => {}
                    Err(e) => panic!("events ended: {e}"),
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .expect("route reported in time")
    }
}

/// Whether `tool` runs; on CI a missing tool fails the test, elsewhere it is skipped with
/// a note.
async fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required on CI (.ci/run installs it)"
        );
        eprintln!("note: skipping a forward proxy test, no {tool}");
    }
    found
}

/// Runs a client to completion (bounded); returns its status code, stdout and stderr.
async fn run(cmd: &mut Command) -> (i32, String, String) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT * 2, cmd.output())
        .await
        .expect("client finishes in time")
        .expect("client runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20"]).args(args);
    c
}

fn web_reply(out: &(i32, String, String)) {
    assert_eq!(out.0, 0, "curl failed: {}", out.2);
    assert!(out.1.starts_with("web-"), "a web pod answers: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_services_by_every_name_form_and_protocol() {
    if !have("curl").await {
        return;
    }
    let cluster = demo().await;
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let a = p.addr.to_string();
    for name in [
        "web",
        "web.demo",
        "web.demo.svc",
        "web.demo.svc.cluster.local",
        "WEB.Demo.svc.cluster.local.",
    ] {
        let url = format!("http://{name}/");
        web_reply(&run(&mut curl(&["--socks5-hostname", &a, &url])).await);
        match p.route_of(&format!("{name}:80")).await {
            Route::Pod {
                namespace,
                port,
                service,
                ..
            } => {
                assert_eq!(
                    (namespace.as_str(), port),
                    ("demo", 8080),
                    "targetPort used"
                );
                assert_eq!(service.as_deref(), Some("web"));
            }
            other => panic!("{name} went {other}"),
        }
    }
    web_reply(&run(&mut curl(&["--socks4a", &a, "http://web.demo/"])).await);
    let proxy_url = format!("http://{a}");
    web_reply(
        &run(&mut curl(&[
            "-x",
            &proxy_url,
            "http://web.demo.svc.cluster.local/",
        ]))
        .await,
    );
    // Both services behind one client connection, to different hosts: kept alive.
    let out = run(&mut curl(&[
        "-v",
        "-x",
        &proxy_url,
        "http://web.demo/",
        "http://private.example.internal/",
    ]))
    .await;
    assert_eq!(out.0, 0, "{}", out.2);
    assert!(
        out.1.contains("web-") && out.1.contains("hello from private.example.internal"),
        "{out:?}"
    );
    assert!(
        out.2.contains("Re-using existing connection"),
        "one proxy connection: {}",
        out.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resolved_cluster_ips_and_pod_ips_go_to_pods() {
    if !have("curl").await {
        return;
    }
    let cluster = demo().await;
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let a = p.addr.to_string();
    let svc = cluster.service("demo", "web").expect("web service");
    let cip = svc.spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    web_reply(&run(&mut curl(&["--socks5", &a, &format!("http://{cip}/")])).await);
    assert!(matches!(
        p.route_of(&format!("{cip}:80")).await,
        Route::Pod { port: 8080, .. }
    ));
    let pod = &cluster.ready_pods("demo", "app=web")[0];
    let pip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod ip");
    let name = pod.metadata.name.clone().expect("name");
    let out = run(&mut curl(&["--socks5", &a, &format!("http://{pip}:8080/")])).await;
    web_reply(&out);
    assert_eq!(out.1.trim(), name, "that very pod answers");
    match p.route_of(&format!("{pip}:8080")).await {
        Route::Pod { pod, .. } => assert_eq!(pod, name),
        other => panic!("pod IP went {other}"),
    }
    // The same address sent as a name (SOCKS5 address type 3, as PySocks with socks5h://
    // sends it) is that pod too, not an outside name for the relay.
    let (code, mut s) = socks5_connect(p.addr, &pip, 8080).await;
    assert_eq!(code, 0, "CONNECT to {pip} as a name");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut page))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(page.trim_end().ends_with(&name), "{page}");
    match p.route_of(&format!("{pip}:8080")).await {
        Route::Pod { pod, .. } => assert_eq!(pod, name),
        other => panic!("pod IP sent as a name went {other}"),
    }
    // The pod's DNS name, a-b-c-d.ns.pod.<domain>.
    let dashed = format!("{}.demo.pod.cluster.local", pip.replace('.', "-"));
    let out = run(&mut curl(&[
        "--socks5-hostname",
        &a,
        &format!("http://{dashed}:8080/"),
    ]))
    .await;
    assert_eq!(out.1.trim(), name, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_names_go_through_the_relay_and_direct_rules_from_here() {
    if !have("curl").await {
        return;
    }
    let cluster = demo().await;
    // A server on this machine, named by a --direct rule.
    let here = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let here_port = here.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = here.accept().await {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndirect",
                )
                .await;
        }
    });
    let opts = ForwardProxyOptions {
        direct: NoProxy::parse("localhost"),
        ..Default::default()
    };
    let mut p = proxy(&cluster, opts).await;
    let a = p.addr.to_string();
    let out = run(&mut curl(&[
        "--socks5-hostname",
        &a,
        "http://private.example.internal/",
    ]))
    .await;
    assert!(
        out.1.starts_with("hello from private.example.internal"),
        "{out:?}"
    );
    assert!(matches!(
        p.route_of("private.example.internal:80").await,
        Route::Relay { .. }
    ));
    let out = run(&mut curl(&[
        "--socks5-hostname",
        &a,
        &format!("http://localhost:{here_port}/"),
    ]))
    .await;
    assert_eq!(out.1, "direct", "{out:?}");
    assert!(matches!(
        p.route_of(&format!("localhost:{here_port}")).await,
        Route::Direct { .. }
    ));
}

/// A SOCKS5 CONNECT by hand: the reply code, and the stream when it succeeded.
pub(crate) async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.expect("method");
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.expect("request");
    let mut reply = [0u8; 10];
    tokio::time::timeout(WAIT, s.read_exact(&mut reply))
        .await
        .expect("reply in time")
        .expect("reply");
    (reply[1], s)
}

async fn http_status(proxy: SocketAddr, url: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_clients_as_reply_codes_and_statuses() {
    let cluster = demo().await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    // Unknown service: 0x04 / 502 naming service and namespace.
    assert_eq!(
        socks5_connect(p.addr, "nope.demo.svc.cluster.local", 80)
            .await
            .0,
        4
    );
    let (code, body) = http_status(p.addr, "http://nope.demo.svc.cluster.local/").await;
    assert_eq!(code, 502);
    assert!(
        body.contains(r#"service "nope" not found in namespace "demo""#),
        "{body}"
    );
    // NXDOMAIN inside the cluster (the relay's resolver): 0x04 / 502 naming the name.
    assert_eq!(
        socks5_connect(p.addr, "nosuch.example.internal", 80)
            .await
            .0,
        4
    );
    let (code, body) = http_status(p.addr, "http://nosuch.example.internal/").await;
    assert_eq!(code, 502);
    assert!(body.contains("nosuch.example.internal"), "{body}");
    // A port the service does not have: refused, 0x05 / 502.
    assert_eq!(socks5_connect(p.addr, "web.demo", 81).await.0, 5);
    // Refused by the destination, through the relay.
    assert_eq!(
        socks5_connect(p.addr, "private.example.internal", 1)
            .await
            .0,
        5
    );
    // BIND is refused with "command not supported".
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .expect("write");
    let mut r = [0u8; 12];
    s.read_exact(&mut r).await.expect("reply");
    assert_eq!((r[2], r[3]), (5, 7), "{r:?}");
    // Garbage closes that connection only.
    let mut g = TcpStream::connect(p.addr).await.expect("connect");
    g.write_all(b"\x16\x03\x01garbage").await.expect("write");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, g.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(n.is_err() || rest.is_empty());
    let (code, mut ok) = socks5_connect(p.addr, "echo.demo", 7000).await;
    assert_eq!(code, 0);
    ok.write_all(b"still here").await.expect("write");
    let mut back = [0u8; 10];
    ok.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"still here");
}

/// SOCKS5 to a destination outside the cluster (through the relay): the client's
/// half-close reaches it, so a server that answers only after EOF answers, and its EOF
/// comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_through_the_relay_reaches_the_destination() {
    let cluster = demo().await;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(format!("{} bytes", got.len()).as_bytes()).await;
                }
            });
        }
    });
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let (code, mut s) = socks5_connect(p.addr, "127.0.0.1", port).await;
    assert_eq!(code, 0);
    assert!(matches!(
        p.route_of(&format!("127.0.0.1:{port}")).await,
        Route::Relay { .. }
    ));
    s.write_all(&[1u8; 300_000]).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .expect("the answer and EOF in time: the half-close reached the destination")
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&back), "300000 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_denied_or_turned_off_is_not_allowed() {
    let cluster = demo().await;
    let off = proxy(
        &cluster,
        ForwardProxyOptions {
            relay: None,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        socks5_connect(off.addr, "private.example.internal", 80)
            .await
            .0,
        2
    );
    let (code, body) = http_status(off.addr, "http://private.example.internal/").await;
    assert_eq!(code, 403);
    assert!(body.contains("--no-relay"), "{body}");
    // Services still work without the relay.
    assert_eq!(socks5_connect(off.addr, "web.demo", 80).await.0, 0);

    cluster.deny("create", "pods");
    let on = proxy(&cluster, ForwardProxyOptions::default()).await;
    assert_eq!(
        socks5_connect(on.addr, "private.example.internal", 80)
            .await
            .0,
        2
    );
    let (code, body) = http_status(on.addr, "http://private.example.internal/").await;
    assert_eq!(code, 403);
    assert!(body.contains("create pods"), "names the permission: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_enforced_on_both_protocols() {
    if !have("curl").await {
        return;
    }
    let cluster = demo().await;
    let p = proxy(
        &cluster,
        ForwardProxyOptions {
            auth: Some(ProxyAuth::new("dev", "s3cret")),
            ..Default::default()
        },
    )
    .await;
    let a = p.addr.to_string();
    let proxy_url = format!("http://{a}");
    let out = run(&mut curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy_url,
        "http://web.demo/",
    ]))
    .await;
    assert_eq!(out.1, "407", "{out:?}");
    let (_, raw) = http_status(p.addr, "http://web.demo/").await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{raw}"
    );
    web_reply(
        &run(&mut curl(&[
            "-x",
            &proxy_url,
            "--proxy-user",
            "dev:s3cret",
            "http://web.demo/",
        ]))
        .await,
    );
    let wrong = run(&mut curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy_url,
        "--proxy-user",
        "dev:nope",
        "http://web.demo/",
    ]))
    .await;
    assert_eq!(wrong.1, "407");
    let socks_ok = format!("socks5h://dev:s3cret@{a}");
    web_reply(&run(&mut curl(&["-x", &socks_ok, "http://web.demo/"])).await);
    let socks_bad = format!("socks5h://dev:nope@{a}");
    assert_ne!(
        run(&mut curl(&["-x", &socks_bad, "http://web.demo/"]))
            .await
            .0,
        0
    );
    assert_ne!(
        run(&mut curl(&["--socks5-hostname", &a, "http://web.demo/"]))
            .await
            .0,
        0,
        "no credentials"
    );
    assert_ne!(
        run(&mut curl(&["--socks4a", &a, "http://web.demo/"]))
            .await
            .0,
        0,
        "SOCKS4 has no password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_through_socks5h() {
    let ok = Command::new("python3")
        .args(["-c", "import requests, socks"])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "requests[socks] is required on CI"
        );
        eprintln!("note: skipping, no python3 requests with PySocks");
        return;
    }
    let cluster = demo().await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let script = format!(
        "import requests\n\
         px = {{'http': 'socks5h://{a}', 'https': 'socks5h://{a}'}}\n\
         print(requests.get('http://web.demo.svc.cluster.local/', proxies=px, timeout=20).text.strip())\n\
         print(requests.get('http://private.example.internal/', proxies=px, timeout=20).text.strip())\n",
        a = p.addr
    );
    let out = run(Command::new("python3").args(["-c", &script])).await;
    assert_eq!(out.0, 0, "{}", out.2);
    let lines: Vec<&str> = out.1.lines().collect();
    assert!(lines[0].starts_with("web-"), "{out:?}");
    assert!(
        lines[1].starts_with("hello from private.example.internal"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_through_ncat_socks5_to_a_passthrough_pod() {
    if !(have("redis-server").await && have("redis-cli").await && have("ncat").await) {
        return;
    }
    let cluster = demo().await;
    // A real redis-server on a port the OS picked (freed just before redis takes it).
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            // Connections come from the pod's address (127.x.y.z), which protected mode
            // would refuse.
            "--protected-mode",
            "no",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis starts");
    passthrough(&cluster, "redis", 6379, port).await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    // ncat listens locally and carries each connection through the proxy; redis-cli talks
    // to it.
    let local = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut ncat = Command::new("ncat")
        .args([
            "-l", "127.0.0.1", &local.to_string(), "-k", "--sh-exec",
            &format!("ncat --proxy {} --proxy-type socks5 --proxy-dns remote redis.demo.svc.cluster.local 6379", p.addr),
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("ncat starts");
    let mut answer = String::new();
    for _ in 0..100 {
        let out = run(Command::new("redis-cli").args([
            "-p",
            &local.to_string(),
            "SET",
            "k",
            "through-the-proxy",
        ]))
        .await;
        if out.1.trim() == "OK" {
            answer = run(Command::new("redis-cli").args(["-p", &local.to_string(), "GET", "k"]))
                .await
                .1;
            break;
        }
        // ncat (or redis) not listening yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.trim(), "through-the-proxy");
    let _ = ncat.kill().await;
    let _ = redis.kill().await;
}

/// A deployment and service `name` on `port` whose pod passes every connection on to
/// `127.0.0.1:target` (a server the test started).
async fn passthrough(cluster: &Cluster, name: &str, port: u16, target: u16) {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let p = i32::from(port);
    let mut d = kforward_testkit::deployment(
        name,
        kforward_testkit::PASSTHROUGH_IMAGE,
        1,
        &[(name, p, "TCP")],
    );
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.containers[0].env = Some(vec![EnvVar {
            name: kforward_testkit::network::PASSTHROUGH_TARGET.into(),
            value: Some(format!("127.0.0.1:{target}")),
            ..Default::default()
        }]);
    }
    cluster.create_deployment("demo", &d).expect("deployment");
    let svc = kforward_testkit::service(name, name, &[(name, p, IntOrString::Int(p), "TCP")]);
    cluster.create_service("demo", &svc).expect("service");
    cluster
        .wait_deployment_ready("demo", name, WAIT)
        .await
        .expect("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_https_through_connect_to_a_tls_server_behind_a_pod() {
    if !(have("curl").await && have("ncat").await) {
        return;
    }
    let cluster = demo().await;
    // ncat's TLS server (a throwaway certificate of its own) answers one HTTP response.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let _tls = Command::new("ncat")
        .args([
            "--ssl", "-l", "127.0.0.1", &port.to_string(), "-k", "--sh-exec",
            "printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nConnection: close\\r\\n\\r\\ntls-ok'",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("ncat starts");
    passthrough(&cluster, "secure", 443, port).await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let proxy_url = format!("http://{}", p.addr);
    let mut out = (0, String::new(), String::new());
    for _ in 0..100 {
        out = run(&mut curl(&[
            "-k",
            "-x",
            &proxy_url,
            "https://secure.demo.svc.cluster.local/",
        ]))
        .await;
        if out.1 == "tls-ok" {
            break;
        }
        // ncat not listening yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out.1, "tls-ok", "{out:?}");
}

fn chromium(user_dir: &std::path::Path, proxy_flag: &str, url: &str) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", user_dir.display()))
    .arg(proxy_flag)
    .args(["--dump-dom", url]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_service_page_through_socks5_and_through_the_pac_file() {
    if !have("chromium").await {
        return;
    }
    let cluster = demo().await;
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let url = "http://web.demo.svc.cluster.local/";
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&mut chromium(
        dir.path(),
        &format!("--proxy-server=socks5://{}", p.addr),
        url,
    ))
    .await;
    assert!(out.1.contains("web-"), "page: {out:?}");
    assert!(matches!(
        p.route_of("web.demo.svc.cluster.local:80").await,
        Route::Pod { .. }
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let pac = format!("--proxy-pac-url=http://{}/proxy.pac", p.addr);
    let out = run(&mut chromium(dir.path(), &pac, url)).await;
    assert!(out.1.contains("web-"), "page through the PAC file: {out:?}");
}

/// With credentials set, the PAC file names the proxy as `PROXY` (HTTP), the one kind a
/// browser can ask its user credentials for (Chromium has no SOCKS5 password support at
/// all), and never offers `DIRECT` for cluster names. A client with the credentials gets
/// the page along the PAC file's route; headless Chromium, which has nobody to ask, stops
/// at the proxy's 407 (`ERR_INVALID_AUTH_CREDENTIALS`) instead of going around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pac_file_with_credentials_routes_through_the_http_proxy() {
    if !(have("curl").await && have("chromium").await) {
        return;
    }
    let cluster = demo().await;
    let p = proxy(
        &cluster,
        ForwardProxyOptions {
            auth: Some(ProxyAuth::new("dev", "s3cret")),
            ..Default::default()
        },
    )
    .await;
    let pac_url = format!("http://{}/proxy.pac", p.addr);
    let mut pac = String::new();
    // The first list may still be under way: ask until the services show.
    for _ in 0..100 {
        pac = run(&mut curl(&[&pac_url])).await.1;
        if pac.contains("\"web.demo\": 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The PAC file itself needs no credentials (browsers fetch it without them).
    let route = format!("\"PROXY {}\"", p.addr);
    assert!(pac.contains(&route), "{pac}");
    assert!(!pac.contains("SOCKS"), "{pac}");
    // The PAC file's route, with the credentials a browser would ask for.
    let url = "http://web.demo.svc.cluster.local/";
    let with = format!("http://dev:s3cret@{}", p.addr);
    web_reply(&run(&mut curl(&["-x", &with, url])).await);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&mut chromium(
        dir.path(),
        &format!("--proxy-pac-url={pac_url}"),
        url,
    ))
    .await;
    assert!(
        !out.1.contains("web-"),
        "no page without credentials: {out:?}"
    );
    assert!(
        out.2.contains("ERR_INVALID_AUTH_CREDENTIALS"),
        "stopped by the proxy's 407: {}",
        out.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pac_file_names_services_and_learned_ranges() {
    let cluster = demo().await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let mut pac = String::new();
    // The first list may still be under way: ask until the services show.
    for _ in 0..100 {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        s.write_all(
            b"GET /proxy.pac HTTP/1.1\r\nHost: proxy.test:1080\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        pac.clear();
        s.read_to_string(&mut pac).await.expect("read");
        if pac.contains("\"web.demo\": 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pac.contains("application/x-ns-proxy-autoconfig"), "{pac}");
    assert!(pac.contains("SOCKS5 proxy.test:1080"), "{pac}");
    assert!(pac.contains("\"web.demo\": 1") && pac.contains("dnsDomainIs(h, \".cluster.local\")"));
    let cip: IpAddr = cluster
        .service("demo", "web")
        .ok()
        .and_then(|s| s.spec?.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("cluster ip");
    let IpAddr::V4(v4) = cip else { panic!("IPv4") };
    let o = v4.octets();
    assert!(
        pac.contains(&format!("isInNet(h, \"{}.{}.", o[0], o[1])),
        "ClusterIP range: {pac}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_carries_datagrams_through_the_relay() {
    let cluster = demo().await;
    let p = proxy(&cluster, ForwardProxyOptions::default()).await;
    let mut ctl = TcpStream::connect(p.addr).await.expect("connect");
    ctl.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut m = [0u8; 2];
    ctl.read_exact(&mut m).await.expect("method");
    ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .expect("associate");
    let mut r = [0u8; 10];
    ctl.read_exact(&mut r).await.expect("reply");
    assert_eq!(r[1], 0, "associate granted");
    let relay_at = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let host = b"dns.demo.svc.cluster.local";
    let mut d = vec![0, 0, 0, 3, host.len() as u8];
    d.extend_from_slice(host);
    d.extend_from_slice(&5353u16.to_be_bytes());
    let header = d.len();
    d.extend_from_slice(b"ping over udp");
    let mut buf = [0u8; 2048];
    let mut got = None;
    // UDP may drop: send until the echo comes back, bounded.
    for _ in 0..30 {
        udp.send_to(&d, relay_at).await.expect("send");
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), udp.recv(&mut buf)).await {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    let got = got.expect("an echo came back");
    assert_eq!(
        &got[..header],
        &d[..header],
        "the header names the destination"
    );
    assert_eq!(&got[header..], b"ping over udp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_service_names_and_pod_hostnames_go_to_the_pods() {
    let cluster = demo().await;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "webs-0", "labels": {"app": "webs"}},
        "spec": {
            "hostname": "webs-0",
            "subdomain": "webs",
            "containers": [{"name": "web", "image": kforward_testkit::HTTP_IMAGE,
                            "ports": [{"name": "http", "containerPort": 8080}]}]
        }
    }))
    .expect("pod");
    cluster.create_pod("demo", &pod).expect("pod created");
    let mut svc = kforward_testkit::service(
        "webs",
        "webs",
        &[(
            "http",
            8080,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
            "TCP",
        )],
    );
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    cluster
        .create_service("demo", &svc)
        .expect("headless service");
    cluster
        .wait_for("the webs pod to be ready", WAIT, |c| {
            !c.ready_pods("demo", "app=webs").is_empty()
        })
        .await
        .expect("pod ready");
    let mut p = proxy(&cluster, ForwardProxyOptions::default()).await;
    for name in ["webs-0.webs.demo.svc.cluster.local", "webs.demo"] {
        let mut answer = String::new();
        // The catalog learns the new pod's address from its watch.
        for _ in 0..100 {
            let (code, mut s) = socks5_connect(p.addr, name, 8080).await;
            if code == 0 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .expect("write");
                s.read_to_string(&mut answer).await.expect("read");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            answer.ends_with("webs-0\n") || answer.contains("\r\n\r\nwebs-0"),
            "{name}: {answer}"
        );
        match p.route_of(&format!("{name}:8080")).await {
            Route::Pod { pod, port, .. } => assert_eq!((pod.as_str(), port), ("webs-0", 8080)),
            other => panic!("{name} went {other}"),
        }
    }
}
