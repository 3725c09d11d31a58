//! The kube baseline: a minimal forwarder on kube's `Portforwarder` and
//! `copy_bidirectional`, as tools built on kube (kftray among them) forward.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::TcpListener;

pub struct Baseline {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(client: kube::Client, pod: &str, port: u16) -> anyhow::Result<Baseline> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api: Api<Pod> = Api::namespaced(client, "demo");
    let pod = pod.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let api = api.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let Ok(mut pf) = api.portforward(&pod, &[port]).await else {
                    return;
                };
                let Some(mut upstream) = pf.take_stream(port) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut upstream).await;
                drop(upstream);
                let _ = pf.join().await;
            });
        }
    });
    Ok(Baseline { addr, task })
}
