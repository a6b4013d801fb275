//! A provider's signing keys, fetched from its JWKS URL with reqwest (no jwks-client: it is
//! abandoned and pulls tokio 0.2 and ring 0.16).
//!
//! - Keys are converted to `DecodingKey`s once per fetch, never per request.
//! - A background task refreshes every `refresh_interval`, retrying failures with backoff;
//!   the last good keys serve for at most `max_stale`.
//! - An unknown `kid` triggers at most one fetch per `refetch_cooldown`, shared by every
//!   request that waits for it (single-flight), so random kids cannot flood the provider.
//! - A fetch fails on a refusal, a non-2xx status, a timeout, a body over 1 MiB, a redirect
//!   to another host or from https to http, JSON that is not a key set, or a set with no usable key. Symmetric
//!   (`oct`) keys and keys for other algorithms are skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Provider;
use crate::metrics::ProviderMetrics;

/// Cap on a JWKS response body.
const MAX_BODY: usize = 1 << 20;
/// Whole-request deadline for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry after a failed fetch; doubles up to the refresh interval (at most a minute).
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the JWKS client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the JWKS request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("the JWKS endpoint answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the JWKS body is larger than 1 MiB")]
    TooLarge,
    #[error("the JWKS body is not a JSON key set: {0}")]
    NotAKeySet(#[source] serde_json::Error),
    #[error("the JWKS has no usable key ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

impl Error {
    /// Label for `jwks_refresh_total{result}`.
    pub fn result(&self) -> &'static str {
        match self {
            Error::Client(_) | Error::Request(_) => "unreachable",
            Error::Status(_) => "bad_status",
            Error::TooLarge => "too_large",
            Error::NotAKeySet(_) => "malformed",
            Error::NoUsableKey { .. } => "no_usable_key",
        }
    }
}

/// One verification key with the algorithms it may be used with.
pub struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one successful fetch.
pub struct KeySet {
    all: Vec<Arc<Key>>,
    pub fetched: Instant,
}

impl KeySet {
    /// The one key that fits a token's `kid` (when it has one) and `alg`; several fitting
    /// keys answer nothing. Two keys may share a `kid` when their types differ (RFC 7517
    /// section 4.5), so the algorithm tells them apart. Sets hold a handful of keys.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<Key>> {
        let mut fitting = self.all.iter().filter(|k| {
            k.algorithms.contains(&alg) && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
        });
        let first = fitting.next();
        if fitting.next().is_some() {
            None
        } else {
            first
        }
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.all.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A provider at run time: its configuration, keys and validation rules.
pub struct KeyStore {
    pub config: Provider,
    keys: ArcSwapOption<KeySet>,
    client: reqwest::Client,
    /// When the last on-demand (unknown kid) fetch started.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    validations: HashMap<Algorithm, Validation>,
    pub metrics: ProviderMetrics,
}

impl KeyStore {
    pub fn new(config: Provider, metrics: ProviderMetrics) -> Result<KeyStore, Error> {
        let host = config.jwks_url.host_str().map(str::to_owned);
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if attempt.url().host_str().map(str::to_owned) != host {
                attempt.error("redirect to another host")
            } else if attempt.url().scheme() != "https"
                && attempt.previous().iter().any(|url| url.scheme() == "https")
            {
                // The keys decide who gets in: once fetched over TLS, never over plain http.
                attempt.error("redirect from https to http")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .redirect(policy)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("wsgate/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(Error::Client)?;
        let validations = config
            .algorithms
            .iter()
            .map(|alg| (*alg, validation(&config, *alg)))
            .collect();
        Ok(KeyStore {
            keys: ArcSwapOption::empty(),
            client,
            last_refetch: tokio::sync::Mutex::new(None),
            validations,
            metrics,
            config,
        })
    }

    pub fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations.get(&alg)
    }

    /// The keys, unless none were ever fetched or the last good ones are older than
    /// `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .load_full()
            .filter(|set| set.fetched.elapsed() <= self.config.max_stale)
    }

