//! `certs`: a throwaway CA and an ECDSA P-256 server certificate for `localhost` and
//! `127.0.0.1`, in the forms each proxy reads. Every target serves the same certificate, so
//! the TLS handshake costs the same signature everywhere.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub const CA: &str = "ca.crt";
pub const CERT: &str = "server.crt";
pub const KEY: &str = "server.key";
/// Chain and key in one file, as HAProxy's `crt` wants it.
pub const BUNDLE: &str = "server.pem";

pub fn write(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
        .context("while creating the CA")?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&key, &ca)
        .context("while signing the server certificate")?;
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let files = [
        (CA, ca.pem()),
        (CERT, chain.clone()),
        (KEY, key.serialize_pem()),
        (BUNDLE, chain + &key.serialize_pem()),
    ];
    write_files(dir, files)
}

/// Writes each `(name, text)` under `dir`; returns the paths written.
pub fn write_files(
    dir: &Path,
    files: impl IntoIterator<Item = (&'static str, String)>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("while writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
