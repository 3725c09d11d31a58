//! Headless services: no ClusterIP, and the cluster DNS answers the service name with every
//! ready pod's address and each StatefulSet pod's own name under the service
//! (`db-0.db.demo.svc.cluster.local`), asked as a pod's resolver, as a raw query through
//! the testkit's DNS codec, and with the real `dig` (bind9-dnsutils).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kforward_testkit::network::{TYPE_A, encode_query, parse_response};
use kforward_testkit::{Cluster, DEMO_NAMESPACE};
use kube::api::{Api, ListParams};

use crate::{WAIT, bounded, client, demo, name, pod_ip};

/// The A records of `fqdn`, asked with one raw UDP query (what `dig +short` does).
async fn query(dns: SocketAddr, fqdn: &str) -> (u8, BTreeSet<Ipv4Addr>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let q = encode_query(0x4b1d, fqdn, TYPE_A).expect("a valid name");
    socket.send_to(&q, dns).await.expect("send the query");
    let mut buf = [0u8; 1500];
    let (n, _) = bounded("the DNS answer", socket.recv_from(&mut buf))
        .await
        .expect("receive the answer");
    let answer = parse_response(&buf[..n]).expect("a DNS response");
    assert_eq!(answer.id, 0x4b1d);
    (answer.rcode, answer.addresses.into_iter().collect())
}

/// The addresses of the ready pods of `app`.
fn ready_ips(cluster: &Cluster, app: &str) -> BTreeSet<Ipv4Addr> {
    cluster
        .ready_pods(DEMO_NAMESPACE, &format!("app={app}"))
        .iter()
        .map(|p| pod_ip(p).parse().expect("an IPv4 pod IP"))
        .collect()
}

fn ip_of(cluster: &Cluster, pod: &str) -> Ipv4Addr {
    pod_ip(&cluster.pod(DEMO_NAMESPACE, pod).expect("the pod"))
        .parse()
        .expect("an IPv4 pod IP")
}

#[tokio::test]
async fn cluster_dns_answers_headless_services_and_their_pods() {
    let cluster = demo().await;
    let dns = cluster.dns_addr().expect("the cluster DNS");
    let db = cluster.service(DEMO_NAMESPACE, "db").expect("db");
    assert_eq!(db.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));

    let both = ready_ips(&cluster, "db");
    assert_eq!(both.len(), 2);
    assert_eq!(
        query(dns, "db.demo.svc.cluster.local").await,
        (0, both.clone())
    );
    for pod in ["db-0", "db-1"] {
        let fqdn = format!("{pod}.db.demo.svc.cluster.local");
        assert_eq!(
            query(dns, &fqdn).await,
            (0, BTreeSet::from([ip_of(&cluster, pod)])),
            "{fqdn}"
        );
    }
    assert_eq!(
        query(dns, "db-2.db.demo.svc.cluster.local").await.0,
        3,
        "NXDOMAIN"
    );
    // A pod's resolver finds them through its search list.
    let resolver = cluster.resolver(DEMO_NAMESPACE).expect("a resolver");
    let found = bounded("resolve db-0.db", resolver.resolve("db-0.db"))
        .await
        .expect("db-0.db resolves");
    assert_eq!(found, [IpAddr::V4(ip_of(&cluster, "db-0"))]);

    // The slice carries each pod's hostname and marks the service headless.
    let slices: Api<EndpointSlice> = Api::namespaced(client(&cluster).await, DEMO_NAMESPACE);
    let list = bounded(
        "list db's slices",
        slices.list(&ListParams::default().labels("kubernetes.io/service-name=db")),
    )
    .await
    .expect("list slices");
    let slice = &list.items[0];
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("service.kubernetes.io/headless")),
        Some(&String::new())
    );
    let hostnames: BTreeSet<String> = slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| e.hostname.clone())
        .collect();
    assert_eq!(
        hostnames,
        BTreeSet::from(["db-0".to_string(), "db-1".to_string()])
    );

    // A pod that is not ready leaves the answers; the other stays.
    cluster
        .set_pod_ready(DEMO_NAMESPACE, "db-1", false)
        .expect("db-1 not ready");
    cluster.settle(WAIT).await.expect("settle");
    assert_eq!(
        query(dns, "db.demo.svc.cluster.local").await,
        (0, BTreeSet::from([ip_of(&cluster, "db-0")]))
    );
    assert_eq!(query(dns, "db-1.db.demo.svc.cluster.local").await.0, 3);

    // A replaced pod keeps its name; the name follows it to its new address.
    let old = ip_of(&cluster, "db-0");
    cluster
        .delete_pod(DEMO_NAMESPACE, "db-0")
        .expect("delete db-0");
    bounded(
        "db-0 to come back",
        cluster.wait_for("a new db-0", WAIT, |c| {
            c.ready_pods(DEMO_NAMESPACE, "app=db")
                .iter()
                .any(|p| name(p) == "db-0" && pod_ip(p) != old.to_string())
        }),
    )
    .await
    .expect("db-0 replaced");
    cluster.settle(WAIT).await.expect("settle");
    let new = ip_of(&cluster, "db-0");
    assert_eq!(
        query(dns, "db-0.db.demo.svc.cluster.local").await,
        (0, BTreeSet::from([new]))
    );
}

/// `dig` from bind9-dnsutils, or `None` (with a note) outside CI.
fn dig() -> Option<std::path::PathBuf> {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Some("dig".into()),
        false if std::env::var_os("CI").is_some() => {
            panic!("dig is required on CI (bind9-dnsutils)")
        }
        false => {
            eprintln!("note: skipping the dig test, no dig (apt-get install bind9-dnsutils)");
            None
        }
    }
}

#[tokio::test]
async fn dig_resolves_statefulset_pods_through_the_headless_service() {
    let Some(dig) = dig() else {
        return;
    };
    let cluster = demo().await;
    let dns = cluster.dns_addr().expect("the cluster DNS");
    let ask = |name: &str| {
        let mut cmd = tokio::process::Command::new(&dig);
        cmd.args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "+short",
            "+time=2",
            "+tries=2",
            name,
            "A",
        ])
        .kill_on_drop(true);
        cmd
    };
    let run = |mut cmd: tokio::process::Command| async move {
        let out = bounded("dig", cmd.output()).await.expect("run dig");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|l| l.parse::<Ipv4Addr>().expect("an address per line"))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        run(ask("db.demo.svc.cluster.local")).await,
        ready_ips(&cluster, "db")
    );
    assert_eq!(
        run(ask("db-1.db.demo.svc.cluster.local")).await,
        BTreeSet::from([ip_of(&cluster, "db-1")])
    );
    assert!(run(ask("nope.db.demo.svc.cluster.local")).await.is_empty());
}
