//! TLS to an `https://` proxy: the CAs of the kubeconfig's cluster (Go's transport checks the
//! proxy with the same TLS settings as the server, so a kubectl user puts the proxy's CA in
//! the kubeconfig's bundle), the system's (with `SSL_CERT_FILE`/`SSL_CERT_DIR`), and the ones
//! in the file [`PROXY_CA_ENV`] names.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The environment variable naming a PEM file of CAs that sign an `https://` proxy's
/// certificate, trusted for the proxy only (never for the API server), on top of the
/// system's.
///
/// # Example
///
/// ```
/// assert_eq!(kforward_core::client::PROXY_CA_ENV, "KFORWARD_PROXY_CA");
/// ```
pub const PROXY_CA_ENV: &str = "KFORWARD_PROXY_CA";

/// The TLS settings for connections to an `https://` proxy, trusting `cluster_cas` (DER) too.
///
/// # Errors
///
/// A message naming [`PROXY_CA_ENV`] and the file when it cannot be read or holds no
/// certificate, or when no CA at all is known.
pub(crate) fn client_config(cluster_cas: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (cluster, _) = roots.add_parsable_certificates(
        cluster_cas
            .iter()
            .map(|der| CertificateDer::from(der.clone())),
    );
    // Unreadable entries of the system store are skipped, as Go's loader skips them.
    let system = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(system.certs);
    let mut extra = 0;
    if let Some(path) = std::env::var_os(PROXY_CA_ENV).filter(|p| !p.is_empty()) {
        let shown = std::path::Path::new(&path).display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .map_err(|e| format!("{PROXY_CA_ENV}={shown}: cannot read it: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{PROXY_CA_ENV}={shown}: not a PEM file of certificates: {e}"))?;
        let (ok, _) = roots.add_parsable_certificates(certs);
        if ok == 0 {
            return Err(format!(
                "{PROXY_CA_ENV}={shown}: holds no usable CA certificate"
            ));
        }
        extra = ok;
    }
    if added + extra + cluster == 0 {
        return Err(format!(
            "no CA is known to check the https:// proxy's certificate: the system has none; point {PROXY_CA_ENV} at the PEM file of the CA that signed it"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings for the proxy: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The proxy speaks HTTP/1.1 CONNECT; never let it pick h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
