//! Object builders for tests, and the demo scenario `kforward demo` and
//! `kforward-testkit serve --scenario demo` run.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The image of the HTTP server that answers with its pod's name.
pub const HTTP_IMAGE: &str = "kforward/http:1";
/// The image of the TCP echo server.
pub const ECHO_IMAGE: &str = "kforward/echo:1";
/// The image of the UDP echo server (`repeat=N;` asks for N replies).
pub const UDP_ECHO_IMAGE: &str = "kforward/udp-echo:1";
/// The image that forwards every port to `PASSTHROUGH_TARGET`.
pub const PASSTHROUGH_IMAGE: &str = "kforward/passthrough:1";
/// The image that runs nothing (its ports refuse connections).
pub const SLEEP_IMAGE: &str = "kforward/sleep:1";

/// The namespace of the demo scenario.
pub const DEMO_NAMESPACE: &str = "demo";
/// The external host of the demo scenario, reachable from pod addresses only.
pub const DEMO_EXTERNAL_HOST: &str = "private.example.internal";

/// A container port: `(name, port, protocol)`, protocol `"TCP"` or `"UDP"`.
pub type PortSpec<'a> = (&'a str, i32, &'a str);

/// A deployment of `replicas` pods running `image` with these container ports, selected by
/// `app=<name>`.
///
/// # Example
///
/// ```
/// let d = kforward_testkit::deployment("web", kforward_testkit::HTTP_IMAGE, 2, &[("http", 8080, "TCP")]);
/// assert_eq!(d.spec.replicas, Some(2));
/// ```
pub fn deployment(name: &str, image: &str, replicas: i32, ports: &[PortSpec<'_>]) -> Deployment {
    let (labels, template) = pod_template(name, image, ports);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A StatefulSet of `replicas` pods (`NAME-0`, `NAME-1`, ...) running `image` with these
/// container ports, selected by `app=<name>`, whose pods get DNS names under the headless
/// service `service`.
///
/// # Example
///
/// ```
/// let s = kforward_testkit::statefulset("db", kforward_testkit::ECHO_IMAGE, 2, "db", &[("db", 5432, "TCP")]);
/// assert_eq!(s.spec.service_name.as_deref(), Some("db"));
/// ```
pub fn statefulset(
    name: &str,
    image: &str,
    replicas: i32,
    service: &str,
    ports: &[PortSpec<'_>],
) -> StatefulSet {
    let (labels, template) = pod_template(name, image, ports);
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(service.to_string()),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The labels `app=<name>` and a pod template with one container named `name`.
fn pod_template(
    name: &str,
    image: &str,
    ports: &[PortSpec<'_>],
) -> (BTreeMap<String, String>, PodTemplateSpec) {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: name.to_string(),
                image: Some(image.to_string()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ContainerPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            container_port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    (labels, template)
}

/// A ClusterIP service selecting `app=<app>`, with ports `(name, port, targetPort, protocol)`.
///
/// # Example
///
/// ```
/// use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
/// let s = kforward_testkit::service("web", "web", &[("http", 80, IntOrString::String("http".into()), "TCP")]);
/// assert_eq!(s.metadata.name.as_deref(), Some("web"));
/// ```
pub fn service(name: &str, app: &str, ports: &[(&str, i32, IntOrString, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, t, proto)| ServicePort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: *p,
                        target_port: Some(t.clone()),
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A headless service (`clusterIP: None`) selecting `app=<app>`, with TCP ports
/// `(name, port)`: no ClusterIP; the cluster DNS answers its name with every ready pod's
/// address, and `POD.NAME.NS.svc.cluster.local` for pods whose `subdomain` is `name`.
///
/// # Example
///
/// ```
/// let s = kforward_testkit::headless_service("db", "db", &[("db", 5432)]);
/// assert_eq!(s.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
/// ```
pub fn headless_service(name: &str, app: &str, ports: &[(&str, i32)]) -> Service {
    let ports: Vec<(&str, i32, IntOrString, &str)> = ports
        .iter()
        .map(|(n, p)| (*n, *p, IntOrString::Int(*p), "TCP"))
        .collect();
    let mut svc = service(name, app, &ports);
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".to_string());
    }
    svc
}

/// What the demo scenario creates in [`DEMO_NAMESPACE`].
#[derive(Debug, Clone)]
pub struct DemoObjects {
    /// `web` (HTTP, 2 replicas), `echo` (TCP echo) and `dns` (UDP echo).
    pub deployments: Vec<Deployment>,
    /// `db`: 2 pods, `db-0` and `db-1`, TCP echo on 5432 standing in for a database.
    pub statefulsets: Vec<StatefulSet>,
    /// A ClusterIP service for each deployment, and the headless service `db`.
    pub services: Vec<Service>,
}

/// The demo scenario's objects, in namespace [`DEMO_NAMESPACE`].
pub fn demo_objects() -> DemoObjects {
    use IntOrString::{Int, String as Named};
    DemoObjects {
        deployments: vec![
            deployment("web", HTTP_IMAGE, 2, &[("http", 8080, "TCP")]),
            deployment("echo", ECHO_IMAGE, 1, &[("echo", 7000, "TCP")]),
            deployment("dns", UDP_ECHO_IMAGE, 1, &[("dns", 5353, "UDP")]),
        ],
        statefulsets: vec![statefulset(
            "db",
            ECHO_IMAGE,
            2,
            "db",
            &[("db", 5432, "TCP")],
        )],
        services: vec![
            service("web", "web", &[("http", 80, Named("http".into()), "TCP")]),
            service("echo", "echo", &[("echo", 7000, Int(7000), "TCP")]),
            service("dns", "dns", &[("dns", 5353, Int(5353), "UDP")]),
            headless_service("db", "db", &[("db", 5432)]),
        ],
    }
}
