//! Routes: how the connections of one port mapping reach the target, worked out when the
//! forward starts (and again when it reconnects). A route names the [`Destination`] of
//! each new connection or UDP peer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;

use super::dialer::Destination;
use crate::client::KubeContext;
use crate::error::{Error, Result};
use crate::relay::protocol::Transport;
use crate::resolve::{Endpoint, Endpoints};
use crate::spec::{ForwardSpec, PortMapping, Protocol, RemotePort, Target};

/// How one port mapping's connections reach the target.
#[derive(Debug)]
pub(crate) enum Route {
    /// TCP to the ready pods of a pod, selector, deployment or service target: each
    /// connection gets a pod stream to one of them, round robin.
    Pods(Arc<Endpoints>),
    /// Through the relay to a fixed host and port: a remote-address target, or a service's
    /// DNS name for UDP.
    Host {
        host: String,
        port: u16,
        transport: Transport,
    },
    /// UDP through the relay to the address of a ready pod, looked up per session.
    PodAddress(Arc<Endpoints>),
}

impl Route {
    /// Works out the route of `pm`, checking that the target exists (a UDP forward to a
    /// missing service fails here, as a TCP one does).
    ///
    /// # Errors
    ///
    /// The target or its named port does not exist, or the API server refuses.
    pub(crate) async fn resolve(
        ctx: &KubeContext,
        namespace: &str,
        spec: &ForwardSpec,
        pm: &PortMapping,
    ) -> Result<Route> {
        let udp = spec.protocol == Protocol::Udp;
        let transport = if udp { Transport::Udp } else { Transport::Tcp };
        match &spec.target {
            Target::Remote { host } => match &pm.remote {
                RemotePort::Number(port) => Ok(Route::Host {
                    host: host.clone(),
                    port: *port,
                    transport,
                }),
                RemotePort::Name(n) => Err(Error::PortNotFound {
                    target: spec.target.to_string(),
                    port: n.clone(),
                    available: Vec::new(),
                }),
            },
            Target::Service { name } if udp => {
                // The relay sends to the service's ClusterIP (kube-proxy spreads it), so
                // the port is the service port. A headless service has no ClusterIP: its
                // name resolves to the pods themselves, which listen on the target port,
                // so it goes to a ready pod's address as the other targets do.
                match service_port(ctx, namespace, name, &pm.remote).await? {
                    Some(port) => Ok(Route::Host {
                        host: format!("{name}.{namespace}.svc.cluster.local"),
                        port,
                        transport,
                    }),
                    None => {
                        let target = &spec.target;
                        let eps = Endpoints::resolve(ctx, namespace, target, &pm.remote).await?;
                        Ok(Route::PodAddress(Arc::new(eps)))
                    }
                }
            }
            target => {
                let eps = Arc::new(Endpoints::resolve(ctx, namespace, target, &pm.remote).await?);
                Ok(if udp {
                    Route::PodAddress(eps)
                } else {
                    Route::Pods(eps)
                })
            }
        }
    }

    /// The watched endpoints behind the route, when it goes to pods.
    pub(crate) fn endpoints(&self) -> Option<&Arc<Endpoints>> {
        match self {
            Route::Pods(e) | Route::PodAddress(e) => Some(e),
            Route::Host { .. } => None,
        }
    }

    /// The port on the target, when it is known.
    pub(crate) fn target_port(&self) -> Option<u16> {
        match self {
            Route::Host { port, .. } => Some(*port),
            Route::Pods(e) | Route::PodAddress(e) => e.current().first().map(|ep| ep.port),
        }
    }

    /// Waits up to `wait` for a ready pod behind the route (at once for a fixed host).
    ///
    /// # Errors
    ///
    /// [`Error::NoReadyPod`] naming `label` and `namespace`.
    pub(crate) async fn wait_ready(
        &self,
        label: &str,
        namespace: &str,
        wait: Duration,
    ) -> Result<()> {
        let Some(eps) = self.endpoints() else {
            return Ok(());
        };
        let mut rx = eps.subscribe();
        match tokio::time::timeout(wait, rx.wait_for(|v| !v.is_empty())).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::NoReadyPod {
                target: label.to_string(),
                namespace: namespace.to_string(),
                waited: wait,
            }),
        }
    }

    /// The destination of the next connection or UDP session, and the pod it goes to when
    /// it goes to one, waiting up to `wait` for a ready pod.
    ///
    /// # Errors
    ///
    /// [`Error::NoReadyPod`], or the API errors of looking up a pod's address.
    pub(crate) async fn pick(
        &self,
        ctx: &KubeContext,
        namespace: &str,
        label: &str,
        wait: Duration,
    ) -> Result<(Destination, Option<Endpoint>)> {
        let no_pod = || Error::NoReadyPod {
            target: label.to_string(),
            namespace: namespace.to_string(),
            waited: wait,
        };
        match self {
            Route::Pods(eps) => {
                let ep = eps.pick(wait).await.ok_or_else(no_pod)?;
                let dest = Destination::Pod {
                    namespace: namespace.to_string(),
                    pod: ep.pod.clone(),
                    port: ep.port,
                };
                Ok((dest, Some(ep)))
            }
            Route::Host {
                host,
                port,
                transport,
            } => Ok((
                Destination::Relay {
                    namespace: namespace.to_string(),
                    host: host.clone(),
                    port: *port,
                    transport: *transport,
                },
                None,
            )),
            Route::PodAddress(eps) => {
                let ep = eps.pick(wait).await.ok_or_else(no_pod)?;
                let api: Api<Pod> = Api::namespaced(ctx.client().clone(), namespace);
                let pod = api.get(&ep.pod).await.map_err(|e| {
                    Error::from_kube(e, ctx.server(), "get", "pods", namespace, Some(&ep.pod))
                })?;
                let ip = pod.status.and_then(|s| s.pod_ip).ok_or_else(no_pod)?;
                let dest = Destination::Relay {
                    namespace: namespace.to_string(),
                    host: ip,
                    port: ep.port,
                    transport: Transport::Udp,
                };
                Ok((dest, Some(ep)))
            }
        }
    }
}

/// The number of `remote` among service `name`'s ports, which proves the service exists;
/// `None` for a headless service (`clusterIP: None`), which has no address of its own to send
/// to.
async fn service_port(
    ctx: &KubeContext,
    namespace: &str,
    name: &str,
    remote: &RemotePort,
) -> Result<Option<u16>> {
    let api: Api<Service> = Api::namespaced(ctx.client().clone(), namespace);
    let svc = api
        .get(name)
        .await
        .map_err(|e| Error::from_kube(e, ctx.server(), "get", "services", namespace, Some(name)))?;
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        return Ok(None);
    }
    let port_name = match remote {
        RemotePort::Number(n) => return Ok(Some(*n)),
        RemotePort::Name(n) => n,
    };
    let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .and_then(|p| u16::try_from(p.port).ok())
        .map(Some)
        .ok_or_else(|| Error::PortNotFound {
            target: format!("svc/{name}"),
            port: port_name.clone(),
            available: ports.iter().filter_map(|p| p.name.clone()).collect(),
        })
}
