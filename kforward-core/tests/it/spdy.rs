//! The SPDY/3.1 transport against the testkit, over both of its forms (the WebSocket tunnel
//! and the plain upgrade): half-close, pipelining, PING, GOAWAY and RST, the stalled
//! reader, session replacement, the choice of transport, and what `v4.channel.k8s.io` does
//! instead.
//!
//! The testkit's kubelet carries a connection as containerd and CRI-O do: a client's
//! DATA+FIN is not passed to the pod as a half-close; the pod's side gets one more second
//! (`RUNTIME_GRACE`), then its connection is closed. The tests assert that behaviour.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kforward_core::KubeContext;
use kforward_core::transport::Transport;
use kforward_core::transport::spdy::{
    PodStream, PoolConfig, Session, SessionConfig, SessionEnd, SessionLoad, SessionPool, SpdyError,
    SpdyTransport,
};
use kforward_testkit::Cluster;
use kforward_testkit::portforward::PortForwardTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// The testkit's (and the container runtimes') grace after one direction of a connection
/// ends.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

const BOTH: [Transport; 2] = [Transport::WebsocketSpdy, Transport::Spdy];

fn how(t: Transport) -> SpdyTransport {
    match t {
        Transport::WebsocketSpdy => SpdyTransport::WebSocket,
        _ => SpdyTransport::Upgrade,
    }
}

