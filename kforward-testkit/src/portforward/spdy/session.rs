//! Serving one SPDY/3.1 port-forward session, with the kubelet's duties
//! (`staging/src/k8s.io/kubelet/pkg/cri/streaming/portforward/httpstream.go`,
//! `apimachinery/pkg/util/httpstream/spdy/connection.go`, `moby/spdystream`): SYN_REPLY to
//! every SYN_STREAM, streams paired by `requestid` (an error stream and a data stream per
//! connection), a connection to the pod's port per pair carried as the container runtime
//! carries it (see [`forward`]), DATA+FIN on the data stream and FIN on the error stream
//! when that is done, PINGs echoed.
//!
//! GOAWAY from the client works as spdystream's `handleGoAwayFrame`: SYN_STREAMs after it
//! are dropped unanswered (`checkStreamFrame`), the streams in flight go on, and the
//! connection closes once they are done. The streaming idle timeout (a fault here, the
//! kubelet's `--streaming-connection-idle-timeout` there) works as spdystream's
//! `idleAwareFramer`: when no frame was read or written for that long, every open stream
//! is reset (RST_STREAM CANCEL), GOAWAY is sent and the connection closes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame};
use super::headers::HeaderCodec;
use crate::state::{LiveStream, Shared, lock};

/// Bytes read from the pod per DATA frame.
const CHUNK: usize = 64 * 1024;
/// DATA payloads at least this large are written behind their header, not copied.
const DIRECT: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the container runtime lets one direction of a connection go on after the
/// other ended, before it closes the pod's connection: one second in containerd
/// (`copyPortForward`, `internal/cri/server/sandbox_portforward.go`) and CRI-O
/// (`PortForwardContainer`, `internal/oci/runtime_oci_linux.go`).
pub(crate) const RUNTIME_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// RST_STREAM status CANCEL, as spdystream's idle timeout resets streams.
const RST_CANCEL: u32 = 5;

enum Out {
    Frame(Frame),
    /// A SYN_REPLY with no headers; compressed in the writer so blocks stay in order.
    Reply(u32),
}

