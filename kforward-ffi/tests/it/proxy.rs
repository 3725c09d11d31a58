//! The C ABI behind proxies: the API server through the kubeconfig's `proxy-url` (with the
//! API server accepting the proxy only), a proxy forward whose relay leaves the cluster
//! through the proxy named in `relay_env`, and failures with the proxy in their message.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use kforward_ffi::kf_result::*;
use kforward_testkit::DEMO_EXTERNAL_HOST;
use kforward_testkit::proxies::{ProxyKind, ProxyOptions, RealProxy, start_or_skip};

use crate::common::{Runtime, TestCluster, WAIT, WAIT_MS, Watchdog, last_error};

/// Starts a real proxy (or skips the test outside CI when it is not installed).
fn proxy(kind: ProxyKind, opts: ProxyOptions) -> Option<RealProxy> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to start the proxy");
    rt.block_on(start_or_skip(kind, opts))
}

/// One HTTP GET with `Host: host`; the reply, or what went wrong.
fn get(addr: SocketAddr, host: &str) -> String {
    let work = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    work().unwrap_or_else(|e| e.to_string())
}

#[test]
fn configs_reach_the_api_server_through_proxy_url_and_leave_the_cluster_through_relay_env() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let Some(api_proxy) = proxy(
        ProxyKind::Tinyproxy,
        ProxyOptions::default().with_auth("alice", "s3cret"),
    ) else {
        return;
    };
    let ext = tc
        .cluster
        .external_host_addr(DEMO_EXTERNAL_HOST)
        .expect("external host");
    let Some(egress) = proxy(
        ProxyKind::Squid,
        ProxyOptions::default().with_host(DEMO_EXTERNAL_HOST, ext.ip()),
    ) else {
        return;
    };
    tc.cluster.api_only_from([api_proxy.outbound_ip()]);
    tc.cluster.egress_only_through([egress.outbound_ip()]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    tc.cluster
        .write_kubeconfig_with_proxy(&kubeconfig, &api_proxy.url())
        .expect("kubeconfig");
    let rt = Runtime::new(2);

    let web = rt
        .start(
            &serde_json::json!({
                "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80,
                "kubeconfig": kubeconfig,
            })
            .to_string(),
        )
        .expect("the service config starts");
    assert_eq!(web.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let reply = get(web.local_addr(), "web");
    assert!(reply.contains("\r\n\r\nweb-"), "{reply}");

    let private = rt
        .start(
            &serde_json::json!({
                "workload_type": "proxy", "remote_address": DEMO_EXTERNAL_HOST,
                "namespace": "demo", "local_port": 0, "remote_port": ext.port(),
                "kubeconfig": kubeconfig,
                "relay_env": {"HTTPS_PROXY": egress.url()},
            })
            .to_string(),
        )
        .expect("the proxy config starts");
    assert_eq!(private.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let reply = get(private.local_addr(), DEMO_EXTERNAL_HOST);
    assert!(
        reply.contains(&format!(
            "hello from {DEMO_EXTERNAL_HOST} to {}",
            egress.outbound_ip()
        )),
        "{reply}"
    );
    assert_eq!(private.stop(), KF_OK);
    assert_eq!(web.stop(), KF_OK);

    // A proxy nobody runs: unreachable, and the message names it without the password.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };
    let dead = dir.path().join("kubeconfig-dead");
    tc.cluster
        .write_kubeconfig_with_proxy(&dead, &format!("http://alice:s3cret@{closed}"))
        .expect("kubeconfig");
    let f = rt
        .start(
            &serde_json::json!({
                "service": "web", "namespace": "demo", "local_port": 0, "remote_port": 80,
                "kubeconfig": dead,
            })
            .to_string(),
        )
        .expect("the config is accepted");
    assert_eq!(f.wait_ready(WAIT_MS), KF_UNREACHABLE, "{}", last_error());
    let message = last_error();
    assert!(
        message.contains(&format!("http://alice@{closed}")) && !message.contains("s3cret"),
        "{message}"
    );

    // relay_env is checked at once.
    let bad = rt.start(
        &serde_json::json!({
            "workload_type": "proxy", "remote_address": DEMO_EXTERNAL_HOST,
            "namespace": "demo", "local_port": 0, "remote_port": 80,
            "kubeconfig": kubeconfig,
            "relay_env": {"HTTPS_PROXY": "socks5://proxy.corp:1080"},
        })
        .to_string(),
    );
    match bad {
        Err((code, message)) => {
            assert_eq!(code, KF_INVALID_CONFIG, "{message}");
            assert!(message.contains("relay_env"), "{message}");
        }
        Ok(_) => panic!("a SOCKS egress proxy was accepted"),
    }
}
