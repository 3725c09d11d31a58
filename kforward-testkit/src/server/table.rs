//! Server-side printing: the `Table` form `kubectl get` asks for.

use serde_json::{Value, json};

use crate::Kind;

/// Whether the client asked for a `meta.k8s.io` Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn col(name: &str, ty: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// How long ago an RFC 3339 time was, as kubectl prints ages (`5s`, `3m20s`, `2h`, `4d`).
pub(crate) fn age(created: &str) -> String {
    let Ok(t) = created.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (crate::store::now_timestamp().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(kind: Kind) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match kind {
        Kind::Namespace => vec![
            name,
            col("Status", "string", 0, "The status of the namespace"),
            age,
        ],
        Kind::Pod => vec![
            name,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col(
                "Node",
                "string",
                1,
                "Name of the Node this pod is assigned to.",
            ),
        ],
        Kind::Service => vec![
            name,
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The IP of the service."),
            col("External-IP", "string", 0, "External IP of the service."),
            col("Port(s)", "string", 0, "The ports of the service."),
            age,
            col("Selector", "string", 1, "The selector of the service."),
        ],
        Kind::EndpointSlice => vec![
            name,
            col(
                "AddressType",
                "string",
                0,
                "The type of address held by the slice.",
            ),
            col("Ports", "string", 0, "The ports of the slice."),
            col(
                "Endpoints",
                "string",
                0,
                "The endpoint addresses of the slice.",
            ),
            age,
        ],
        Kind::Deployment => vec![
            name,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            containers(),
            images(),
            col("Selector", "string", 1, "Label selector for pods."),
        ],
        Kind::ReplicaSet => vec![
            name,
            col(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired pods.",
            ),
            col(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of non-terminating pods.",
            ),
            col(
                "Ready",
                "integer",
                0,
                "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
            ),
            age,
            containers(),
            images(),
            col(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        Kind::StatefulSet => vec![
            name,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            age,
            containers(),
            images(),
        ],
        Kind::ControllerRevision => vec![
            name,
            col("Controller", "string", 0, "Controller of the object"),
            col(
                "Revision",
                "string",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            age,
        ],
    }
}

fn containers() -> Value {
    col(
        "Containers",
        "string",
        1,
        "Names of each container in the template.",
    )
}

fn images() -> Value {
    col(
        "Images",
        "string",
        1,
        "Images referenced by each container in the template.",
    )
}

/// The template's container names and images, comma-separated, as the wide columns show.
fn template_columns(o: &Value) -> (Value, Value) {
    let list = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let join = |field: &str| {
        list.iter()
            .map(|c| c[field].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    (json!(join("name")), json!(join("image")))
}

/// A selector as `metav1.FormatLabelSelector` writes it (`<none>` when empty).
fn selector_text(selector: &Value) -> Value {
    let text = crate::selector::Selector::from_label_selector(selector).to_string();
    json!(if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    })
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn cells(kind: Kind, o: &Value) -> Vec<Value> {
    let name = s(&o["metadata"]["name"]);
    let age = age(o["metadata"]["creationTimestamp"].as_str().unwrap_or(""));
    match kind {
        Kind::Namespace => vec![json!(name), json!(s(&o["status"]["phase"])), json!(age)],
        Kind::Pod => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let waiting = statuses
                .iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
            let status = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating".to_string()
            } else {
                waiting.unwrap_or_else(|| s(&o["status"]["phase"]))
            };
            let ip = o["status"]["podIP"]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            let node = o["spec"]["nodeName"]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
                json!(age),
                json!(ip),
                json!(node),
            ]
        }
        Kind::Service => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let selector: Vec<String> = o["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(name),
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!(ports.join(",")),
                json!(age),
                json!(if selector.is_empty() {
                    "<none>".to_string()
                } else {
                    selector.join(",")
                }),
            ]
        }
        Kind::EndpointSlice => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["port"].to_string()).collect())
                .unwrap_or_default();
            let addrs: Vec<String> = o["endpoints"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else if addrs.is_empty() {
                "<unset>".to_string()
            } else {
                addrs.join(",")
            };
            vec![
                json!(name),
                json!(s(&o["addressType"])),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(shown),
                json!(age),
            ]
        }
        Kind::Deployment => {
            let n = |k: &str| o["status"][k].as_i64().unwrap_or(0);
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let (names, images) = template_columns(o);
            vec![
                json!(name),
                json!(format!("{}/{want}", n("readyReplicas"))),
                json!(n("updatedReplicas")),
                json!(n("availableReplicas")),
                json!(age),
                names,
                images,
                selector_text(&o["spec"]["selector"]),
            ]
        }
        Kind::ReplicaSet => {
            let n = |k: &str| o["status"][k].as_i64().unwrap_or(0);
            let (names, images) = template_columns(o);
            vec![
                json!(name),
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
                json!(n("replicas")),
                json!(n("readyReplicas")),
                json!(age),
                names,
                images,
                selector_text(&o["spec"]["selector"]),
            ]
        }
        Kind::StatefulSet => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
            let (names, images) = template_columns(o);
            vec![
                json!(name),
                json!(format!("{ready}/{want}")),
                json!(age),
                names,
                images,
            ]
        }
        Kind::ControllerRevision => {
            let controller = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map_or("<none>".to_string(), |r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .unwrap_or("")
                        .split('/')
                        .next()
                        .unwrap_or("");
                    let kind = r["kind"].as_str().unwrap_or("").to_ascii_lowercase();
                    format!("{kind}.{group}/{}", r["name"].as_str().unwrap_or(""))
                });
            vec![
                json!(name),
                json!(controller),
                json!(o["revision"].as_i64().unwrap_or(0)),
                json!(age),
            ]
        }
    }
}

/// Converts a list of objects into a Table. `include` is the `includeObject` parameter
/// (`None`, `Metadata` (the default) or `Object`).
pub(crate) fn table(kind: Kind, items: &[Value], rv: u64, include: &str) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, o)});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}
