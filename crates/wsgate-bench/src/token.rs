//! RS256 test tokens: the key pair (private PEM for signing, public PEM for HAProxy's
//! `jwt_verify`, JWKS for wsgate), fresh tokens with unique `jti` and `sub`, and the forged
//! tokens of the upgrade checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;

/// Files written by `keys`.
pub const PRIVATE_PEM: &str = "jwt-private.pem";
pub const PUBLIC_PEM: &str = "jwt-public.pem";
pub const JWKS_JSON: &str = "jwks.json";

/// The claims every bench token carries.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// Signs fresh tokens for one issuer and audience.
pub struct Signer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    serial: AtomicU64,
}

impl Signer {
    /// Loads a PKCS#1 or PKCS#8 RSA private key PEM.
    pub fn load(
        path: &Path,
        kid: &str,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> anyhow::Result<Signer> {
        Ok(Signer {
            key: rsa_key(path)?,
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            serial: AtomicU64::new(0),
        })
    }

    /// Valid claims, unique to this call (so no proxy can serve them from a cache).
    pub fn claims(&self) -> Claims {
        let now = unix_now();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let unique = format!("{}-{now}-{serial}", std::process::id());
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: format!("bench-{unique}"),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: unique,
        }
    }

    /// A fresh, valid RS256 token.
    pub fn mint(&self) -> String {
        self.sign(&self.claims())
    }

    /// These claims signed with the real key.
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&self.header(Algorithm::RS256), claims, &self.key)
            .expect("RS256 signing with a key that loaded cannot fail")
    }

    pub fn header(&self, alg: Algorithm) -> Header {
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        header
    }
}

/// Claims signed by `key` under `header` (for forged tokens).
pub fn sign_with(header: &Header, claims: &Claims, key: &EncodingKey) -> anyhow::Result<String> {
    jsonwebtoken::encode(header, claims, key).context("while signing a test token")
}

/// `alg: none`, no signature.
pub fn unsigned(kid: &str, claims: &Claims) -> String {
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
    let body = serde_json::to_vec(claims).expect("claims serialise");
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(body)
    )
}

/// A second, unrelated RSA key (for a token whose signature does not verify).
pub fn other_key() -> anyhow::Result<EncodingKey> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .context("while generating an RSA key")?;
    Ok(EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(
        &pair.serialize_der(),
    )?))
}

/// `keys`: writes the private key (PKCS#1 PEM), the public key (SPKI PEM) and the JWKS.
pub fn write_keys(dir: &Path, kid: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .context("while generating an RSA-2048 key")?;
    let pkcs1 = pkcs8_to_pkcs1(&pair.serialize_der())?;
    let key = EncodingKey::from_rsa_der(&pkcs1);
    let mut jwk =
        Jwk::from_encoding_key(&key, Algorithm::RS256).context("while building the JWK")?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    let jwks = JwkSet { keys: vec![jwk] };

    let private = PrivateKeyDer::Pkcs1(pkcs1.into());
    let files = [
        (PRIVATE_PEM, pem("RSA PRIVATE KEY", private.secret_der())),
        (PUBLIC_PEM, pair.public_key_pem()),
        (JWKS_JSON, serde_json::to_string_pretty(&jwks)? + "\n"),
    ];
    crate::pki::write_files(dir, files)
}

fn rsa_key(path: &Path) -> anyhow::Result<EncodingKey> {
    let key = PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("while reading the private key {}", path.display()))?;
    let der = match &key {
        PrivateKeyDer::Pkcs1(der) => der.secret_pkcs1_der().to_vec(),
        PrivateKeyDer::Pkcs8(der) => pkcs8_to_pkcs1(der.secret_pkcs8_der())?,
        _ => bail!("{}: not an RSA private key", path.display()),
    };
    Ok(EncodingKey::from_rsa_der(&der))
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// jsonwebtoken's aws-lc backend wants PKCS#1 (`RSAPrivateKey`); rcgen writes PKCS#8, whose
/// last field is that structure as an OCTET STRING:
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`.
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (tag, outer, _) = der_item(pkcs8)?;
    if tag != 0x30 {
        bail!("PKCS#8: not a SEQUENCE");
    }
    let (_, _, rest) = der_item(outer)?; // version
    let (_, _, rest) = der_item(rest)?; // algorithm
    let (tag, key, _) = der_item(rest)?;
    if tag != 0x04 {
        bail!("PKCS#8: no private key OCTET STRING");
    }
    Ok(key.to_vec())
}

/// One DER item: (tag, contents, what follows).
fn der_item(input: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first().context("DER: empty")?;
    let (&first, mut rest) = rest.split_first().context("DER: no length")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            bail!("DER: bad length");
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        bail!("DER: truncated");
    }
    let (contents, after) = rest.split_at(len);
    Ok((tag, contents, after))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        let (tag, body, rest) = der_item(&[0x04, 0x02, 1, 2, 9]).expect("short form");
        assert_eq!((tag, body, rest), (0x04, &[1u8, 2][..], &[9u8][..]));
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(der_item(&long).expect("long form").1.len(), 0x80);
        assert!(der_item(&[0x30, 0x05, 1]).is_err());
    }

    #[test]
    fn unsigned_token_has_empty_signature() {
        let claims = Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
        };
        let token = unsigned("k", &claims);
        assert!(token.ends_with('.'));
        assert_eq!(token.matches('.').count(), 2);
    }
}
