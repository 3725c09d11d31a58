//! `kforward demo`: the testkit's demo cluster in this process, with `svc/web` and
//! `svc/echo` forwarded to free local ports by the supervisor.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use kforward_core::ForwardState;
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::supervisor::{Supervisor, SupervisorOptions};
use kforward_testkit::Cluster;

use crate::args::{DemoArgs, Output};
use crate::{output, signal};

/// How long the demo's forwards may take to start.
const START: Duration = Duration::from_secs(60);

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let mut b = Cluster::builder().name("kforward-demo").demo();
    if let Some(p) = &a.kubeconfig_out {
        b = b.kubeconfig_path(p);
    }
    let cluster = b.start().await.context("starting the demo cluster")?;
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let sup = Supervisor::new(SupervisorOptions {
        retry_start: false,
        ..Default::default()
    });
    // Before anything prints `ready` (a SIGTERM right after it must not be lost); the demo
    // cluster is in this process, so its forwards start within moments and a Ctrl-C meanwhile
    // stops the demo once they have.
    let mut stop = signal::Shutdown::listen();
    if a.output == Output::Json {
        let mut rx = sup.subscribe();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                output::print(Output::Json, &e.event);
            }
        });
    }
    let mut bound: Vec<SocketAddr> = Vec::new();
    let targets = [
        (Target::Service { name: "web".into() }, 80u16),
        (
            Target::Service {
                name: "echo".into(),
            },
            7000,
        ),
        (Target::StatefulSet { name: "db".into() }, 5432),
    ];
    for (target, port) in targets {
        let spec = ForwardSpec::new(target.clone(), [PortMapping::new(0, port)])
            .with_namespace("demo")
            .with_addresses([localhost])
            .with_kubeconfig(cluster.kubeconfig_path());
        let id = sup.add(spec);
        let mut status = sup
            .watch_status(id)
            .context("the forward is not in the supervisor")?;
        let settled =
            status.wait_for(|s| !matches!(s.state, ForwardState::Idle | ForwardState::Starting));
        let st = tokio::time::timeout(START, settled)
            .await
            .with_context(|| format!("{target} did not start in {}s", START.as_secs()))?
            .context("the forward ended")?
            .clone();
        match (&st.state, st.local_addrs.first()) {
            (ForwardState::Ready, Some(addr)) => bound.push(*addr),
            _ => anyhow::bail!(
                "forwarding {target}: {}",
                st.last_error.unwrap_or_else(|| "it did not start".into())
            ),
        }
    }
    if a.output == Output::Text {
        println!(
            "kforward demo: a simulated Kubernetes cluster runs inside this process (namespace demo)."
        );
        println!("  kubeconfig: {}", cluster.kubeconfig_path().display());
        println!();
        println!(
            "Forwarding from {} -> svc/web:80 (2 pods; each answers with its name)",
            bound[0]
        );
        println!("  try: curl http://{}/", bound[0]);
        println!(
            "Forwarding from {} -> svc/echo:7000 (a TCP echo server)",
            bound[1]
        );
        println!(
            "  try: echo hello | nc -q1 {} {}",
            bound[1].ip(),
            bound[1].port()
        );
        println!(
            "Forwarding from {} -> sts/db:5432 (db-0 of a StatefulSet behind a headless service; a TCP echo)",
            bound[2]
        );
        println!(
            "  try: echo hello | nc -q1 {} {}",
            bound[2].ip(),
            bound[2].port()
        );
        println!();
        println!("Press Ctrl-C to stop.");
    }
    stop.wait().await;
    sup.shutdown().await;
    drop(cluster);
    Ok(())
}
