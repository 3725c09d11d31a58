//! `kforward demo`: the testkit's demo cluster in this process, with `svc/web` and
//! `svc/echo` forwarded to free local ports.

use std::net::IpAddr;

use anyhow::Context;
use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::{ForwardOptions, Forwarder, KubeContext, KubeconfigSource, TcpForwarder};
use kforward_testkit::Cluster;

use crate::args::{DemoArgs, Output};
use crate::forward::print_events;
use crate::signal;

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let mut b = Cluster::builder().name("kforward-demo").demo();
    if let Some(p) = &a.kubeconfig_out {
        b = b.kubeconfig_path(p);
    }
    let cluster = b.start().await.context("starting the demo cluster")?;
    let ctx = KubeContext::load(&KubeconfigSource::default().with_path(cluster.kubeconfig_path()))
        .await?;
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let mut forwards = Vec::new();
    let mut bound = Vec::new();
    for (svc, port) in [("web", 80u16), ("echo", 7000)] {
        let spec = ForwardSpec::new(
            Target::Service { name: svc.into() },
            [PortMapping::new(0, port)],
        )
        .with_namespace("demo")
        .with_addresses([localhost]);
        let mut f = TcpForwarder::new(ctx.clone(), spec, ForwardOptions::default());
        if a.output == Output::Json {
            tokio::spawn(print_events(f.subscribe(), Output::Json));
        }
        let b = f
            .start()
            .await
            .with_context(|| format!("forwarding svc/{svc}"))?;
        bound.push(b[0].local_addr);
        forwards.push(f);
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
        println!();
        println!("Press Ctrl-C to stop.");
    }
    signal::shutdown().await;
    for mut f in forwards {
        f.stop().await;
    }
    drop(cluster);
    Ok(())
}
