//! The transport option through whole forwards (the pipeline's pod dialer): which
//! transport a forward names, half-close through a forward over each, the pod's EOF
//! reaching the local client while its writes still reach the pod, and a forced transport
//! the cluster refuses.
//!
//! The testkit's kubelet carries a connection as containerd and CRI-O do (see `spdy.rs`):
//! a client's DATA+FIN ends the client-to-pod direction, the pod's side gets one more
//! second, then its connection is closed, which the local client sees as EOF.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kforward_core::transport::Transport;
use kforward_core::{Event, ForwardOptions, Forwarder};
use kforward_testkit::portforward::PortForwardTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// The linger after a local EOF on v4, long enough that the runtime's one-second grace on
/// SPDY is told from it on a loaded machine.
const LINGER: Duration = Duration::from_secs(5);

fn with(t: Transport) -> ForwardOptions {
    ForwardOptions {
        transport: t,
        half_close_linger: LINGER,
        ..quick()
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Starts `spec` with `opts`; the bound address and the transport its `ready` event named.
async fn start_with(
    ctx: &kforward_core::KubeContext,
    spec: kforward_core::spec::ForwardSpec,
    opts: ForwardOptions,
) -> (kforward_core::Forward, std::net::SocketAddr, Transport) {
    let mut f = kforward_core::Forward::new(ctx.clone(), spec, opts);
    let mut events = f.subscribe();
    let bound = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect("forward starts");
    let transport = loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(Event::Ready { transport, .. })) => break transport,
            Ok(Ok(_)) => {}
            other => panic!("no ready event: {other:?}"),
        }
    };
    (f, bound[0].local_addr, transport)
}

/// Sends `data` through `addr`, shuts the write side, reads to EOF; what came back and how
/// long EOF took after the shutdown.
async fn send_then_shut(addr: std::net::SocketAddr, data: Arc<Vec<u8>>) -> (Vec<u8>, Duration) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("write");
        wr.shutdown().await.expect("shutdown");
        (Instant::now(), wr)
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, rd.read_to_end(&mut back))
        .await
        .expect("EOF in time")
        .expect("a clean EOF");
    let eof = Instant::now();
    let (shut, _wr) = writer.await.expect("writer");
    (back, eof.saturating_duration_since(shut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_settles_on_spdy_in_a_websocket_and_the_ready_event_says_so() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    let (mut f, _, t) = start_with(&ctx, spec("svc/echo", 0, 7000), quick()).await;
    assert_eq!(t, Transport::WebsocketSpdy);
    assert_eq!(ctx.transport_memo().get(), Some(Transport::WebsocketSpdy));
    f.stop().await;
    // Without the tunnel the plain upgrade is next, then v4.
    let cluster = demo().await;
    cluster.refuse_port_forward(PortForwardTransport::SpdyTunnel);
    let ctx = context(&cluster).await;
    let (mut f, addr, t) = start_with(&ctx, spec("svc/echo", 0, 7000), quick()).await;
    assert_eq!(t, Transport::Spdy);
    let (back, _) = send_then_shut(addr, Arc::new(b"hello".to_vec())).await;
    assert_eq!(back, b"hello");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_through_a_forward_returns_every_byte_then_eof_over_each_transport() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    for t in [
        Transport::WebsocketSpdy,
        Transport::Spdy,
        Transport::Websocket,
    ] {
        let (mut f, addr, named) = start_with(&ctx, spec("svc/echo", 0, 7000), with(t)).await;
        assert_eq!(named, t, "the ready event names the transport");
        for n in [1usize, 256 << 10, 64 << 20] {
            let data = Arc::new(noise(n, n as u64));
            let (back, eof_after) = send_then_shut(addr, data.clone()).await;
            assert_eq!(back.len(), n, "{t}: {n} bytes back");
            assert!(back == *data, "{t}: {n} bytes intact");
            println!("{t}: {n} B echoed, EOF {eof_after:?} after the shutdown");
            if t.half_close() {
                // The runtime's one-second grace ends it, not kforward's linger.
                assert!(
                    eof_after < LINGER,
                    "{t}: EOF {eof_after:?} after the shutdown"
                );
            } else {
                // No half-close on v4: the linger (5 s of quiet) ends it.
                assert!(
                    eof_after >= LINGER - Duration::from_millis(100),
                    "{t}: EOF {eof_after:?} came before the linger"
                );
            }
        }
        f.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_eof_reaches_the_local_client_while_its_writes_still_reach_the_pod() {
    let cluster = demo().await;
    let ctx = context(&cluster).await;
    for t in [Transport::WebsocketSpdy, Transport::Spdy] {
        let (mut f, addr, _) = start_with(&ctx, spec("svc/web", 0, 80), with(t)).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // The web pod answers `Connection: close` and closes its side.
        s.write_all(b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut reply))
            .await
            .expect("EOF in time")
            .expect("read");
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{t}");
        // Our side is still open: a write after the pod's EOF is taken.
        s.write_all(b"late").await.expect("a write after EOF");
        s.shutdown().await.expect("shutdown");
        f.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_transport_the_cluster_refuses_fails_the_start_naming_it() {
    let cluster = demo().await;
    cluster.refuse_port_forward(PortForwardTransport::Spdy);
    let ctx = context(&cluster).await;
    let mut f = kforward_core::Forward::new(
        ctx.clone(),
        spec("svc/echo", 0, 7000),
        with(Transport::Spdy),
    );
    let err = tokio::time::timeout(WAIT, f.start())
        .await
        .expect("start in time")
        .expect_err("the plain upgrade is refused");
    let text = err.to_string();
    assert!(text.contains("spdy") && text.contains("auto"), "{text}");
    // The spec's own transport wins over the options'.
    let (mut f, _, t) = start_with(
        &ctx,
        spec("svc/echo", 0, 7000).with_transport(Transport::Websocket),
        with(Transport::Spdy),
    )
    .await;
    assert_eq!(t, Transport::Websocket);
    f.stop().await;
}
