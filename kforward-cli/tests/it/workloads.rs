//! `kforward forward sts/NAME` and `rs/NAME` as a user runs them: the forward carries traffic,
//! says which pod each connection goes to, and follows the pods when they are replaced.

use super::*;

/// The JSON object of the next stdout line with `event`.
fn next_event(r: &Running, event: &str) -> serde_json::Value {
    let line = tokio::task::block_in_place(|| r.line_with(&format!("\"event\":\"{event}\"")));
    serde_json::from_str(&line).expect("json")
}

/// Skips `endpoints` events until one lists exactly `pods` (as `pod:port`).
fn endpoints_become(r: &Running, pods: impl Fn(&[String]) -> bool) -> Vec<String> {
    loop {
        let v = next_event(r, "endpoints");
        let now: Vec<String> = serde_json::from_value(v["pods"].clone()).expect("pods");
        if pods(&now) {
            return now;
        }
    }
}

async fn echo(addr: &str, msg: &[u8]) {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("read the echo");
        assert_eq!(back, msg);
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("echo in time");
}

fn pod_uid(cluster: &Cluster, pod: &str) -> Option<String> {
    cluster.pod("demo", pod).ok().and_then(|p| p.metadata.uid)
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_sts_goes_to_kubectls_pod_and_follows_its_replacement() {
    let cluster = Cluster::demo().await.expect("cluster");
    let r = Running::spawn(forward_json(&cluster, "statefulset/db", ":5432"));
    let ready = next_event(&r, "ready");
    assert_eq!(ready["target"], "sts/db");
    assert_eq!(ready["pod_port"], 5432);
    let addr = ready["local_addr"]
        .as_str()
        .expect("local_addr")
        .to_string();
    echo(&addr, b"hello db").await;
    assert_eq!(next_event(&r, "connection_opened")["pod"], "db-0");

    let old = pod_uid(&cluster, "db-0");
    cluster.delete_pod("demo", "db-0").expect("delete db-0");
    endpoints_become(&r, |p| p == ["db-1:5432"]);
    echo(&addr, b"hello db-1").await;
    assert_eq!(next_event(&r, "connection_opened")["pod"], "db-1");
    let back = cluster.wait_for("db-0 back", WAIT, |c| {
        c.ready_pods("demo", "app=db")
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("db-0") && p.metadata.uid != old)
    });
    tokio::time::timeout(WAIT, back)
        .await
        .expect("in time")
        .expect("db-0 recreated");
    // db-1 stays the forward's pod while it is ready; when it goes, the new db-0 takes over.
    cluster.delete_pod("demo", "db-1").expect("delete db-1");
    endpoints_become(&r, |p| p == ["db-0:5432"]);
    echo(&addr, b"hello new db-0").await;
    let opened = next_event(&r, "connection_opened");
    assert_eq!(opened["pod"], "db-0");
    r.signal("-TERM");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_rs_reaches_its_pods_and_follows_their_replacement() {
    let cluster = Cluster::demo().await.expect("cluster");
    let sets = cluster.replicasets("demo", Some("app=web"));
    let rs = sets[0].metadata.name.clone().expect("web's replicaset");
    let r = Running::spawn(forward_json(&cluster, &format!("replicaset/{rs}"), ":http"));
    let ready = next_event(&r, "ready");
    assert_eq!(ready["target"], format!("rs/{rs}"));
    assert_eq!(ready["pod_port"], 8080);
    let addr = ready["local_addr"]
        .as_str()
        .expect("local_addr")
        .to_string();
    let first = http_get(&addr).await;
    let pod = first.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    assert!(pod.starts_with(&format!("{rs}-")), "{first}");
    let before: Vec<String> = cluster
        .pods("demo", Some("app=web"))
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    for name in &before {
        cluster.delete_pod("demo", name).expect("delete a web pod");
    }
    let now = endpoints_become(&r, |p| {
        p.len() == 2 && p.iter().all(|e| !before.iter().any(|b| e.starts_with(b)))
    });
    let reply = http_get(&addr).await;
    let answered = reply.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    assert!(
        now.contains(&format!("{answered}:8080")),
        "{answered} not in {now:?}"
    );
    r.signal("-TERM");
    let (status, err) = tokio::task::block_in_place(|| r.wait());
    assert!(status.success(), "{status:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_targets_fail_clearly() {
    let cluster = Cluster::demo().await.expect("cluster");
    let kc = cluster.kubeconfig_path().to_path_buf();
    let (code, _, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args(["forward", "sts/nope", ":5432", "-n", "demo", "--kubeconfig"])
            .arg(&kc);
        run_to_end(c)
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("statefulset \"nope\" not found in namespace \"demo\""),
        "{err}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| {
        let mut c = kforward();
        c.args(["forward", "job/x", ":80", "--kubeconfig"]).arg(&kc);
        run_to_end(c)
    });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sts (statefulset"), "{err}");
}
