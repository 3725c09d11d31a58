//! One port-forward session pool per cluster connection, namespace and transport option:
//! the forwards of one process share the SPDY sessions kept ready to their pods, each
//! holding the pods it routes to. Counted where it shows, at the testkit's API server: its
//! port-forward upgrades (`port_forwards_total`: one per session) and the sessions open now
//! (`live_port_forwards`).

use std::net::SocketAddr;
use std::time::Duration;

use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::transport::Transport;
use kforward_core::transport::spdy::{HolderId, SessionPool};
use kforward_core::{Forward, ForwardOptions, Forwarder, KubeContext};
use kforward_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// The names of the pods of `app`, sorted.
fn pods_of(cluster: &Cluster, app: &str) -> Vec<String> {
    let mut pods: Vec<String> = cluster
        .pods("demo", Some(&format!("app={app}")))
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    pods.sort();
    pods
}

/// Polls `what` every 20 ms until it is true, failing after [`WAIT`] with `show()`.
async fn until(what: impl Fn() -> bool, show: impl Fn() -> String) {
    let waited = tokio::time::timeout(WAIT, async {
        while !what() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("not in time: {}", show());
    }
}

/// The pods `pool` has an open session to, sorted.
fn open_to(pool: &SessionPool) -> Vec<String> {
    pool.stats()
        .into_iter()
        .filter(|p| !p.sessions.is_empty())
        .map(|p| p.pod)
        .collect()
}

/// Waits until `pool` has sessions open to exactly `pods`.
async fn kept(pool: &SessionPool, pods: &[String]) {
    until(
        || open_to(pool) == pods,
        || format!("sessions to {pods:?}; the pool has {:?}", pool.stats()),
    )
    .await;
}

/// Waits until `pool`'s holds are `holds` (pod, holders).
async fn holds(pool: &SessionPool, holds: &[(&str, usize)]) {
    let want: Vec<(String, usize)> = holds.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    until(
        || pool.holds() == want,
        || format!("holds {want:?}; the pool has {:?}", pool.holds()),
    )
    .await;
}

async fn start(
    ctx: &KubeContext,
    spec: ForwardSpec,
    opts: ForwardOptions,
) -> (Forward, SocketAddr) {
    let mut f = Forward::new(ctx.clone(), spec, opts);
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("forward starts");
    (f, bound[0].local_addr)
}

/// A connection through a forward to an echo pod, checked with one round trip.
async fn echo_conn(addr: SocketAddr) -> TcpStream {
    let mut c = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    echo_once(&mut c, b"hello").await;
    c
}

async fn echo_once(c: &mut TcpStream, data: &[u8]) {
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, async {
        c.write_all(data).await.expect("write");
        c.read_exact(&mut back).await.expect("echo back");
    })
    .await
    .expect("echo in time");
    assert_eq!(back, data);
}

