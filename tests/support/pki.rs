//! A generated CA and a server certificate for `localhost` and `127.0.0.1`, with TLS
//! configurations for both ends.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;

/// A CA and a server certificate for `localhost` and `127.0.0.1`, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateDer<'static>,
    /// The CA certificate alone, as PEM.
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).expect("write cert");
        std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write key");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        Pki {
            ca_path,
            ca: ca.der().clone(),
            dir,
            cert_path,
            key_path,
        }
    }

    /// A TLS server configuration with this PKI's certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        wsgate_core::tls::Identity::from_pem_files(&self.cert_path, &self.key_path)
            .and_then(|identity| identity.server_config())
            .expect("server config")
    }

    /// A TLS client configuration that trusts this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
