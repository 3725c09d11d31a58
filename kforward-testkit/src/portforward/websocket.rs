//! The WebSocket channel protocol (`v4.channel.k8s.io`, and its base64 twin) as the kubelet
//! serves it: every port's number first on both of its channels, then data; text on the
//! error channel when the pod's port refuses; the socket closed when every port is done.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::state::{LiveStream, Shared};

/// Bytes read from a pod's socket per frame: big enough that framing costs little at
/// GiB rates, small enough to keep latency and memory per stream low.
const CHUNK: usize = 64 * 1024;
/// Frames queued toward the client before pod reads wait (backpressure).
const OUT_QUEUE: usize = 32;
/// Chunks queued toward one pod port before WebSocket reads wait.
const IN_QUEUE: usize = 32;
/// How long the kubelet gives a connection to the pod's port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    /// Cancelled when port-forwards are dropped (taken when the upgrade was answered).
    pub(crate) dropped: tokio_util::sync::CancellationToken,
    pub(crate) pod: String,
    pub(crate) uid: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) ports: Vec<u16>,
    pub(crate) base64: bool,
}

/// Encodes one channel frame.
fn frame(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::Text(s.into())
    } else {
        let mut b = BytesMut::with_capacity(1 + data.len());
        b.put_u8(channel);
        b.put_slice(data);
        Message::Binary(b.freeze())
    }
}

/// Decodes one client frame into (channel, data).
fn unframe(base64: bool, msg: Message) -> Option<(u8, Bytes)> {
    match msg {
        Message::Binary(b) if !base64 && !b.is_empty() => Some((b[0], b.slice(1..))),
        Message::Text(t) if base64 && !t.is_empty() => {
            let bytes = t.as_bytes();
            let ch = bytes[0].checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&bytes[1..])
                .ok()?;
            Some((ch, Bytes::from(data)))
        }
        _ => None,
    }
}

impl Session {
    fn error_message(&self, port: u16, err: &std::io::Error) -> String {
        // Go's wording, as the kubelet would print it.
        let err = match err.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
            _ => err.to_string(),
        };
        // Current kubelets send this JSON on the error channel (see the module docs).
        serde_json::json!({
            "closeConnection": true,
            "message": format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside namespace of pod {}: dial tcp4 127.0.0.1:{port}: connect: {err}",
                self.pod, self.uid, self.pod
            ),
        })
        .to_string()
    }

    pub(crate) async fn run(self, upgraded: Upgraded) {
        let _live = LiveStream::new(self.shared.clone());
        let dropped = self.dropped.clone();
        let shutdown = self.shared.shutdown.clone();
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .write_buffer_size(0);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
        let b64 = self.base64;

        let mut pumps = JoinSet::new();
        let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
        for (i, port) in self.ports.iter().copied().enumerate() {
            let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
            let prefix = port.to_le_bytes();
            let _ = out_tx.send(frame(b64, data_ch, &prefix)).await;
            let _ = out_tx.send(frame(b64, err_ch, &prefix)).await;
        }
        for (i, port) in self.ports.iter().copied().enumerate() {
            let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
            let addr = SocketAddr::from((self.ip, port));
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
            let tcp = match conn {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    let _ = out_tx
                        .send(frame(b64, err_ch, self.error_message(port, &e).as_bytes()))
                        .await;
                    to_pod.push(None);
                    continue;
                }
                Err(_) => {
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout");
                    let _ = out_tx
                        .send(frame(b64, err_ch, self.error_message(port, &e).as_bytes()))
                        .await;
                    to_pod.push(None);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (mut rd, mut wr) = tcp.into_split();
            let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(IN_QUEUE);
            to_pod.push(Some(in_tx));
            let out = out_tx.clone();
            let shared = self.shared.clone();
            // Pod -> client.
            pumps.spawn(async move {
                // Binary frames are read straight behind their channel byte, and the
                // buffer's space is reused once the frames sent from it are written: no
                // copy and no allocation per frame, so the testkit's side of a bulk
                // transfer stays cheaper than any client's.
                let mut buf = BytesMut::new();
                loop {
                    buf.reserve(CHUNK + 1);
                    buf.put_u8(data_ch);
                    let n = match rd.read_buf(&mut (&mut buf).limit(CHUNK)).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if *shared.faults.paused.borrow() {
                        shared.faults.wait_unpaused().await;
                    }
                    let chunk = buf.split_to(n + 1);
                    let msg = if b64 {
                        frame(true, data_ch, &chunk[1..])
                    } else {
                        Message::Binary(chunk.freeze())
                    };
                    if out.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            // Client -> pod: ends when the session ends; the pod sees its connection close.
            tokio::spawn(async move {
                while let Some(chunk) = in_rx.recv().await {
                    if wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            });
        }
        drop(out_tx);

        // The writer runs as its own task: the read loop below may wait on a full queue
        // toward a pod (backpressure), and the pod may in turn wait for its replies to be
        // written out. Polling the writer only from the read loop would deadlock there (an
        // echo server under full-duplex bulk does exactly this).
        let mut writer = JoinSet::new();
        writer.spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.feed(m).await.is_err() {
                    return;
                }
                while let Ok(m) = out_rx.try_recv() {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            // Every port is done: close as the kubelet does.
            let _ = sink.close().await;
        });
        let paused = self.shared.faults.paused.clone();
        loop {
            tokio::select! {
                _ = dropped.cancelled() => return,
                _ = shutdown.cancelled() => return,
                _ = writer.join_next() => {
                    pumps.abort_all();
                    return;
                }
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else {
                        // The client went away: every pod connection ends with it.
                        pumps.abort_all();
                        return;
                    };
                    if matches!(msg, Message::Close(_)) {
                        pumps.abort_all();
                        return;
                    }
                    let Some((ch, data)) = unframe(b64, msg) else { continue };
                    if ch % 2 == 1 || data.is_empty() {
                        continue;
                    }
                    if *paused.borrow() {
                        self.shared.faults.wait_unpaused().await;
                    }
                    if let Some(Some(tx)) = to_pod.get(usize::from(ch / 2))
                        && tx.send(data).await.is_err()
                    {
                        to_pod[usize::from(ch / 2)] = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for b64 in [false, true] {
            let m = frame(b64, 3, b"hello");
            let (ch, data) = unframe(b64, m).expect("decodes");
            assert_eq!((ch, &data[..]), (3, &b"hello"[..]));
        }
        assert!(unframe(false, Message::Binary(Bytes::new())).is_none());
    }
}
