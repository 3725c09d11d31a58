//! A `kube::Config` for one context of a kubeconfig, when kube's own loader refuses the
//! environment's `NO_PROXY`.
//!
//! kube 5's loader (`Config::from_custom_kubeconfig`) parses `NO_PROXY` itself whenever a
//! proxy is set, and fails on entries Go's `httpproxy` skips: an empty one (a trailing
//! comma), or `*` inside a list. kubectl carries on with such a list, and kforward chooses
//! the proxy itself ([`ApiRoute`](crate::client::ApiRoute)), so it then builds the same
//! `Config` kube's loader builds (kube-client 5, `config/mod.rs` `new_from_loader` and
//! `config/file_loader.rs`) without the proxy step, from kube's public parts.

use kube::config::{AuthInfo, ExecAuthCluster, Kubeconfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The `Config` of `context` in `kc`, its proxy left unset.
///
/// # Errors
///
/// A message saying which part of the kubeconfig cannot be used.
pub(crate) fn without_proxy(kc: &Kubeconfig, context: &str) -> Result<kube::Config, String> {
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("context {context:?} has no settings"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| {
            format!(
                "cluster {:?} of context {context:?} is missing",
                ctx.cluster
            )
        })?;
    // client-go does not fail on a missing user; neither does kube.
    let mut user = ctx
        .user
        .as_ref()
        .and_then(|name| kc.auth_infos.iter().find(|a| &a.name == name))
        .and_then(|a| a.auth_info.clone())
        .unwrap_or_else(AuthInfo::default);
    let exec_cluster = ExecAuthCluster::try_from(&cluster).map_err(|e| e.to_string())?;
    if let Some(exec) = &mut user.exec
        && exec.provide_cluster_info
    {
        exec.cluster = Some(exec_cluster.clone());
    }
    let server = cluster
        .server
        .as_deref()
        .ok_or("the cluster has no server URL")?
        .parse::<http::Uri>()
        .map_err(|e| format!("the cluster's server URL: {e}"))?;
    let mut config = kube::Config::new(server);
    config.default_namespace = ctx.namespace.clone().unwrap_or_else(|| "default".into());
    config.accept_invalid_certs = cluster.insecure_skip_tls_verify.unwrap_or(false);
    config.disable_compression = cluster.disable_compression.unwrap_or(false);
    config.tls_server_name = cluster.tls_server_name.clone();
    config.root_cert = match exec_cluster.certificate_authority_data {
        Some(pem) => Some(
            CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the cluster's certificate authority: {e}"))?,
        ),
        None => None,
    };
    config.auth_info = user;
    Ok(config)
}
