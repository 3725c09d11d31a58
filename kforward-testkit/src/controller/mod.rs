//! The control plane behind the API: the deployment, ReplicaSet and StatefulSet controllers,
//! the garbage collector, a kubelet that runs pods as loopback servers, the EndpointSlice
//! controller, kube-proxy and cluster DNS.
//!
//! One task reconciles everything after every batch of store events, in a fixed order, so
//! there is never a race between controllers.

mod deployment;
mod endpoints;
mod gc;
mod images;
mod kubelet;
mod owner;
mod replicaset;
mod scheduler;
mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use crate::state::Shared;

pub(crate) use images::image_is_latest;
pub(crate) use kubelet::{pod_is_ready, set_ready};

/// Starts the control loop; it ends when the cluster shuts down.
pub(crate) fn spawn(shared: Arc<Shared>) {
    let mut events = shared.store.subscribe();
    tokio::spawn(async move {
        let mut kubelet = kubelet::Kubelet::default();
        let mut net = endpoints::Network::default();
        // A slow tick catches anything an event could not (a timer that fired late).
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {}
            }
            // Take the whole batch before reconciling once.
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                events.try_recv()
            {}
            let seen = shared.store.resource_version();
            if let Err(e) = reconcile(&shared, &mut kubelet, &mut net).await {
                warn!(error = %e, "reconcile failed");
            }
            shared.reconciled.send_if_modified(|v| {
                let newer = seen > *v;
                *v = (*v).max(seen);
                newer
            });
        }
        kubelet.stop_all().await;
        drop(net);
    });
}

async fn reconcile(
    shared: &Arc<Shared>,
    kubelet: &mut kubelet::Kubelet,
    net: &mut endpoints::Network,
) -> Result<(), crate::ApiError> {
    deployment::reconcile(shared)?;
    replicaset::reconcile(shared)?;
    statefulset::reconcile(shared)?;
    gc::reconcile(shared)?;
    kubelet.reconcile(shared).await;
    endpoints::reconcile_slices(shared)?;
    net.reconcile(shared).await;
    Ok(())
}