/// Waits until `cond` holds, looking every 10 ms, bounded like every wait here.
async fn until(what: &str, cond: impl Fn() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Asks the web pod behind `conn` for `n` bytes of its pattern (read with `read_pattern`).
async fn ask_bytes(conn: &mut PodStream, n: usize) {
    conn.write_all(
        format!("GET /bytes/{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

fn pod_of(cluster: &Cluster, app: &str) -> String {
    cluster.ready_pods("demo", &format!("app={app}"))[0]
        .metadata
        .name
        .clone()
        .expect("pod name")
}

/// Starts a one-pod deployment of `image` on `port` in `demo` and returns the pod's name.
async fn one_pod(
    cluster: &Cluster,
    name: &str,
    image: &str,
    port: i32,
    env: &[(&str, String)],
) -> String {
    let mut d = kforward_testkit::deployment(name, image, 1, &[("tcp", port, "TCP")]);
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.containers[0].env = Some(
            env.iter()
                .map(|(k, v)| k8s_openapi::api::core::v1::EnvVar {
                    name: k.to_string(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect(),
        );
    }
    cluster.create_deployment("demo", &d).expect("deployment");
    cluster
        .wait_deployment_ready("demo", name, WAIT)
        .await
        .expect("deployment ready");
    pod_of(cluster, name)
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn pool(ctx: &KubeContext, t: Transport) -> SessionPool {
    SessionPool::new(ctx.clone(), "demo", t)
}

/// Sends `data`, shuts the write side, and reads until EOF (or an error), concurrently.
/// Returns what came back and how long EOF took after the shutdown.
async fn send_then_shut(
    conn: PodStream,
    data: Arc<Vec<u8>>,
) -> (std::io::Result<Vec<u8>>, Duration) {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let shut_at = Arc::new(std::sync::Mutex::new(None));
    let at = shut_at.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("write");
        wr.shutdown().await.expect("shutdown");
        *at.lock().expect("lock") = Some(Instant::now());
        wr
    });
    let mut back = Vec::new();
    let r = rd.read_to_end(&mut back).await;
    let eof_at = Instant::now();
    let _wr = writer.await.expect("writer");
    let shut = shut_at.lock().expect("lock").expect("shut down");
    (r.map(|_| back), eof_at.duration_since(shut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_echo_returns_every_byte_then_eof_over_both_spdy_transports() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    for t in BOTH {
        let pool = pool(&ctx, t);
        for n in [1usize, 256 << 10, 64 << 20] {
            let data = Arc::new(noise(n, n as u64));
            let conn = bounded("connect", pool.connect(&echo, 7000))
                .await
                .expect("connect");
            assert_eq!(conn.transport(), t);
            let (back, eof_after) =
                bounded("echo and EOF", send_then_shut(conn, data.clone())).await;
            let back = back.expect("a clean EOF");
            assert_eq!(back.len(), n, "{t}: {n} bytes back");
            assert!(back == *data, "{t}: the bytes came back intact");
            // The runtime's grace, then the close: EOF comes from the server's DATA+FIN.
            println!("{t}: {n} bytes echoed, EOF {eof_after:?} after the shutdown");
        }
        assert_eq!(
            pool.stats()[0].sessions.len(),
            1,
            "{t}: one session carried all three"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_answers_after_eof_sees_it_only_when_the_runtime_closes_so_its_answer_is_lost() {
    // What kubectl gets too: containerd and CRI-O never half-close the pod's connection.
    // Straight to the pod, the same upload gets its answer.
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let pod = one_pod(&cluster, "checksum", "kforward/checksum:1", 9000, &[]).await;
    let ip: std::net::IpAddr = cluster
        .pod("demo", &pod)
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("ip")
        .parse()
        .expect("ip");
    let data = Arc::new(noise(256 << 10, 7));
    let mut direct = TcpStream::connect((ip, 9000)).await.expect("direct");
    direct.write_all(&data).await.expect("write");
    direct.shutdown().await.expect("shutdown");
    let mut answer = String::new();
    bounded("the direct answer", direct.read_to_string(&mut answer))
        .await
        .expect("read");
    assert_eq!(answer, kforward_testkit::network::checksum_line(&data));
    for t in BOTH {
        let conn = bounded("connect", pool(&ctx, t).connect(&pod, 9000))
            .await
            .expect("connect");
        let (back, eof_after) = bounded("EOF", send_then_shut(conn, data.clone())).await;
        let back = back.expect("a clean EOF");
        assert!(
            back.is_empty(),
            "{t}: the runtime closed before the pod could answer: {:?}",
            String::from_utf8_lossy(&back)
        );
        assert!(
            eof_after >= RUNTIME_GRACE,
            "{t}: EOF after the grace, {eof_after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v4_fallback_has_no_half_close_the_echo_never_ends() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    let pool = pool(&ctx, Transport::Websocket);
    let mut conn = bounded("connect", pool.connect(&echo, 7000))
        .await
        .expect("connect");
    assert_eq!(conn.transport(), Transport::Websocket);
    assert!(!conn.transport().half_close());
    conn.write_all(b"hello").await.expect("write");
    // The shutdown stops writes only: nothing reaches the server.
    conn.shutdown().await.expect("shutdown");
    let mut back = [0u8; 5];
    bounded("the echo", conn.read_exact(&mut back))
        .await
        .expect("echo");
    assert_eq!(&back, b"hello");
    let mut more = [0u8; 1];
    let waited = 3 * RUNTIME_GRACE;
    let r = tokio::time::timeout(waited, conn.read(&mut more)).await;
    assert!(
        r.is_err(),
        "no EOF ever comes: the pod never learns the client is done ({r:?})"
    );
    assert!(stats_transport(&pool).is_empty(), "no SPDY session for v4");
}

fn stats_transport(pool: &SessionPool) -> Vec<Transport> {
    pool.stats()
        .into_iter()
        .flat_map(|p| p.sessions.into_iter().map(|(_, t)| t))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_close_is_eof_while_writes_still_reach_it() {
    // The http pod answers `Connection: close` requests and closes its side: EOF on read.
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    for t in BOTH {
        let mut conn = bounded("connect", pool(&ctx, t).connect(&web, 8080))
            .await
            .expect("connect");
        ask_bytes(&mut conn, 100000).await;
        let mut reply = Vec::new();
        bounded("reply and EOF", conn.read_to_end(&mut reply))
            .await
            .expect("EOF");
        let body = reply
            .split(|b| *b == b'\n')
            .next_back()
            .expect("body")
            .len();
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{t}");
        assert!(
            reply.len() > 100_000 && body <= 100_000,
            "{t}: {} bytes",
            reply.len()
        );
        // Writes after the pod's EOF still go out (the server may drop them).
        conn.write_all(b"late")
            .await
            .expect("a write after the pod's EOF");
    }
}

/// A TCP proxy in front of the API server whose server-to-client direction can be held.
struct Proxy {
    addr: SocketAddr,
    hold: Arc<AtomicBool>,
    released: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicU64::new(0));
        let (h, r) = (hold.clone(), released.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        while h.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        r.fetch_add(n as u64, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Proxy {
            addr,
            hold,
            released,
        }
    }
}

/// A context whose API server is reached through `proxy`.
async fn context_through(cluster: &Cluster, proxy: &Proxy, dir: &tempfile::TempDir) -> KubeContext {
    let mut entry = cluster.kubeconfig_entry();
    entry.server = format!("https://{}", proxy.addr);
    let path = dir.path().join("kubeconfig");
    kforward_testkit::write_kubeconfig(&path, &[entry]).expect("kubeconfig");
    let src = kforward_core::KubeconfigSource::default().with_path(&path);
    KubeContext::load_fresh(&src).await.expect("context")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_bytes_reach_the_pod_before_any_answer_comes_back() {
    // One round trip to the first byte: the SYN_STREAMs and the first DATA go out
    // together. Here nothing the server sends reaches the client while the pod gets the
    // data, so no SYN_REPLY can have been waited for.
    let cluster = demo().await;
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = sink.local_addr().expect("addr");
    let pod = one_pod(
        &cluster,
        "through",
        kforward_testkit::PASSTHROUGH_IMAGE,
        9100,
        &[("PASSTHROUGH_TARGET", target.to_string())],
    )
    .await;
    let proxy = Proxy::start(cluster.api_addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context_through(&cluster, &proxy, &dir).await;
    for t in BOTH {
        let pool = pool(&ctx, t);
        bounded("a ready session", pool.prepare(&pod))
            .await
            .expect("prepare");
        proxy.hold.store(true, Ordering::SeqCst);
        let before = proxy.released.load(Ordering::SeqCst);
        let mut conn = pool
            .connect(&pod, 9100)
            .await
            .expect("connect on a ready session");
        conn.write_all(b"first").await.expect("write");
        let (mut at_pod, _) = bounded("the pod's connection", sink.accept())
            .await
            .expect("accept");
        let mut got = [0u8; 5];
        bounded("the first bytes at the pod", at_pod.read_exact(&mut got))
            .await
            .expect("read");
        assert_eq!(&got, b"first");
        assert_eq!(
            proxy.released.load(Ordering::SeqCst),
            before,
            "{t}: nothing came back from the server before the data reached the pod"
        );
        let stream = conn.spdy().expect("a SPDY stream");
        assert!(!stream.replied(), "{t}: no SYN_REPLY seen yet");
        proxy.hold.store(false, Ordering::SeqCst);
        at_pod.write_all(b"back").await.expect("answer");
        let mut answer = [0u8; 4];
        bounded("the answer", conn.read_exact(&mut answer))
            .await
            .expect("read");
        assert_eq!(&answer, b"back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_quiet_session_past_the_kubelets_idle_timeout() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    cluster.set_streaming_idle_timeout(Some(Duration::from_millis(400)));
    for t in BOTH {
        let config = PoolConfig {
            session: SessionConfig {
                ping_interval: Duration::from_millis(100),
                ping_timeout: Duration::from_millis(1000),
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let mut conn = bounded("connect", pool.connect(&echo, 7000))
            .await
            .expect("connect");
        // Quiet for five idle timeouts: only PINGs cross.
        tokio::time::sleep(Duration::from_secs(2)).await;
        conn.write_all(b"still here").await.expect("write");
        let mut back = [0u8; 10];
        bounded("echo", conn.read_exact(&mut back))
            .await
            .expect("the stream lived");
        assert_eq!(pool.stats()[0].sessions.len(), 1, "{t}: the same session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeouts_rst_and_goaway_end_the_stream_and_a_new_session_replaces_it() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    for t in BOTH {
        cluster.set_streaming_idle_timeout(Some(Duration::from_millis(300)));
        let config = PoolConfig {
            session: SessionConfig {
                ping_interval: Duration::from_secs(60),
                ping_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let mut conn = bounded("connect", pool.connect(&echo, 7000))
            .await
            .expect("connect");
        let mut b = [0u8; 1];
        let err = bounded("the reset", conn.read(&mut b))
            .await
            .expect_err("reset");
        match SpdyError::of(&err) {
            Some(SpdyError::Reset { status: 5, .. }) => {}
            other => panic!("{t}: expected a reset, got {other:?} ({err})"),
        }
        // The GOAWAY ended the session; the next connection gets a new one (without the
        // short idle timeout, which a loaded machine could reach before the echo comes).
        cluster.set_streaming_idle_timeout(None);
        let mut next = bounded("reconnect", pool.connect(&echo, 7000))
            .await
            .expect("connect");
        next.write_all(b"x").await.expect("write");
        bounded("echo", next.read_exact(&mut b))
            .await
            .expect("read");
        assert_eq!(&b, b"x");
    }
    cluster.set_streaming_idle_timeout(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ping_ends_a_dead_session_and_the_next_connection_gets_a_new_one() {
    // A black hole (a laptop asleep, a dead VPN): the proxy stops passing the server's
    // bytes; the PING goes unanswered.
    let cluster = demo().await;
    let echo = pod_of(&cluster, "echo");
    let proxy = Proxy::start(cluster.api_addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context_through(&cluster, &proxy, &dir).await;
    let config = PoolConfig {
        session: SessionConfig {
            ping_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    };
    let pool = SessionPool::with_config(ctx, "demo", Transport::Spdy, config);
    let mut conn = bounded("connect", pool.connect(&echo, 7000))
        .await
        .expect("connect");
    proxy.hold.store(true, Ordering::SeqCst);
    let mut b = [0u8; 1];
    let err = bounded("the session's end", conn.read(&mut b))
        .await
        .expect_err("lost");
    assert!(
        matches!(
            SpdyError::of(&err),
            Some(SpdyError::SessionLost {
                end: SessionEnd::PingTimeout(_),
                ..
            })
        ),
        "{err}"
    );
    proxy.hold.store(false, Ordering::SeqCst);
    let mut next = bounded("reconnect", pool.connect(&echo, 7000))
        .await
        .expect("connect");
    next.write_all(b"y").await.expect("write");
    bounded("echo", next.read_exact(&mut b))
        .await
        .expect("read");
    assert_eq!(&b, b"y");
}

/// A data stream the client resets gets the pod's data for the runtime's grace but no FIN:
/// spdystream refuses a write with FIN on a reset stream (`Stream.WriteData`) and lets
/// other writes through, and the runtime's copy goes on for its grace; the error stream
/// still ends with its FIN. Spoken raw over the plain upgrade, as kforward's own session
/// drops every frame of a stream it reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_data_stream_gets_the_pods_data_for_the_runtimes_grace_but_no_fin() {
    use bytes::{Bytes, BytesMut};
    use kforward_core::transport::spdy::frame::{self, Frame};
    use kforward_core::transport::spdy::headers::HeaderEncoder;

    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    let req = http::Request::post(format!("/api/v1/namespaces/demo/pods/{web}/portforward"))
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "portforward.k8s.io")
        .body(kube::client::Body::empty())
        .expect("request");
    let res = bounded("the upgrade", ctx.client().send(req))
        .await
        .expect("an answer");
    assert_eq!(res.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    let io = bounded("the upgraded connection", hyper::upgrade::on(res))
        .await
        .expect("upgraded");
    let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(io));

    // Error stream 1, data stream 3, and a request for far more than the grace carries.
    let (error_id, data_id) = (1u32, 3u32);
    let mut headers = HeaderEncoder::new();
    let mut out = BytesMut::new();
    for (stream_id, kind) in [(error_id, "error"), (data_id, "data")] {
        let block = headers.encode(&[("streamtype", kind), ("port", "8080"), ("requestid", "0")]);
        frame::encode(
            &Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                header_block: Bytes::from(block),
            },
            &mut out,
        );
    }
    let get = format!(
        "GET /bytes/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        kforward_testkit::network::MAX_PATTERN_BYTES
    );
    frame::encode(
        &Frame::Data {
            stream_id: data_id,
            fin: false,
            data: Bytes::from(get),
        },
        &mut out,
    );
    wr.write_all(&out).await.expect("write the streams");

    let mut buf = BytesMut::new();
    let mut next = async || loop {
        if let Some(f) = frame::decode(&mut buf).expect("a valid frame") {
            return f;
        }
        let n = rd.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "the session ended");
    };
    // The first bytes of the reply, then the reset.
    bounded("the first data", async {
        loop {
            if let Frame::Data { stream_id, .. } = next().await
                && stream_id == data_id
            {
                return;
            }
        }
    })
    .await;
    out.clear();
    frame::encode(
        &Frame::RstStream {
            stream_id: data_id,
            status: frame::RST_CANCEL,
        },
        &mut out,
    );
    wr.write_all(&out).await.expect("write the reset");
    let reset_at = Instant::now();

    // Until the error stream ends: the data stream's frames after the reset, and its FIN.
    let (mut after, mut data_fin) = (0usize, false);
    bounded("the error stream's end", async {
        loop {
            match next().await {
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } if stream_id == data_id => {
                    after += data.len();
                    data_fin |= fin;
                }
                Frame::Data {
                    stream_id,
                    fin: true,
                    ..
                } if stream_id == error_id => return,
                _ => {}
            }
        }
    })
    .await;
    let ended_after = reset_at.elapsed();
    assert!(!data_fin, "a FIN came on the reset data stream");
    assert!(
        after > 0,
        "the pod's data stopped at the reset; the runtime sends it for its grace"
    );
    assert!(
        ended_after >= RUNTIME_GRACE - Duration::from_millis(100),
        "the error stream ended {ended_after:?} after the reset, before the runtime's grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_fails_that_connection_only_with_the_kubelets_message() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    for t in BOTH {
        let pool = pool(&ctx, t);
        let mut ok = bounded("connect", pool.connect(&echo, 7000))
            .await
            .expect("connect");
        let mut bad = bounded("connect", pool.connect(&echo, 7999))
            .await
            .expect("connect");
        let mut b = [0u8; 1];
        let err = bounded("the refusal", bad.read(&mut b))
            .await
            .expect_err("refused");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{t}: {err}"
        );
        assert!(err.to_string().contains("connection refused"), "{t}: {err}");
        assert!(err.to_string().contains(&echo), "{t}: names the pod: {err}");
        ok.write_all(b"z").await.expect("write");
        bounded("echo", ok.read_exact(&mut b))
            .await
            .expect("the other connection lives");
        assert_eq!(
            pool.stats()[0].sessions[0].0.streams,
            2,
            "{t}: the session lives on"
        );
    }
}

/// Reads `/bytes/N` from an http pod, checking the pattern; returns the body length.
async fn read_pattern(conn: &mut PodStream) -> std::io::Result<u64> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut b).await?;
        head.push(b[0]);
    }
    // One period of the pattern, repeated: each chunk is compared with one memcmp.
    let period: Vec<u8> = (0..251u64)
        .map(kforward_testkit::network::pattern_byte)
        .collect();
    let pattern: Vec<u8> = period
        .iter()
        .copied()
        .cycle()
        .take((64 << 10) + 251)
        .collect();
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(at);
        }
        let from = (at % 251) as usize;
        assert!(
            buf[..n] == pattern[from..from + n],
            "the body differs near byte {at}"
        );
        at += n as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_reset_at_its_bound_and_the_others_on_its_session_flow_on() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    let limit = 4 << 20;
    for t in BOTH {
        let config = PoolConfig {
            session: SessionConfig {
                stream_buffer: limit,
                stall_timeout: Duration::from_secs(2),
                ..Default::default()
            },
            ..Default::default()
        };
        // Connections to one pod share its session: the stalled one and three busy ones
        // that read large bodies as fast as they come.
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let mut stalled = bounded("connect", pool.connect(&web, 8080))
            .await
            .expect("connect");
        let mut busy = Vec::new();
        for _ in 0..3 {
            busy.push(
                bounded("connect", pool.connect(&web, 8080))
                    .await
                    .expect("connect"),
            );
        }
        stalled
            .write_all(b"GET /bytes/4000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut tasks = Vec::new();
        for mut c in busy {
            tasks.push(tokio::spawn(async move {
                c.write_all(
                    b"GET /bytes/33554432 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .await
                .expect("write");
                read_pattern(&mut c).await.expect("the busy stream")
            }));
        }
        for task in tasks {
            let n = bounded("a busy stream", task).await.expect("task");
            assert_eq!(n, 32 << 20, "{t}: every byte of the busy streams");
        }
        assert_eq!(pool.stats()[0].sessions.len(), 1, "{t}: all on one session");
        let mut b = [0u8; 1];
        let err = loop {
            match bounded("the stalled stream's end", stalled.read(&mut b)).await {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        match SpdyError::of(&err) {
            Some(SpdyError::Overflow { limit: l, .. }) => assert_eq!(*l, limit),
            other => panic!("{t}: expected an overflow, got {other:?}: {err}"),
        }
        assert!(err.to_string().contains("stopped taking data"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_alone_on_its_session_holds_it_instead_and_loses_nothing() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    for t in BOTH {
        let config = PoolConfig {
            session: SessionConfig {
                stream_buffer: 256 << 10,
                // Past the hard bound (1 MiB) before any pacing.
                lone_stream_buffer: 64 << 20,
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let mut slow = bounded("connect", pool.connect(&web, 8080))
            .await
            .expect("connect");
        ask_bytes(&mut slow, 16777216).await;
        until("the session to hold", || pool.stats()[0].sessions[0].0.held).await;
        let n = bounded("the whole body", read_pattern(&mut slow))
            .await
            .expect("read");
        assert_eq!(n, 16 << 20, "{t}: nothing lost while held");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_stream_paces_its_session_and_a_new_stream_goes_beside_it_or_on_it_and_flows_at_once()
 {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    // With room for a second session to the pod, the new connection gets one and the
    // paused stream's session stays paced; with none, the new stream joins the paced
    // session and ends its pacing. Either way both bodies arrive whole.
    for (t, max_sessions_per_pod) in BOTH.into_iter().flat_map(|t| [(t, 2), (t, 1)]) {
        let lone = 256 << 10;
        let config = PoolConfig {
            session: SessionConfig {
                lone_stream_buffer: lone,
                // The paused reader below must not count as stalled, alone or beside the
                // other stream, on a loaded machine.
                stall_timeout: Duration::from_secs(120),
                hold_grace: Duration::from_secs(120),
                ..Default::default()
            },
            max_sessions_per_pod,
            ..Default::default()
        };
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let loads = |pool: &SessionPool| -> Vec<SessionLoad> {
            pool.stats()[0].sessions.iter().map(|(l, _)| *l).collect()
        };
        let mut paused = bounded("connect", pool.connect(&web, 8080))
            .await
            .expect("connect");
        ask_bytes(&mut paused, 16777216).await;
        // Its reader takes nothing: the session stops reading at the lone bound, far
        // below the stream bounds, and holds nothing.
        until("the session to pace", || loads(&pool)[0].paced).await;
        assert!(!loads(&pool)[0].held, "{t}: paced, not held");
        // A second connection gets its whole body while the first reader still takes
        // nothing.
        let mut other = bounded("connect", pool.connect(&web, 8080))
            .await
            .expect("connect");
        ask_bytes(&mut other, 4194304).await;
        let n = bounded("the other body", read_pattern(&mut other))
            .await
            .expect("read");
        assert_eq!(n, 4 << 20, "{t}: the other stream's body");
        let now = loads(&pool);
        assert_eq!(
            now.len(),
            max_sessions_per_pod,
            "{t}: a session of its own when the pod may have another ({now:?})"
        );
        if max_sessions_per_pod > 1 {
            assert!(
                now.iter().any(|l| l.paced && l.streams == 1),
                "{t}: the paused stream's session still paced, untouched ({now:?})"
            );
        }
        drop(other);
        // Alone again, the paused stream loses nothing.
        let n = bounded("the paused body", read_pattern(&mut paused))
            .await
            .expect("read");
        assert_eq!(n, 16 << 20, "{t}: nothing lost while paced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_whose_readers_are_all_behind_paces_and_loses_nothing() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let web = pod_of(&cluster, "web");
    for t in BOTH {
        let config = PoolConfig {
            session: SessionConfig {
                lone_stream_buffer: 256 << 10,
                // Readers that take nothing below must be waited for, not reset.
                stall_timeout: Duration::from_secs(120),
                hold_grace: Duration::from_secs(120),
                ..Default::default()
            },
            max_sessions_per_pod: 1,
            ..Default::default()
        };
        let pool = SessionPool::with_config(ctx.clone(), "demo", t, config);
        let load = |pool: &SessionPool| pool.stats()[0].sessions[0].0;
        let mut conns = Vec::new();
        for _ in 0..2 {
            conns.push(
                bounded("connect", pool.connect(&web, 8080))
                    .await
                    .expect("connect"),
            );
        }
        for c in &mut conns {
            ask_bytes(c, 16777216).await;
        }
        // Neither reader takes anything: once both are behind the session stops reading,
        // far below the stream bounds, and holds nothing.
        until("the shared session to pace", || load(&pool).paced).await;
        let now = load(&pool);
        assert!(!now.held, "{t}: paced, not held ({now:?})");
        assert_eq!(now.streams, 2, "{t}: both on the session ({now:?})");
        // Both read now: the pacing lets go as they take data, and nothing is lost.
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| tokio::spawn(async move { read_pattern(&mut c).await }))
            .collect();
        for task in tasks {
            let n = bounded("a body", task).await.expect("task").expect("read");
            assert_eq!(n, 16 << 20, "{t}: nothing lost while paced");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_port_forwards_and_an_api_restart_are_replaced_without_failing_new_connections() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    for t in BOTH {
        let pool = pool(&ctx, t);
        for restart in [false, true] {
            let mut live = bounded("connect", pool.connect(&echo, 7000))
                .await
                .expect("connect");
            if restart {
                bounded("restart", cluster.restart_api())
                    .await
                    .expect("restart");
            } else {
                cluster.drop_port_forwards();
            }
            let mut b = [0u8; 1];
            let err = bounded("the live connection's end", live.read(&mut b))
                .await
                .expect_err("cut");
            assert!(
                matches!(SpdyError::of(&err), Some(SpdyError::SessionLost { .. })),
                "{t}: an error, not an EOF: {err}"
            );
            // Every connection that starts after the cut works.
            let mut conns = Vec::new();
            for i in 0..20u8 {
                let pool = pool.clone();
                let echo = echo.clone();
                conns.push(tokio::spawn(async move {
                    let mut c = pool
                        .connect(&echo, 7000)
                        .await
                        .expect("connect after the cut");
                    c.write_all(&[i]).await.expect("write");
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).await.expect("echo");
                    assert_eq!(b[0], i);
                }));
            }
            for c in conns {
                bounded("a new connection", c).await.expect("task");
            }
            let sessions: usize = pool.stats().iter().map(|p| p.sessions.len()).sum();
            assert_eq!(sessions, 1, "{t}: one new session (restart {restart})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spreads_over_more_than_one_session() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    let config = PoolConfig {
        streams_per_session: 8,
        ..Default::default()
    };
    let pool = SessionPool::with_config(ctx, "demo", Transport::WebsocketSpdy, config);
    let mut conns = Vec::new();
    for i in 0..200u32 {
        let pool = pool.clone();
        let echo = echo.clone();
        conns.push(tokio::spawn(async move {
            let mut c = pool.connect(&echo, 7000).await.expect("connect");
            let msg = format!("connection {i} ").repeat(16);
            c.write_all(msg.as_bytes()).await.expect("write");
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back).await.expect("read");
            assert_eq!(back, msg.as_bytes());
            c
        }));
    }
    let mut open = Vec::new();
    for c in conns {
        open.push(bounded("a connection", c).await.expect("task"));
    }
    let sessions = pool.stats()[0].sessions.len();
    assert!(sessions > 1, "200 connections over {sessions} session(s)");
    assert!(sessions <= PoolConfig::default().max_sessions_per_pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_finds_what_the_server_offers_once_and_a_forced_transport_says_what_failed() {
    let cluster = demo().await;
    let echo = pod_of(&cluster, "echo");
    // A server without the WebSocket tunnel (before Kubernetes 1.31).
    cluster.refuse_port_forward(PortForwardTransport::SpdyTunnel);
    let ctx = context(&cluster).await;
    let auto = pool(&ctx, Transport::Auto);
    let mut c = bounded("connect", auto.connect(&echo, 7000))
        .await
        .expect("auto");
    assert_eq!(c.transport(), Transport::Spdy);
    assert_eq!(ctx.transport_memo().get(), Some(Transport::Spdy));
    c.write_all(b"a").await.expect("write");
    let mut b = [0u8; 1];
    bounded("echo", c.read_exact(&mut b)).await.expect("read");
    // Remembered: another pool of the same context asks the server once.
    let before = cluster.stats().requests;
    let again = pool(&ctx, Transport::Auto);
    bounded("prepare", again.prepare(&echo))
        .await
        .expect("prepare");
    assert_eq!(
        cluster.stats().requests - before,
        1,
        "one upgrade request, no second negotiation"
    );
    // Forcing the refused transport says so.
    let forced = pool(&ctx, Transport::WebsocketSpdy);
    let err = bounded("connect", forced.connect(&echo, 7000))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, kforward_core::Error::TransportRefused { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("websocket-spdy") && text.contains("403"),
        "{text}"
    );

    // A proxy that passes neither SPDY form: a new client ends on v4, without half-close.
    cluster.refuse_port_forward(PortForwardTransport::Spdy);
    let ctx = KubeContext::load_fresh(
        &kforward_core::KubeconfigSource::default().with_path(cluster.kubeconfig_path()),
    )
    .await
    .expect("context");
    let v4 = pool(&ctx, Transport::Auto);
    let mut c = bounded("connect", v4.connect(&echo, 7000))
        .await
        .expect("auto to v4");
    assert_eq!(c.transport(), Transport::Websocket);
    assert_eq!(ctx.transport_memo().get(), Some(Transport::Websocket));
    c.write_all(b"v").await.expect("write");
    bounded("echo", c.read_exact(&mut b)).await.expect("read");
    // The API server's own refusals are not a reason to fall back.
    cluster.offer_port_forward(PortForwardTransport::SpdyTunnel);
    cluster.offer_port_forward(PortForwardTransport::Spdy);
    cluster.deny("create", "pods/portforward");
    let ctx = KubeContext::load_fresh(
        &kforward_core::KubeconfigSource::default().with_path(cluster.kubeconfig_path()),
    )
    .await
    .expect("context");
    let err = bounded("connect", pool(&ctx, Transport::Auto).connect(&echo, 7000))
        .await
        .expect_err("forbidden");
    assert!(err.is_permission_denied(), "{err}");
    assert_eq!(
        ctx.transport_memo().get(),
        None,
        "nothing learnt from a refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_open_directly_over_either_form_and_close_cleanly() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let echo = pod_of(&cluster, "echo");
    for t in BOTH {
        let session = bounded(
            "open",
            Session::open(&ctx, "demo", &echo, how(t), SessionConfig::default()),
        )
        .await
        .expect("open");
        let mut s = session.open_stream(7000).expect("stream");
        s.write_all(b"ok").await.expect("write");
        let mut b = [0u8; 2];
        bounded("echo", s.read_exact(&mut b)).await.expect("read");
        assert!(s.replied());
        session.close();
        let err = s.read(&mut b).await.expect_err("closed");
        assert!(
            matches!(
                SpdyError::of(&err),
                Some(SpdyError::SessionLost {
                    end: SessionEnd::Local,
                    ..
                })
            ),
            "{err}"
        );
        assert!(
            session.open_stream(7000).is_err(),
            "no streams on a closed session"
        );
    }
}
