//! The fault switches, shared by the Rust API ([`crate::Cluster`]) and the admin endpoints.

use std::time::Duration;

use crate::kubeconfig::{KubeconfigEntry, write_kubeconfig};
use crate::state::{Shared, lock};
use crate::{ApiError, Error, Kind};

pub(crate) fn pause(shared: &Shared, paused: bool) {
    shared.faults.paused.send_replace(paused);
}

pub(crate) fn set_latency(shared: &Shared, latency: Duration) {
    *lock(&shared.faults.latency) = latency;
}

pub(crate) fn deny(shared: &Shared, verb: &str, resource: &str) {
    lock(&shared.auth)
        .denied
        .insert((verb.to_string(), resource.to_string()));
}

pub(crate) fn allow_all(shared: &Shared) {
    lock(&shared.auth).denied.clear();
}

/// A new random bearer token.
pub(crate) fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// The kubeconfig entry of this cluster as it is now.
pub(crate) fn entry(shared: &Shared) -> KubeconfigEntry {
    let addr = *lock(&shared.api_addr);
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    KubeconfigEntry {
        name: shared.name.clone(),
        server: format!("{scheme}://{addr}"),
        ca_pem: shared.ca_pem.clone(),
        token: lock(&shared.auth).token.clone(),
        namespace: lock(&shared.default_namespace).clone(),
    }
}

pub(crate) fn write_own_kubeconfig(shared: &Shared) -> Result<(), Error> {
    write_kubeconfig(&shared.kubeconfig_path, &[entry(shared)])
}

/// Invalidates the current token: every request carrying it gets 401. A new token is
/// written to the cluster's kubeconfig, as a credential plugin would hand out a fresh one.
pub(crate) fn expire_token(shared: &Shared) -> Result<String, Error> {
    let token = new_token();
    lock(&shared.auth).token = token.clone();
    write_own_kubeconfig(shared)?;
    Ok(token)
}

pub(crate) fn set_pod_ready(
    shared: &Shared,
    ns: &str,
    name: &str,
    ready: bool,
) -> Result<(), ApiError> {
    let pod = shared.store.get(Kind::Pod, ns, name)?;
    let key = format!("{ns}/{name}");
    if ready {
        lock(&shared.not_ready).remove(&key);
    } else {
        lock(&shared.not_ready).insert(key);
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    crate::controller::set_ready(shared, ns, name, uid, ready);
    Ok(())
}
