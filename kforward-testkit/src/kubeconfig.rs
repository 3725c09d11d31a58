//! Writing kubeconfig files that point real clients at testkit clusters.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use crate::Error;

/// What a kubeconfig needs to know about one cluster.
#[derive(Debug, Clone)]
pub struct KubeconfigEntry {
    /// The name used for the cluster, the user and the context.
    pub name: String,
    /// The API server URL.
    pub server: String,
    /// The CA certificate in PEM (absent for plain HTTP).
    pub ca_pem: Option<String>,
    /// The bearer token.
    pub token: String,
    /// The context's default namespace.
    pub namespace: Option<String>,
}

/// Builds a kubeconfig (as JSON, which every YAML reader takes) holding every entry, with
/// the first one as the current context.
///
/// # Example
///
/// ```
/// use kforward_testkit::{KubeconfigEntry, kubeconfig_json};
/// let e = KubeconfigEntry {
///     name: "a".into(),
///     server: "http://127.0.0.1:1".into(),
///     ca_pem: None,
///     token: "t".into(),
///     namespace: Some("demo".into()),
/// };
/// let k = kubeconfig_json(&[e]);
/// assert_eq!(k["current-context"], "a");
/// ```
pub fn kubeconfig_json(entries: &[KubeconfigEntry]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let clusters: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut c = json!({ "server": e.server });
            if let Some(ca) = &e.ca_pem {
                c["certificate-authority-data"] = json!(b64.encode(ca));
            }
            json!({ "name": e.name, "cluster": c })
        })
        .collect();
    let users: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "name": e.name, "user": { "token": e.token } }))
        .collect();
    let contexts: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut c = json!({ "cluster": e.name, "user": e.name });
            if let Some(ns) = &e.namespace {
                c["namespace"] = json!(ns);
            }
            json!({ "name": e.name, "context": c })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": entries.first().map(|e| e.name.clone()).unwrap_or_default(),
        "preferences": {},
    })
}

/// Writes [`kubeconfig_json`] to `path` atomically (a rename), so a watcher of the file
/// never reads half of it.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be written.
pub fn write_kubeconfig(path: &Path, entries: &[KubeconfigEntry]) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(&kubeconfig_json(entries))
        .map_err(|e| Error::Io(path.to_path_buf(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io(path.to_path_buf(), e))
}
