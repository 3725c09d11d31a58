//! A certificate authority made per cluster, and the API server's certificate signed by it.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The per-cluster CA and the server's TLS configuration.
pub struct Tls {
    /// The CA certificate in PEM, as written into the kubeconfig.
    pub ca_pem: String,
    /// The server configuration (HTTP/1.1 only over ALPN, like the endpoints we serve need).
    pub server_config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Makes a new CA and a server certificate for `127.0.0.1`, `::1` and `localhost`.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a certificate cannot be made.
    pub fn generate(cluster_name: &str) -> Result<Tls, Error> {
        let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(|e| tls(&e))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls(&e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{cluster_name}-ca"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls(&e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(|e| tls(&e))?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(|e| tls(&e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .map_err(|e| tls(&e))?;

        let chain = vec![
            CertificateDer::from(server_cert.der().to_vec()),
            CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))?;
        // HTTP/2 is left out on purpose: port-forward upgrades need HTTP/1.1 and kube speaks
        // only HTTP/1.1; clients that offer h2 fall back to HTTP/1.1 when it is not chosen.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(config),
        })
    }
}
