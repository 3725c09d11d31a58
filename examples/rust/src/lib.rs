//! How another Rust tool embeds kforward, in two functions:
//!
//! - [`forward_until_ready`]: a supervised forward (it reconnects by itself through pod
//!   restarts and API server outages) whose events the tool reacts to, here by waiting
//!   for the first `ready` and returning the local address;
//! - [`http_get_over_tunnel`]: a port-forward [`Tunnel`] to one pod, no local port at all,
//!   with HTTP spoken over it directly.
//!
//! `cargo run -p kforward-example -- svc/web 80` runs both against the current kubeconfig
//! context; `cargo test -p kforward-example` runs them against the testkit's simulated
//! cluster.

use std::net::SocketAddr;
use std::time::Duration;

use kforward_core::spec::{ForwardSpec, PortMapping, Target};
use kforward_core::supervisor::{Supervisor, SupervisorOptions};
use kforward_core::{Event, ForwardState, KubeContext, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;

/// What went wrong, as text: an example keeps its error type simple.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Starts `target` (`svc/web`, `deploy/api`, `pod/x`) on a free local port for
/// `remote_port` under a new [`Supervisor`], prints each event as it comes, and returns
/// the supervisor (which keeps the forward up until dropped or shut down), the local
/// address and the pods seen so far once the forward is ready.
///
/// # Errors
///
/// When the forward fails for good (a target that does not exist, a permission missing),
/// or is not ready within `timeout`.
pub async fn forward_until_ready(
    kubeconfig: Option<&std::path::Path>,
    namespace: Option<&str>,
    target: &str,
    remote_port: u16,
    timeout: Duration,
) -> Result<Started, Error> {
    let mut spec = ForwardSpec::new(
        Target::parse_kubectl(target)?,
        [PortMapping::new(0, remote_port)],
    )
    .with_addresses([[127, 0, 0, 1].into()]);
    if let Some(k) = kubeconfig {
        spec = spec.with_kubeconfig(k);
    }
    if let Some(ns) = namespace {
        spec = spec.with_namespace(ns);
    }
    let sup = Supervisor::new(SupervisorOptions::default());
    // Subscribe before adding, so that no event is missed.
    let mut events = sup.subscribe();
    let id = sup.add(spec);
    let wait = async {
        // `ready` (the state) and the listening address come as two events, in either order.
        let mut local = None;
        let mut ready = false;
        let mut pods = Vec::new();
        loop {
            let e = match events.recv().await {
                Ok(e) if e.id == id => e.event,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    return Err::<_, Error>("the supervisor stopped".into());
                }
            };
            println!("event: {}", describe(&e));
            match e {
                Event::Ready { local_addr, .. } => local = Some(local_addr),
                Event::Endpoints { pods: now, .. } => pods = now,
                Event::State {
                    state: ForwardState::Ready,
                    ..
                } => ready = true,
                Event::State {
                    state: ForwardState::Failed { error },
                    ..
                } => {
                    return Err(format!("the forward failed: {error}").into());
                }
                _ => {}
            }
            if let (true, Some(a)) = (ready, local) {
                return Ok((a, pods));
            }
        }
    };
    let (local_addr, pods) = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("{target} was not ready within {timeout:?}"))??;
    Ok(Started {
        supervisor: sup,
        local_addr,
        pods,
    })
}

/// A forward [`forward_until_ready`] started.
pub struct Started {
    /// Keeps the forward up; `shutdown` stops it.
    pub supervisor: Supervisor,
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// The ready pods behind it as `pod:port`, when reported before it was ready.
    pub pods: Vec<String>,
}

/// One line for an event; a real tool would update its UI here.
pub fn describe(e: &Event) -> String {
    match e {
        Event::Ready {
            local_addr, target, ..
        } => format!("listening on {local_addr} for {target}"),
        Event::State { state, .. } => format!("state {state:?}"),
        Event::Endpoints { pods, .. } => format!("pods {}", pods.join(", ")),
        other => format!("{other:?}"),
    }
}

/// Opens a port-forward tunnel to `pod`'s `port` in `namespace` and sends one HTTP/1.1
/// GET over it; returns the whole reply. No local port is opened: the tunnel is the
/// connection.
///
/// # Errors
///
/// The tunnel's errors (no such pod, port refused, permission), or an I/O error.
pub async fn http_get_over_tunnel(
    ctx: &KubeContext,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<String, Error> {
    let mut tunnel = Tunnel::open(ctx, namespace, pod, port).await?;
    tunnel
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {pod}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut reply = Vec::new();
    tunnel.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