#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// Milliseconds since `start` of the last frame read or written.
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Serves a session until the client goes away, its GOAWAY drained the streams, the
/// idle timeout fires, or a fault drops it.
pub(crate) async fn serve<S>(
    io: S,
    shared: Arc<Shared>,
    dropped: CancellationToken,
    pod: String,
    uid: String,
    ip: Ipv4Addr,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _live = LiveStream::new(shared.clone());
    let shutdown = shared.shutdown.clone();
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    });
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let written = activity.clone();
    let writer = tokio::spawn(async move {
        let mut codec = HeaderCodec::new();
        let mut buf = BytesMut::with_capacity(CHUNK + 64);
        while let Some(first) = out_rx.recv().await {
            let mut next = Some(first);
            while let Some(o) = next.take() {
                let f = match o {
                    Out::Frame(f) => f,
                    Out::Reply(stream_id) => Frame::SynReply {
                        stream_id,
                        fin: false,
                        header_block: Bytes::from(codec.encode(&[])),
                    },
                };
                match f {
                    // A large payload goes out behind its header without being copied.
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } if data.len() >= DIRECT => {
                        frame::encode_data_header(stream_id, fin, data.len(), &mut buf);
                        let mut out = Buf::chain(&buf[..], data);
                        if wr.write_all_buf(&mut out).await.is_err() {
                            return;
                        }
                        buf.clear();
                    }
                    f => frame::encode(&f, &mut buf),
                }
                if buf.len() >= CHUNK {
                    break;
                }
                next = out_rx.try_recv().ok();
            }
            if (!buf.is_empty() && wr.write_all(&buf).await.is_err()) || wr.flush().await.is_err() {
                return;
            }
            written.touch();
            buf.clear();
        }
        let _ = wr.shutdown().await;
    });

    let mut codec = HeaderCodec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream id -> the channel to its pod connection (None in the channel = FIN).
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    // Data stream id -> set once the client resets the stream, for its forward.
    let mut reset_by_client: HashMap<u32, Arc<AtomicBool>> = HashMap::new();
    // Stream ids of the connections being forwarded, by data stream: (error, data).
    let mut forwards: JoinSet<(u32, u32)> = JoinSet::new();
    let mut open_streams: HashMap<u32, u32> = HashMap::new();
    let mut going_away = false;
    let mut last_received: u32 = 0;
    let mut inbuf = BytesMut::with_capacity(CHUNK * 2);
    let idle_timeout = *lock(&shared.faults.streaming_idle_timeout);
    let session = async {
        loop {
            // Take every complete frame in the buffer.
            loop {
                let (f, used) = match frame::decode(&inbuf) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad SPDY frame; ending the session");
                        return;
                    }
                };
                activity.touch();
                let _ = inbuf.split_to(used);
                match f {
                    Frame::SynStream {
                        stream_id,
                        header_block,
                        ..
                    } => {
                        let headers = match codec.decode(&header_block) {
                            Ok(h) => h,
                            Err(e) => {
                                tracing::debug!(error = %e, "bad header block");
                                return;
                            }
                        };
                        if going_away {
                            // spdystream drops streams after GOAWAY without an answer.
                            continue;
                        }
                        last_received = last_received.max(stream_id);
                        let _ = out_tx.send(Out::Reply(stream_id)).await;
                        let get =
                            |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        let kind = get("streamtype").unwrap_or_default();
                        let id = get("requestid").unwrap_or_default();
                        let pair = pairs.entry(id.clone()).or_default();
                        pair.port = get("port").and_then(|p| p.parse().ok()).or(pair.port);
                        match kind.as_str() {
                            "error" => pair.error = Some(stream_id),
                            "data" => pair.data = Some(stream_id),
                            _ => {}
                        }
                        if let (Some(e), Some(d), Some(port)) = (pair.error, pair.data, pair.port) {
                            pairs.remove(&id);
                            let (tx, rx) = mpsc::channel(32);
                            to_pod.insert(d, tx);
                            open_streams.insert(d, e);
                            let reset = Arc::new(AtomicBool::new(false));
                            reset_by_client.insert(d, reset.clone());
                            forwards.spawn(forward(
                                shared.clone(),
                                out_tx.clone(),
                                FromClient { data: rx, reset },
                                SocketAddr::from((ip, port)),
                                (e, d),
                                uid.clone(),
                                format!("error forwarding port {port} to pod {pod}, uid {uid}"),
                            ));
                        }
                    }
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } => {
                        if let Some(tx) = to_pod.get(&stream_id) {
                            if *shared.faults.paused.borrow() {
                                shared.faults.wait_unpaused().await;
                            }
                            if !data.is_empty() {
                                let _ = tx.send(Some(data)).await;
                            }
                            if fin {
                                let _ = tx.send(None).await;
                                to_pod.remove(&stream_id);
                            }
                        }
                    }
                    // A reset data stream reads as ended, as spdystream's reads do after
                    // `handleResetFrame`; the pod's data goes on being sent for the
                    // runtime's grace, as spdystream refuses only writes with FIN on a reset
                    // stream (`Stream.WriteData`): the forward sends no FIN on it.
                    Frame::RstStream { stream_id, .. } => {
                        to_pod.remove(&stream_id);
                        if let Some(reset) = reset_by_client.get(&stream_id) {
                            reset.store(true, Ordering::Relaxed);
                        }
                    }
                    Frame::Ping { id } => {
                        let _ = out_tx.send(Out::Frame(Frame::Ping { id })).await;
                    }
                    Frame::GoAway { .. } => going_away = true,
                    _ => {}
                }
            }
            if going_away && forwards.is_empty() {
                return;
            }
            inbuf.reserve(CHUNK);
            let idle_check = async {
                match idle_timeout {
                    Some(t) => {
                        let left = t.saturating_sub(activity.idle());
                        tokio::time::sleep(left.max(Duration::from_millis(10))).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rd.read_buf(&mut inbuf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                Some(done) = forwards.join_next(), if !forwards.is_empty() => {
                    if let Ok((_, d)) = done {
                        open_streams.remove(&d);
                        reset_by_client.remove(&d);
                    }
                }
                () = idle_check => {
                    if idle_timeout.is_some_and(|t| activity.idle() >= t) {
                        // spdystream's idle timeout: reset every stream, GOAWAY, close.
                        for (d, e) in open_streams.drain() {
                            for stream_id in [e, d] {
                                let _ = out_tx
                                    .send(Out::Frame(Frame::RstStream { stream_id, status: RST_CANCEL }))
                                    .await;
                            }
                        }
                        let _ = out_tx
                            .send(Out::Frame(Frame::GoAway {
                                last_good_stream_id: last_received,
                                status: 0,
                            }))
                            .await;
                        return;
                    }
                }
            }
        }
    };
    let idle_fired = tokio::select! {
        _ = session => true,
        _ = dropped.cancelled() => false,
        _ = shutdown.cancelled() => false,
    };
    drop(to_pod);
    forwards.abort_all();
    drop(out_tx);
    if idle_fired {
        // Let the writer send what is queued (the GOAWAY, a last reply), then close.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    } else {
        writer.abort();
    }
}