/// One HTTP/1.0 request through `addr`: the pod that answered.
async fn get(addr: SocketAddr) -> String {
    let body = tokio::time::timeout(WAIT, async {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("read");
        out
    })
    .await
    .expect("answer in time");
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_of_one_service_share_the_sessions_kept_ready_to_its_pods() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pods_of(&cluster, "web");
    assert_eq!(web.len(), 2);
    let before = cluster.stats().port_forwards_total;
    let pool = SessionPool::shared(&ctx, "demo", Transport::Auto);
    let (_a, a) = start(&ctx, spec("svc/web", 0, 80), quick()).await;
    kept(&pool, &web).await;
    let (_b, b) = start(&ctx, spec("svc/web", 0, 80), quick()).await;
    holds(&pool, &[(&web[0], 2), (&web[1], 2)]).await;
    for addr in [a, b] {
        for _ in 0..10 {
            get(addr).await;
        }
    }
    // One session per pod between the two forwards (each alone would open two).
    let upgrades = cluster.stats().port_forwards_total - before;
    assert_eq!(
        upgrades, 2,
        "port-forward upgrades for two forwards of 2 pods"
    );
    assert_eq!(open_to(&pool), web);

    // A forward with another transport option has a pool of its own.
    let spdy = SessionPool::shared(&ctx, "demo", Transport::Spdy);
    assert!(!spdy.same_pool(&pool));
    let opts = ForwardOptions {
        transport: Transport::Spdy,
        ..quick()
    };
    let (_c, c) = start(&ctx, spec("svc/web", 0, 80), opts).await;
    kept(&spdy, &web).await;
    get(c).await;
    let upgrades = cluster.stats().port_forwards_total - before;
    assert_eq!(
        upgrades, 4,
        "the plain-upgrade forward opened its own sessions"
    );
    let transports: Vec<Transport> = spdy
        .stats()
        .iter()
        .flat_map(|p| p.sessions.iter().map(|s| s.1))
        .collect();
    assert_eq!(transports, [Transport::Spdy, Transport::Spdy]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_forward_keeps_the_others_sessions_and_connections_working() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pods_of(&cluster, "echo");
    let pool = SessionPool::shared(&ctx, "demo", Transport::Auto);
    let (mut a, a_addr) = start(&ctx, spec("svc/echo", 0, 7000), quick()).await;
    let (mut b, b_addr) = start(&ctx, spec("svc/echo", 0, 7000), quick()).await;
    holds(&pool, &[(&echo[0], 2)]).await;
    kept(&pool, &echo).await;
    let mut through_b = echo_conn(b_addr).await;
    let through_a = echo_conn(a_addr).await;
    let stats = cluster.stats();
    drop(through_a);
    tokio::time::timeout(WAIT, a.stop())
        .await
        .expect("stop in time");
    holds(&pool, &[(&echo[0], 1)]).await;
    // B's connection and session go on; new connections need no new session.
    echo_once(&mut through_b, b"still there").await;
    for _ in 0..5 {
        echo_conn(b_addr).await;
    }
    let now = cluster.stats();
    assert_eq!(
        now.port_forwards_total, stats.port_forwards_total,
        "no new session"
    );
    assert_eq!(
        now.live_port_forwards, stats.live_port_forwards,
        "none closed"
    );
    assert_eq!(open_to(&pool), echo);

    // The last forward stopping lets go of the pod: its session closes.
    drop(through_b);
    tokio::time::timeout(WAIT, b.stop())
        .await
        .expect("stop in time");
    holds(&pool, &[]).await;
    kept(&pool, &[]).await;
    until(
        || cluster.stats().live_port_forwards < stats.live_port_forwards,
        || format!("the session is still open: {:?}", cluster.stats()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_of_one_forward_leaves_the_sessions_another_holds() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let db = pods_of(&cluster, "db");
    assert_eq!(db, ["db-0", "db-1"]);
    let pool = SessionPool::shared(&ctx, "demo", Transport::Auto);
    // The service routes to ready pods only; a pod target (as kubectl's) to its pod anyway.
    let (_svc, svc_addr) = start(&ctx, spec("svc/db", 0, 5432), quick()).await;
    let one = ForwardSpec::new(
        Target::Pod {
            name: "db-0".into(),
        },
        [PortMapping::new(0, 5432)],
    )
    .with_namespace("demo");
    let (_pod, pod_addr) = start(&ctx, one, quick()).await;
    holds(&pool, &[("db-0", 2), ("db-1", 1)]).await;
    kept(&pool, &db).await;
    let mut through_pod = echo_conn(pod_addr).await;
    let stats = cluster.stats();

    cluster
        .set_pod_ready("demo", "db-0", false)
        .expect("db-0 unready");
    // The service forward lets go of db-0; the pod forward still holds it.
    holds(&pool, &[("db-0", 1), ("db-1", 1)]).await;
    echo_once(&mut through_pod, b"after the change").await;
    echo_conn(pod_addr).await;
    echo_conn(svc_addr).await; // to db-1
    let now = cluster.stats();
    assert_eq!(
        now.port_forwards_total, stats.port_forwards_total,
        "no new session"
    );
    assert_eq!(open_to(&pool), db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_replace_only_their_own_holds_and_connections_outlive_a_pods_last_hold() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let db = pods_of(&cluster, "db");
    let pool = SessionPool::shared(&ctx, "demo", Transport::Auto);
    assert!(pool.same_pool(&SessionPool::shared(&ctx, "demo", Transport::Auto)));
    assert!(!pool.same_pool(&SessionPool::shared(&ctx, "other", Transport::Auto)));
    let (a, b) = (HolderId::new(), HolderId::new());
    let before = cluster.stats();
    pool.hold(a, &db);
    pool.hold(b, &db[..1]);
    kept(&pool, &db).await;
    holds(&pool, &[("db-0", 2), ("db-1", 1)]).await;
    let mut on_db1 = tokio::time::timeout(WAIT, pool.connect("db-1", 5432))
        .await
        .expect("connect in time")
        .expect("connect");
    let total = cluster.stats().port_forwards_total;
    assert_eq!(total - before.port_forwards_total, 2, "one session per pod");

    // a's new list drops db-1, which nobody else holds: its kept session leaves the pool,
    // and the connection on it goes on until it ends.
    pool.hold(a, &db[..1]);
    kept(&pool, &db[..1]).await;
    tokio::time::timeout(WAIT, async {
        on_db1.write_all(b"still flowing").await.expect("write");
        let mut back = [0u8; 13];
        on_db1.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"still flowing");
    })
    .await
    .expect("echo in time");
    let live = cluster.stats().live_port_forwards;
    drop(on_db1);
    until(
        || cluster.stats().live_port_forwards < live,
        || "db-1's session outlived its last connection".into(),
    )
    .await;

    // Letting go of a pod another holder holds keeps its session.
    pool.release(a);
    holds(&pool, &[("db-0", 1)]).await;
    assert_eq!(open_to(&pool), db[..1]);
    pool.release(b);
    holds(&pool, &[]).await;
    kept(&pool, &[]).await;
    assert_eq!(
        cluster.stats().port_forwards_total,
        total,
        "no session opened again"
    );
}
