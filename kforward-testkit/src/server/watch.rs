//! Watch responses: a chunked stream of JSON events, one per line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Kind;
use crate::response::Body;
use crate::selector::{FieldSelector, Selector};
use crate::state::Shared;
use crate::store::StoreEvent;

/// The longest a watch runs when the client gives no `timeoutSeconds` (the real server
/// picks a random time between its min-request-timeout and twice that).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) struct WatchRequest {
    pub(crate) kind: Kind,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: Selector,
    pub(crate) fields: FieldSelector,
    pub(crate) since: Option<u64>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) send_initial_events: bool,
    pub(crate) bookmarks: bool,
}

fn line(ty: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Answers a watch request.
pub(crate) fn serve(shared: Arc<Shared>, w: WatchRequest) -> Response<Body> {
    shared
        .stats
        .watches_total
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // `resourceVersion=0` and no version both mean "from the current state", which a watch
    // starts with a synthetic ADDED event per object.
    let since = w.since.filter(|rv| *rv != 0);
    let start = shared.store.watch(
        w.kind,
        w.namespace.as_deref(),
        since.filter(|_| !w.send_initial_events),
    );
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let (initial, live) = match start {
        Ok(v) => v,
        Err(e) => {
            // The watch cache answers an expired version with a 200 and one ERROR event.
            let ev = line("ERROR", &e.to_status());
            let _ = tx.try_send(Ok(Frame::data(ev)));
            drop(tx);
            return respond(rx);
        }
    };
    let current = shared.store.resource_version();
    tokio::spawn(run(shared, w, initial, live, tx, current));
    respond(rx)
}

fn respond(rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> Response<Body> {
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(StreamBody::new(stream).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn run(
    shared: Arc<Shared>,
    w: WatchRequest,
    initial: Vec<Arc<StoreEvent>>,
    mut live: broadcast::Receiver<Arc<StoreEvent>>,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    current: u64,
) {
    let deadline = tokio::time::sleep(w.timeout.unwrap_or(DEFAULT_TIMEOUT));
    tokio::pin!(deadline);
    let mut last = w.since.unwrap_or(0);
    let wanted = |e: &StoreEvent| {
        e.kind == w.kind
            && w.namespace.as_deref().is_none_or(|ns| e.namespace() == ns)
            && w.labels.matches(&e.object["metadata"]["labels"])
            && w.fields.matches(&e.object)
    };
    for ev in initial.iter().filter(|e| wanted(e)) {
        last = last.max(ev.rv);
        if tx
            .send(Ok(Frame::data(line(ev.ty.as_str(), &ev.object))))
            .await
            .is_err()
        {
            return;
        }
    }
    if w.send_initial_events {
        // The streaming-list protocol: a bookmark marks the end of the initial state.
        let bookmark = json!({
            "kind": w.kind.name(),
            "apiVersion": w.kind.api_version(),
            "metadata": {
                "resourceVersion": current.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        last = last.max(current);
        if tx
            .send(Ok(Frame::data(line("BOOKMARK", &bookmark))))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut bookmark_tick = tokio::time::interval(Duration::from_secs(60));
    bookmark_tick.tick().await;
    loop {
        let ev = tokio::select! {
            _ = &mut deadline => return,
            _ = shared.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = bookmark_tick.tick(), if w.bookmarks => {
                let b = json!({
                    "kind": w.kind.name(),
                    "apiVersion": w.kind.api_version(),
                    "metadata": {"resourceVersion": shared.store.resource_version().to_string()},
                });
                if tx.send(Ok(Frame::data(line("BOOKMARK", &b)))).await.is_err() {
                    return;
                }
                continue;
            }
            ev = live.recv() => match ev {
                Ok(ev) => ev,
                // Fell behind the live channel: end the watch; the client lists again.
                Err(_) => return,
            },
        };
        if ev.rv <= last || !wanted(&ev) {
            continue;
        }
        last = ev.rv;
        // A paused API server sends nothing, even on watches already open.
        shared.faults.wait_unpaused().await;
        if tx
            .send(Ok(Frame::data(line(ev.ty.as_str(), &ev.object))))
            .await
            .is_err()
        {
            return;
        }
    }
}
