//! UDP and proxy configs through the C ABI: the forwards of one cluster share a relay pod,
//! carry traffic through it, and the last one to stop deletes it.

use std::net::UdpSocket;
use std::time::Duration;

use kforward_ffi::kf_result::*;
use kforward_testkit::DEMO_EXTERNAL_HOST;

use crate::common::{Runtime, TestCluster, WAIT, WAIT_MS, Watchdog, eventually, last_error};

const RELAY_SELECTOR: &str = "app.kubernetes.io/name=kforward-relay";

fn relay_pods(tc: &TestCluster) -> usize {
    tc.cluster.pods("demo", Some(RELAY_SELECTOR)).len()
}

#[test]
fn udp_and_proxy_configs_run_through_relay_pods_deleted_on_stop() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    let udp = rt
        .start(
            &serde_json::json!({
                "service": "dns", "namespace": "demo", "protocol": "udp",
                "local_port": 0, "remote_port": 5353, "kubeconfig": tc.kubeconfig(),
            })
            .to_string(),
        )
        .expect("the UDP config starts");
    let proxy = rt
        .start(
            &serde_json::json!({
                "workload_type": "proxy", "remote_address": DEMO_EXTERNAL_HOST,
                "namespace": "demo", "local_port": 0, "remote_port": 80,
                "kubeconfig": tc.kubeconfig(),
            })
            .to_string(),
        )
        .expect("the proxy config starts");
    assert_eq!(udp.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    assert_eq!(proxy.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    assert_eq!(udp.status()["state"], "ready", "{}", udp.status());

    // A datagram to the local port comes back from the dns pod's UDP echo.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    sock.connect(udp.local_addr()).expect("connect");
    sock.send(b"hello through the relay").expect("send");
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("the echo comes back");
    assert_eq!(&buf[..n], b"hello through the relay");

    // The external host answers pod addresses only: this reply came through the relay pod.
    let mut s = std::net::TcpStream::connect_timeout(&proxy.local_addr(), WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    std::io::Write::write_all(
        &mut s,
        format!("GET / HTTP/1.1\r\nHost: {DEMO_EXTERNAL_HOST}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(
        tc.cluster.external_host_addr(DEMO_EXTERNAL_HOST).is_some(),
        "the demo's external host exists"
    );

    // Both forwards use the one relay pod of their cluster and namespace; it goes when the
    // last of them stops.
    assert_eq!(relay_pods(&tc), 1);
    assert_eq!(udp.stop(), KF_OK, "{}", last_error());
    assert_eq!(relay_pods(&tc), 1, "the proxy forward still uses it");
    assert_eq!(proxy.stop(), KF_OK, "{}", last_error());
    eventually("the relay pod to be deleted", || relay_pods(&tc) == 0);
}

const MIRRORED: &str = "registry.corp.example:5000/tools/kforward-relay:0.1.0";

#[test]
fn relay_fields_of_a_config_shape_its_relay_pod_and_bad_ones_are_named() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    tc.cluster.air_gap();
    tc.cluster.preload_image(MIRRORED);
    let rt = Runtime::new(2);
    let config = |relay: serde_json::Value| {
        let mut c = serde_json::json!({
            "workload_type": "proxy", "remote_address": DEMO_EXTERNAL_HOST,
            "namespace": "demo", "local_port": 0, "remote_port": 80,
            "kubeconfig": tc.kubeconfig(),
        });
        for (k, v) in relay.as_object().expect("object") {
            c[k] = v.clone();
        }
        c.to_string()
    };

    // Bad relay fields are refused at once, each named with its value.
    let Err((code, message)) = rt.start(&config(serde_json::json!({
        "relay_pull_policy": "sometimes", "relay_pod_patch": "nodeSelector: tools"
    }))) else {
        panic!("bad relay fields start")
    };
    assert_eq!(code, KF_INVALID_CONFIG, "{message}");
    for part in [
        "field \"relay_pull_policy\": value \"sometimes\" is not an image pull policy",
        "field \"relay_pod_patch\": value \"nodeSelector: tools\" is a string, not an object",
    ] {
        assert!(message.contains(part), "{part}\nin: {message}");
    }

    // The default image cannot be pulled in this cluster: the forward fails, naming it.
    let default = rt
        .start(&config(serde_json::json!({})))
        .expect("starts (and fails later)");
    assert_eq!(default.wait_ready(WAIT_MS), KF_RELAY);
    let error = last_error();
    assert!(
        error.contains(&kforward_core::relay::default_image()),
        "{error}"
    );

    // The mirrored image with a pull secret and a patch: ready, and all of it on the pod.
    let mirrored = rt
        .start(&config(serde_json::json!({
            "relay_image": MIRRORED,
            "relay_pull_secrets": ["corp-registry"],
            "relay_pod_patch": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}},
        })))
        .expect("starts");
    assert_eq!(mirrored.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    eventually("the failed forward's relay pod to go", || {
        relay_pods(&tc) == 1
    });
    let pods = tc.cluster.pods("demo", Some(RELAY_SELECTOR));
    let spec = pods[0].spec.as_ref().expect("spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some(MIRRORED));
    assert_eq!(
        spec.image_pull_secrets.as_ref().expect("secrets")[0].name,
        "corp-registry"
    );
    assert_eq!(
        spec.node_selector.as_ref().expect("selector")["kubernetes.io/os"],
        "linux"
    );
    assert_eq!(mirrored.stop(), KF_OK, "{}", last_error());
    eventually("the relay pod to be deleted", || relay_pods(&tc) == 0);
}
#[test]
fn a_socks_config_is_a_forward_proxy_reaching_services_and_the_relay() {
    let _w = Watchdog::new(Duration::from_secs(120));
    let tc = TestCluster::demo();
    let rt = Runtime::new(2);
    let socks = rt
        .start(
            &serde_json::json!({
                "workload_type": "socks", "namespace": "demo", "local_port": 0,
                "kubeconfig": tc.kubeconfig(),
            })
            .to_string(),
        )
        .expect("the socks config starts");
    assert_eq!(socks.wait_ready(WAIT_MS), KF_OK, "{}", last_error());
    let get = |host: &str| {
        let mut s =
            std::net::TcpStream::connect_timeout(&socks.local_addr(), WAIT).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        std::io::Write::write_all(
            &mut s,
            format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("write");
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut s, &mut reply).expect("read");
        reply
    };
    // A service by its short name (straight to a pod), then the external host (through
    // the relay pod).
    let web = get("web");
    assert!(web.contains("\r\n\r\nweb-"), "{web:?}");
    let outside = get(DEMO_EXTERNAL_HOST);
    assert!(outside.starts_with("HTTP/1.1 200"), "{outside:?}");
    assert_eq!(relay_pods(&tc), 1);
    eventually("the counters to show both connections", || {
        let st = socks.status();
        st["stats"]["connections_total"] == 2 && st["stats"]["bytes_in"].as_u64() > Some(0)
    });
    assert_eq!(socks.stop(), KF_OK, "{}", last_error());
    eventually("the relay pod to be deleted", || relay_pods(&tc) == 0);
}
