//! Serving one SPDY/3.1 port-forward session, with the kubelet's duties
//! (`staging/src/k8s.io/kubelet/pkg/cri/streaming/portforward/httpstream.go`,
//! `apimachinery/pkg/util/httpstream/spdy/connection.go`): SYN_REPLY to every SYN_STREAM,
//! streams paired by `requestid` (an error stream and a data stream per connection), a
//! connection to the pod's port per pair, the client's FIN passed on as a half-close, DATA+FIN
//! on the data stream and FIN on the error stream when the pod is done, PINGs echoed, GOAWAY
//! ends the session.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::frame::{self, Frame};
use super::headers::HeaderCodec;
use crate::state::{LiveStream, Shared};

/// Bytes read from the pod per DATA frame.
const CHUNK: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Serves a session until the client goes away, sends GOAWAY, or the stream is dropped by a
/// fault.
pub(crate) async fn serve<S>(io: S, shared: Arc<Shared>, pod: String, uid: String, ip: Ipv4Addr)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _live = LiveStream::new(shared.clone());
    let dropped = shared.faults.stream_token();
    let shutdown = shared.shutdown.clone();
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
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
                frame::encode(&f, &mut buf);
                if buf.len() >= CHUNK {
                    break;
                }
                next = out_rx.try_recv().ok();
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            buf.clear();
        }
        let _ = wr.shutdown().await;
    });

    let mut codec = HeaderCodec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream id -> the channel to its pod connection (None in the channel = FIN).
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    let mut inbuf = BytesMut::with_capacity(CHUNK * 2);
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
                            tokio::spawn(forward(
                                shared.clone(),
                                out_tx.clone(),
                                rx,
                                SocketAddr::from((ip, port)),
                                e,
                                d,
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
                    Frame::RstStream { stream_id, .. } => {
                        to_pod.remove(&stream_id);
                    }
                    Frame::Ping { id } => {
                        let _ = out_tx.send(Out::Frame(Frame::Ping { id })).await;
                    }
                    Frame::GoAway { .. } => return,
                    _ => {}
                }
            }
            inbuf.reserve(CHUNK);
            match rd.read_buf(&mut inbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = session => {}
        _ = dropped.cancelled() => {}
        _ = shutdown.cancelled() => {}
    }
    drop(to_pod);
    drop(out_tx);
    writer.abort();
}

/// Carries one pair of streams to the pod's port.
async fn forward(
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    mut from_client: mpsc::Receiver<Option<Bytes>>,
    addr: SocketAddr,
    error_stream: u32,
    data_stream: u32,
    context: String,
) {
    let send = |f: Frame| out.send(Out::Frame(f));
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        other => {
            let why = match other {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "connection refused".to_string()
                }
                Ok(Err(e)) => e.to_string(),
                _ => "i/o timeout".to_string(),
            };
            let msg = format!(
                "{context}: failed to connect to localhost:{} inside namespace of the pod: dial tcp4 127.0.0.1:{}: connect: {why}",
                addr.port(),
                addr.port()
            );
            let _ = send(Frame::Data {
                stream_id: error_stream,
                fin: false,
                data: Bytes::from(msg),
            })
            .await;
            let _ = send(Frame::Data {
                stream_id: error_stream,
                fin: true,
                data: Bytes::new(),
            })
            .await;
            let _ = send(Frame::Data {
                stream_id: data_stream,
                fin: true,
                data: Bytes::new(),
            })
            .await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(m) = from_client.recv().await {
            match m {
                Some(b) => {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                // The client's FIN: a half-close toward the pod.
                None => {
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
    });
    // Read into one buffer whose space is reused once the frames sent from it are
    // written, as the WebSocket path does: no copy and no allocation per chunk.
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        let n = match rd.read_buf(&mut (&mut buf).limit(CHUNK)).await {
            Ok(0) | Err(_) => break,
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
            break;
        }
    }
    let _ = send(Frame::Data {
        stream_id: data_stream,
        fin: true,
        data: Bytes::new(),
    })
    .await;
    let _ = send(Frame::Data {
        stream_id: error_stream,
        fin: true,
        data: Bytes::new(),
    })
    .await;
    upstream.abort();
}