    /// For a token whose key is unknown: fetch again unless a fetch started within the
    /// cooldown. Concurrent callers wait for the one fetch and all see its result.
    pub async fn refetch(&self) -> Option<Arc<KeySet>> {
        let mut last = self.last_refetch.lock().await;
        let cooled = last.is_none_or(|at| at.elapsed() >= self.config.refetch_cooldown);
        if cooled {
            *last = Some(Instant::now());
            self.refresh().await;
        }
        drop(last);
        self.current()
    }

    /// Fetches once and records the outcome in logs and metrics.
    pub async fn refresh(&self) -> bool {
        match self.fetch().await {
            Ok(count) => {
                self.metrics.refreshed("ok", Some(count));
                true
            }
            Err(error) => {
                warn!(provider = %self.config.name, %error, "JWKS fetch failed; keeping the last good keys");
                self.metrics.refreshed(error.result(), None);
                false
            }
        }
    }

    /// Refreshes every `refresh_interval` (sooner, with backoff, after a failure) until
    /// `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = if self.refresh().await {
                retry = FIRST_RETRY;
                self.config.refresh_interval
            } else {
                let wait = retry;
                retry = (retry * 2).min(self.config.refresh_interval).min(MAX_RETRY);
                wait
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn fetch(&self) -> Result<usize, Error> {
        let mut response = self
            .client
            .get(self.config.jwks_url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(Error::Request)?;
        if !response.status().is_success() {
            return Err(Error::Status(response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(Error::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Error::Request)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        self.install(&body)
    }

    /// Parses a JWKS body exactly as a fetch does and makes its keys current. Public only so
    /// the fuzz targets (fuzz/) can verify tokens against a local key set without a server.
    #[doc(hidden)]
    pub fn install(&self, body: &[u8]) -> Result<usize, Error> {
        let set = self.parse(body)?;
        let count = set.len();
        let previous = self.keys.swap(Some(Arc::new(set)));
        if previous.is_none() {
            info!(provider = %self.config.name, keys = count, "JWKS loaded");
        }
        Ok(count)
    }

    fn parse(&self, body: &[u8]) -> Result<KeySet, Error> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(body).map_err(Error::NotAKeySet)?;
        let total = raw.keys.len();
        let mut all = Vec::new();
        for value in raw.keys {
            let Some(key) = serde_json::from_value::<Jwk>(value)
                .ok()
                .and_then(|jwk| self.usable(&jwk))
            else {
                continue;
            };
            all.push(Arc::new(key));
        }
        if all.is_empty() {
            return Err(Error::NoUsableKey { skipped: total });
        }
        if all.len() < total {
            warn!(provider = %self.config.name, skipped = total - all.len(), "JWKS keys skipped (symmetric, for encryption, or for algorithms not allowed)");
        }
        Ok(KeySet {
            all,
            fetched: Instant::now(),
        })
    }

    /// A signing key this provider may use, or `None`.
    fn usable(&self, jwk: &Jwk) -> Option<Key> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let by_type: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => &[],
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            // Symmetric keys never verify tokens from a remote set; nor do unknown types.
            _ => &[],
        };
        let declared = jwk.common.key_algorithm.map(key_algorithm);
        let algorithms: Vec<Algorithm> = by_type
            .iter()
            .copied()
            .filter(|alg| self.config.algorithms.contains(alg))
            .filter(|alg| declared.is_none_or(|declared| declared == Some(*alg)))
            .collect();
        if algorithms.is_empty() {
            return None;
        }
        Some(Key {
            kid: jwk.common.key_id.clone(),
            decoding: DecodingKey::from_jwk(jwk).ok()?,
            algorithms,
        })
    }
}

/// The JWK `alg` as a JWS algorithm (`None` for encryption or unknown algorithms).
fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The checks every token of this provider gets: signature with `alg`, `exp` required,
/// `nbf` checked, both with leeway; exact issuer; one of the audiences.
fn validation(config: &Provider, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation
}