/// Whether a pod with this uid still exists (its sandbox runs until the pod object goes).
fn sandbox_exists(shared: &Shared, uid: &str) -> bool {
    let (pods, _) = shared.store.list(crate::Kind::Pod, None);
    pods.iter().any(|p| p["metadata"]["uid"] == uid)
}

/// What a forward gets from the client's side of its data stream.
struct FromClient {
    /// Its DATA payloads (`None` = its FIN).
    data: mpsc::Receiver<Option<Bytes>>,
    /// Set once the client resets it.
    reset: Arc<AtomicBool>,
}

/// Carries one pair of streams to the pod's port as the container runtime does
/// (containerd's `copyPortForward`, CRI-O's `PortForwardContainer`): a copy each way; when
/// either ends (the client's FIN or reset, or the pod's EOF) the other gets
/// [`RUNTIME_CLOSE_GRACE`] more, then the pod's connection is closed outright (not
/// half-closed: the runtime never calls `CloseWrite`), and the data stream gets its FIN,
/// then the error stream. A data stream the client reset (`reset`) gets no FIN:
/// spdystream refuses a write with FIN on it (`Stream.WriteData`), though it sends the
/// pod's data until then.
async fn forward(
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    from_client: FromClient,
    addr: SocketAddr,
    (error_stream, data_stream): (u32, u32),
    uid: String,
    context: String,
) -> (u32, u32) {
    let send = |f: Frame| out.send(Out::Frame(f));
    let fin = |stream_id| Frame::Data {
        stream_id,
        fin: true,
        data: Bytes::new(),
    };
    let FromClient { mut data, reset } = from_client;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        other => {
            // A session serves the pod it was opened for, by its sandbox: once that pod
            // is gone (deleted, its grace over), even if another pod took its name, the
            // runtime finds no sandbox and never dials (containerd,
            // `pkg/cri/server/sandbox_portforward_linux.go`: "failed to find sandbox %q in
            // store: %w", checked before the dial). Here a gone pod's address has nothing
            // listening (pod addresses wrap only after some 65,000 pods), so asking after a failed
            // dial gives the same answer without a look through the pods per connection.
            let msg = if !sandbox_exists(&shared, &uid) {
                format!("{context}: failed to find sandbox \"{uid}\" in store: not found")
            } else {
                let why = match other {
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        "connection refused".to_string()
                    }
                    Ok(Err(e)) => e.to_string(),
                    _ => "i/o timeout".to_string(),
                };
                format!(
                    "{context}: failed to connect to localhost:{} inside namespace of the pod: dial tcp4 127.0.0.1:{}: connect: {why}",
                    addr.port(),
                    addr.port()
                )
            };
            let _ = send(Frame::Data {
                stream_id: error_stream,
                fin: false,
                data: Bytes::from(msg),
            })
            .await;
            let _ = send(fin(error_stream)).await;
            let _ = send(fin(data_stream)).await;
            return (error_stream, data_stream);
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    {
        // Client -> pod, until the client's FIN (or reset): nothing is passed on then.
        let upstream = async {
            while let Some(Some(b)) = data.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
        };
        // Pod -> client. One buffer whose space is reused once the frames sent from it
        // are written: no copy and no allocation per chunk.
        let downstream = async {
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(CHUNK);
                let n = match rd.read_buf(&mut (&mut buf).limit(CHUNK)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if *shared.faults.paused.borrow() {
                    shared.faults.wait_unpaused().await;
                }
                let data = buf.split_to(n).freeze();
                if send(Frame::Data {
                    stream_id: data_stream,
                    fin: false,
                    data,
                })
                .await
                .is_err()
                {
                    return;
                }
            }
        };
        tokio::pin!(upstream, downstream);
        tokio::select! {
            () = &mut upstream => {
                let _ = tokio::time::timeout(RUNTIME_CLOSE_GRACE, downstream).await;
            }
            () = &mut downstream => {
                let _ = tokio::time::timeout(RUNTIME_CLOSE_GRACE, upstream).await;
            }
        }
    }
    // Closed as Go's `conn.Close()` closes it: one close, no shutdown first.
    match rd.reunite(wr) {
        Ok(tcp) => drop(tcp),
        Err(e) => drop(e),
    }
    if !reset.load(Ordering::Relaxed) {
        let _ = send(fin(data_stream)).await;
    }
    let _ = send(fin(error_stream)).await;
    (error_stream, data_stream)
}
