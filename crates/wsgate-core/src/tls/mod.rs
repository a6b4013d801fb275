//! The public listener's TLS: a certificate chain and private key read from PEM (through
//! rustls-pki-types' `PemObject`), and a rustls server configuration on the aws-lc-rs
//! provider that speaks TLS 1.2 and 1.3 only and offers ALPN `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{CipherSuite, ServerConfig};

mod stream;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use stream::{Acceptor, Stream};

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
    /// The certificate and key files it was read from (watched for rotation).
    pub files: Option<(PathBuf, PathBuf)>,
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
    pub fn from_pem_files(cert: &Path, key_path: &Path) -> Result<Identity, Error> {
        let key = key_path;
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
        let identity = Identity {
            chain,
            key,
            files: Some((cert.to_owned(), key_path.to_owned())),
        };
        identity.server_config()?;
        Ok(identity)
    }

    /// Builds the rustls configuration for the public listener.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // AES-128-GCM first, and the server's order decides: RFC 8446's mandatory suite, first
        // in Mozilla's "modern" profile. Its SHA-256 key schedule runs on the CPU's SHA
        // instructions where aws-lc's SHA-384 has none on this hardware (7 % of a handshake's
        // CPU, perf), and its AES takes 10 rounds to AES-256's 14 on every record. Every other
        // suite stays, for clients that offer nothing else.
        provider
            .cipher_suites
            .sort_by_key(|suite| !AES_128_GCM.contains(&suite.suite()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// The AES-128-GCM suites, preferred in this order's place (see [`Identity::server_config`]).
const AES_128_GCM: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The certificate's `notAfter`, read straight from its DER (Certificate -> TBSCertificate ->
/// Validity); `None` if it cannot be read.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<std::time::SystemTime> {
    /// One DER element: (tag, contents, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (_, certificate, _) = element(cert.as_ref())?;
    let (_, tbs, _) = element(certificate)?;
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // Explicit version: the serial number follows.
        rest = element(rest)?.2;
    }
    let (_, _, rest) = element(rest)?; // signature algorithm
    let (_, _, rest) = element(rest)?; // issuer
    let (_, validity, _) = element(rest)?;
    let (_, _, rest) = element(validity)?; // notBefore
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        // UTCTime: two-digit year, 1950..2049.
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_matches_the_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let expiry = not_after(cert.der()).expect("readable");
        // 2031-07-15T00:00:00Z
        assert_eq!(
            expiry,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_941_840_000)
        );
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x03, 0x01])),
            None
        );
    }
}
