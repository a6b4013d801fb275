//! The public listener's TLS: a certificate chain and private key read from PEM (through
//! rustls-pki-types' `PemObject`), and a rustls server configuration on the aws-lc-rs
//! provider that speaks TLS 1.2 and 1.3 only and offers ALPN `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the certificate chain {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCert { path: PathBuf },
    #[error("cannot read the private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain with its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Reads the chain and the key, and checks that they can serve together.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, Error> {
        let cert_error = |source| Error::Cert {
            path: cert.to_owned(),
            source,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(cert_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(cert_error)?;
        if chain.is_empty() {
            return Err(Error::NoCert {
                path: cert.to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::Key {
            path: key.to_owned(),
            source,
        })?;
        let identity = Identity { chain, key };
        identity.server_config()?;
        Ok(identity)
    }

    /// Builds the rustls configuration for the public listener.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
