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
    /// Makes a new CA and a server certificate for `127.0.0.1`, `::1`, `localhost` and
    /// `extra` names or addresses (an API server on an address that is not loopback).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a certificate cannot be made.
    pub fn generate(cluster_name: &str, extra: &[String]) -> Result<Tls, Error> {
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
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes.default.svc".to_string(),
        ];
        names.extend(
            extra
                .iter()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut params = CertificateParams::new(names).map_err(|e| tls(&e))?;
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
        let provider = Arc::new(go_cipher_preference(
            rustls::crypto::ring::default_provider(),
        ));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))?;
        // HTTP/2 is left out on purpose: port-forward upgrades need HTTP/1.1 and kube speaks
        // only HTTP/1.1; clients that offer h2 fall back to HTTP/1.1 when it is not chosen.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The server's order decides, as in Go's crypto/tls (see `go_cipher_preference`).
        config.ignore_client_order = true;
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(config),
        })
    }
}

/// Orders the cipher suites the way the real API server's TLS stack (Go's `crypto/tls`)
/// prefers them on hardware with AES instructions: AES-128-GCM, then AES-256-GCM, then
/// ChaCha20-Poly1305, TLS 1.3 before TLS 1.2. Go's server chooses by its own order, not the
/// client's (`handshake_server_tls13.go`: `defaultCipherSuitesTLS13` is tried in order
/// against the client's list; the client's order only matters to pick ChaCha20 first when
/// the client lacks AES hardware, which this server does not model). rustls' own order puts
/// AES-256 first, so without this a rustls client (kforward, kube) would pay AES-256's extra
/// rounds against the testkit while Go clients (kubectl) get AES-128: not what a real
/// cluster does, and not a fair comparison.
fn go_cipher_preference(
    mut provider: rustls::crypto::CryptoProvider,
) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let rank = |s: &rustls::SupportedCipherSuite| {
        let suite = s.suite();
        let tls13 = s.tls13().is_some();
        let cipher = match suite {
            S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            S::TLS13_AES_256_GCM_SHA384
            | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        };
        (!tls13, cipher)
    };
    provider.cipher_suites.sort_by_key(rank);
    provider
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A rustls client offers AES-256-GCM first; over a real TLS 1.3 handshake on loopback
    /// the server still picks AES-128-GCM, as the real API server does.
    #[tokio::test]
    async fn server_order_picks_aes_128_gcm_like_go() {
        let tls = Tls::generate("t", &[]).expect("certificates");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config.clone());
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await?;
            let mut s = acceptor.accept(sock).await?;
            s.write_all(b"ok").await?;
            s.shutdown().await?;
            std::io::Result::Ok(())
        });

        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(tls.ca_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the client must prefer AES-256 for this test to mean anything"
        );
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let run = async {
            let sock = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
            let mut s = connector.connect(name, sock).await?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await?;
            let suite = s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite());
            std::io::Result::Ok((got, suite))
        };
        let (got, suite) = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(got, b"ok");
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server in time")
            .expect("server task")
            .expect("server side");
    }
}
