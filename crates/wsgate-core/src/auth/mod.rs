//! Authentication: pull the bearer JWT from the upgrade request, verify it against the
//! route's provider, apply the route's claim rules, and yield a [`Principal`].
//!
//! The algorithm comes from the provider's allowlist and the key, never from trust in the
//! token header: `none`, HS*, an algorithm the key was not published for, header-supplied
//! keys (`jwk`, `jku`, `x5u`, `x5c`: never fetched), `crit` extensions, JSON that repeats a
//! member name, and `exp`/`nbf` that are not whole seconds are refused.
//! Malformed tokens are refused before any signature work. Verified tokens that name their key
//! (`kid`) are cached by a SHA-256 of provider and token until they expire or the key leaves
//! the set, so reconnect storms cost no RSA work; a token without a `kid` is verified each time.

mod json;
pub mod jwks;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Auth;
use jwks::KeyStore;

/// Longest token accepted in any transport.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Deepest JSON nesting accepted in a token's header or claims.
const MAX_JSON_DEPTH: usize = 16;
/// Verified tokens kept in the cache.
const CACHE_CAPACITY: u64 = 100_000;
/// Latest `exp` accepted: 9999-12-31T23:59:59Z. Later ones are refused as malformed, which
/// keeps every deadline computed from `exp` representable (`u64::MAX` seconds overflows
/// `SystemTime`).
const MAX_EXP: u64 = 253_402_300_799;

/// Why a request is not authenticated; each maps to one HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No token: 401 with `WWW-Authenticate: Bearer realm="wsgate"`.
    Missing,
    /// Ambiguous or broken transport: 401 `error="invalid_request"`.
    InvalidRequest(&'static str),
    /// The token itself fails: 401 `error="invalid_token"`; the reason is a metric label.
    InvalidToken(&'static str),
    /// Valid token, but a route claim rule fails: 403 `error="insufficient_scope"`.
    InsufficientScope,
    /// The provider has no usable keys (not loaded yet, or stale): 503.
    KeysUnavailable,
}

impl Error {
    /// Label for `auth_failures_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            Error::Missing => "missing",
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidToken(reason) => reason,
            Error::InsufficientScope => "insufficient_scope",
            Error::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The `WWW-Authenticate` value, where one belongs.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Error::Missing => Some(r#"Bearer realm="wsgate""#),
            Error::InvalidRequest(_) => Some(r#"Bearer realm="wsgate", error="invalid_request""#),
            Error::InvalidToken(_) => Some(r#"Bearer realm="wsgate", error="invalid_token""#),
            Error::InsufficientScope => {
                Some(r#"Bearer realm="wsgate", error="insufficient_scope""#)
            }
            Error::KeysUnavailable => None,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug)]
pub struct Principal {
    pub sub: Option<String>,
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// `iat`, when the token carries a whole number of seconds.
    pub iat: Option<u64>,
    /// Every claim, as signed.
    pub claims: Claims,
    pub(crate) kid: Option<String>,
}

/// A verified token's claims as the compact JSON text that was signed. A session keeps its
/// token for life (reloads check `require_claims` again), and most sessions are idle: the
/// text costs its length, a map of the same claims several times that. Read into a map only
/// where a route's `require_claims` or `forward_claims` asks.
#[derive(Debug, Default)]
pub struct Claims(Box<str>);

impl Claims {
    /// The claims as a map (empty when there are none).
    pub fn map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl From<&str> for Claims {
    fn from(json: &str) -> Claims {
        Claims(json.into())
    }
}

/// The claims read from a verified token's JSON beyond the text kept: each one's value if
/// present (`null` included), so that the checks below see exactly what was signed.
#[derive(serde::Deserialize)]
struct Read {
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jti: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
}

/// A member present in the JSON, even as `null`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// The longest wait on a token's `exp`. `exp` is whatever u64 the issuer signed, and adding
/// it to `SystemTime` or `Instant` unchecked overflows (and panics) past about 2^63 seconds.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

impl Principal {
    /// The principal of a token's verified claims (jsonwebtoken checked their `exp`, `nbf`,
    /// `iss` and `aud`): `sub` and `jti` as text (numbers printed), `exp` and `nbf` whole
    /// seconds or the token is malformed.
    fn read(claims: Claims, kid: Option<String>) -> Result<Principal, Error> {
        let read: Read =
            serde_json::from_str(&claims.0).map_err(|_| Error::InvalidToken("malformed"))?;
        let text = |value: Option<Value>| match value {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        // jsonwebtoken takes fractional and rounds; only whole seconds are accepted here.
        let exp = read
            .exp
            .as_ref()
            .and_then(Value::as_u64)
            .filter(|exp| *exp <= MAX_EXP)
            .ok_or(Error::InvalidToken("malformed"))?;
        if read.nbf.is_some_and(|nbf| nbf.as_u64().is_none()) {
            return Err(Error::InvalidToken("malformed"));
        }
        Ok(Principal {
            sub: text(read.sub),
            jti: text(read.jti),
            exp,
            iat: read.iat.as_ref().and_then(Value::as_u64),
            kid,
            claims,
        })
    }

    /// Time left until `exp` plus `leeway` (zero once passed), at most thirty years.
    pub fn remaining(&self, leeway: Duration) -> Duration {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.exp))
            .and_then(|exp| exp.checked_add(leeway))
            .map_or(FAR_FUTURE, |deadline| {
                deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            })
            .min(FAR_FUTURE)
    }

    /// When the session must end: `exp` plus the provider's leeway, as a tokio instant.
    pub fn expires_at(&self, leeway: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.remaining(leeway)
    }
}

/// Verifies tokens for every provider, with the shared verified-token cache.
pub struct Authenticator {
    pub stores: Vec<Arc<KeyStore>>,
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Principal>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        principal: &Arc<Principal>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(principal.remaining(Duration::ZERO))
    }
}

impl Authenticator {
    pub fn new(stores: Vec<Arc<KeyStore>>) -> Authenticator {
        let cache = moka::sync::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(UntilExpiry)
            .build();
        Authenticator { stores, cache }
    }

    /// True when every provider has usable keys.
    pub fn ready(&self) -> bool {
        self.stores.iter().all(|store| store.current().is_some())
    }

    /// Verifies `token` for provider `provider` (an index into the config's providers).
    pub async fn verify(&self, provider: usize, token: &str) -> Result<Arc<Principal>, Error> {
        // Only the size before the cache: a cached token passed every check below already.
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidToken("too_long"));
        }
        let store = self.stores.get(provider).ok_or(Error::KeysUnavailable)?;
        let cache_key = digest(provider, token);
        // A cached verification stands while its key's id is still published; a token without
        // a kid names no key, so it could outlive a rotation: it is verified afresh each time.
        if let Some(keys) = store.current()
            && let Some(principal) = self.cache.get(&cache_key)
            && principal
                .kid
                .as_deref()
                .is_some_and(|kid| keys.contains_kid(kid))
            && principal.exp >= now()
        {
            return Ok(principal);
        }
        precheck(token)?;
        let keys = store.current().ok_or(Error::KeysUnavailable)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken("malformed"))?;
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(Error::InvalidToken("header_key"));
        }
        if header.crit.is_some() {
            return Err(Error::InvalidToken("unknown_crit"));
        }
        let validation = store
            .validation(header.alg)
            .ok_or(Error::InvalidToken("bad_algorithm"))?;
        let kid = header.kid.as_deref();
        let key = match keys.find(kid, header.alg) {
            Some(key) => key.clone(),
            None => {
                let refreshed = store.refetch().await.ok_or(Error::KeysUnavailable)?;
                let key = refreshed.find(kid, header.alg).cloned();
                key.ok_or(Error::InvalidToken("unknown_key"))?
            }
        };
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, &key.decoding, validation)
            .map_err(|error| Error::InvalidToken(failure(error.kind())))?;
        let principal = Arc::new(Principal::read(Claims(data.claims.into()), header.kid)?);
        // Only a verification that names its key can be trusted again (see the lookup above).
        if principal.kid.is_some() {
            self.cache.insert(cache_key, principal.clone());
        }
        Ok(principal)
    }
}

/// The metric label for a jsonwebtoken failure.
fn failure(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not_yet_valid",
        ErrorKind::InvalidSignature => "bad_signature",
        ErrorKind::InvalidIssuer => "wrong_issuer",
        ErrorKind::InvalidAudience => "wrong_audience",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "bad_algorithm",
        ErrorKind::MissingRequiredClaim(_) => "missing_claim",
        _ => "malformed",
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn digest(provider: usize, token: &str) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(&provider.to_le_bytes());
    context.update(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Cheap structural checks before any signature work: size, three non-empty base64url
/// segments without padding, JSON header and claims of bounded nesting with no member named
/// twice (see [`json`]).
pub fn precheck(token: &str) -> Result<(), Error> {
    let malformed = Error::InvalidToken("malformed");
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::InvalidToken("too_long"));
    }
    let segments: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err(malformed);
    };
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(base64url(header) && base64url(claims) && base64url(signature)) {
        return Err(malformed);
    }
    for part in [header, claims] {
        let json = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed)?;
        // Repeated members last: that walk assumes the nesting is bounded.
        if json_depth(&json).is_none_or(|depth| depth > MAX_JSON_DEPTH)
            || json.first() != Some(&b'{')
            || !json::unique_members(&json)
        {
            return Err(malformed);
        }
    }
    Ok(())
}

/// Maximum nesting of `{`/`[` outside strings; `None` when brackets do not balance.
fn json_depth(json: &[u8]) -> Option<usize> {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
    }
    (depth == 0 && !in_string).then_some(deepest)
}

/// Every `require_claims` value must be present in its claim (a space-separated string such
/// as `scope`, or an array such as `roles`).
pub fn check_claims(auth: &Auth, claims: &Map<String, Value>) -> Result<(), Error> {
    for (claim, required) in &auth.require_claims {
        let present: Vec<&str> = match claims.get(claim) {
            Some(Value::String(text)) => text.split(' ').filter(|s| !s.is_empty()).collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !required
            .iter()
            .all(|value| present.contains(&value.as_str()))
        {
            return Err(Error::InsufficientScope);
        }
    }
    Ok(())
}

/// `max_token_lifetime`: a token whose `exp` is further than the route allows after its `iat`
/// is refused (`invalid_token`, reason `token_lifetime`). A token without a whole-second `iat`
/// is judged from now, and so is one whose `iat` is still to come (it cannot buy a longer
/// life by claiming a later issue). For the upgrade and for anything else that admits a token.
pub fn check_lifetime(auth: &Auth, principal: &Principal) -> Result<(), Error> {
    match auth.max_token_lifetime {
        Some(max) if lifetime(principal, now()) > max => Err(Error::InvalidToken("token_lifetime")),
        _ => Ok(()),
    }
}

/// The route's policy for a verified token: its lifetime ceiling, then its claim rules. What
/// the upgrade checks, and what a reload checks again for live sessions.
pub fn check_policy(auth: &Auth, principal: &Principal) -> Result<(), Error> {
    check_lifetime(auth, principal)?;
    if auth.require_claims.is_empty() {
        return Ok(());
    }
    check_claims(auth, &principal.claims.map())
}

/// How long the token lives from its `iat`, or from `now` when it has none or names a later one.
fn lifetime(principal: &Principal, now: u64) -> Duration {
    let issued = principal.iat.map_or(now, |iat| iat.min(now));
    Duration::from_secs(principal.exp.saturating_sub(issued))
}

/// Headers for the backend from `forward_claims`: strings as they are, numbers and booleans
/// printed, arrays of those joined with commas. A claim that cannot be a header value
/// (objects, control characters) refuses the request rather than being mangled.
pub fn forward_headers(
    auth: &Auth,
    claims: &Map<String, Value>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let unforwardable = Error::InvalidToken("claim_unforwardable");
    // The backend must read exactly what was verified: HTTP parsers drop leading and trailing
    // spaces and tabs, and a comma inside an array element would read as two elements.
    let scalar = |value: &Value, in_array: bool| {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        let clean = !text.chars().any(char::is_control)
            && text.trim_matches(' ') == text
            && !(in_array && text.contains(','));
        clean.then_some(text)
    };
    let mut headers = Vec::new();
    for (claim, name) in &auth.forward_claims {
        let text = match claims.get(claim) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| scalar(item, true))
                .collect::<Option<Vec<_>>>()
                .ok_or(unforwardable)?
                .join(","),
            Some(value) => scalar(value, false).ok_or(unforwardable)?,
        };
        let value = HeaderValue::from_str(&text).map_err(|_| unforwardable)?;
        headers.push((name.clone(), value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn precheck_refuses_malformed_tokens_cheaply() {
        let good = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"sub":"a"}"#)
        );
        assert_eq!(precheck(&good), Ok(()));
        let deep = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(&format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40)))
        );
        let padded = format!(
            "{}=.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"sub":"a"}"#)
        );
        let stripped = format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64(r#"{"sub":"a"}"#));
        let not_json = format!("{}.{}.sig", b64("not json"), b64(r#"{"sub":"a"}"#));
        let long = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            "A".repeat(MAX_TOKEN_LEN)
        );
        for bad in [
            deep,
            padded,
            stripped,
            not_json,
            long,
            "a.b".into(),
            "a.b.c.d.e".into(),
            "a\r\n.b.c".into(),
            String::new(),
        ] {
            assert!(precheck(&bad).is_err(), "{bad:.60} must be refused");
        }
    }

    /// Found by the `jwt_verify` fuzz target (fuzz/regressions/jwt_verify/): a correctly
    /// signed token with `exp` 12329883889435672574 panicked in the verified-token cache
    /// (`UNIX_EPOCH + exp` overflows), and would have in `expires_at` and the registry too.
    #[test]
    fn huge_exp_values_do_not_overflow() {
        for exp in [
            12_329_883_889_435_672_574,
            u64::MAX,
            1 << 62,
            i64::MAX as u64,
        ] {
            let principal = Principal {
                sub: None,
                jti: None,
                exp,
                iat: None,
                claims: Claims::default(),
                kid: None,
            };
            assert_eq!(principal.remaining(Duration::from_secs(30)), FAR_FUTURE);
            assert!(principal.expires_at(Duration::MAX) > tokio::time::Instant::now());
            let expiry = UntilExpiry;
            let cached = moka::Expiry::expire_after_create(
                &expiry,
                &[0; 32],
                &Arc::new(principal),
                std::time::Instant::now(),
            );
            assert_eq!(cached, Some(FAR_FUTURE));
        }
        let past = Principal {
            sub: None,
            jti: None,
            exp: 1,
            iat: None,
            claims: Claims::default(),
            kid: None,
        };
        assert_eq!(past.remaining(Duration::from_secs(30)), Duration::ZERO);
    }

    #[test]
    fn token_lifetimes_are_measured_from_iat_or_from_now() {
        use crate::config::{OnExpiry, Transport};
        let principal = |exp: u64, iat: Option<Value>| {
            let mut claims = Map::new();
            claims.insert("exp".into(), exp.into());
            if let Some(iat) = iat {
                claims.insert("iat".into(), iat);
            }
            let json = Value::Object(claims).to_string();
            Principal::read(Claims::from(json.as_str()), None).expect("whole-second exp")
        };
        let now = 1_000_000;
        let hour = 3600;
        let at = |secs: u64| Some(Value::from(secs));
        assert_eq!(
            lifetime(&principal(now + 2 * hour, at(now)), now),
            Duration::from_secs(2 * hour)
        );
        // Issued an hour ago, half an hour left: an hour and a half.
        assert_eq!(
            lifetime(&principal(now + hour / 2, at(now - hour)), now),
            Duration::from_secs(hour * 3 / 2)
        );
        // Without iat, or with one that is no whole number of seconds: from now.
        for iat in [None, Some(Value::from("yesterday")), Some(Value::from(1.5))] {
            assert_eq!(
                lifetime(&principal(now + hour, iat), now),
                Duration::from_secs(hour)
            );
        }
        // An iat still to come does not shorten what the token has left.
        assert_eq!(
            lifetime(&principal(now + 2 * hour, at(now + 2 * hour - 1)), now),
            Duration::from_secs(2 * hour)
        );
        // Already expired: nothing left (the expiry check refuses it on its own).
        assert_eq!(lifetime(&principal(now - 1, at(now)), now), Duration::ZERO);
        let mut auth = Auth {
            provider: 0,
            token_from: vec![Transport::Header],
            query_param: "access_token".into(),
            subprotocol_marker: "bearer".into(),
            cookie_name: "access_token".into(),
            require_claims: Vec::new(),
            forward_claims: Vec::new(),
            on_expiry: OnExpiry::Close,
            max_token_lifetime: None,
            refresh_prefix: None,
        };
        let long = principal(super::now() + 2 * hour, None);
        let short = principal(super::now() + hour / 2, None);
        assert_eq!(check_lifetime(&auth, &long), Ok(()), "no ceiling");
        auth.max_token_lifetime = Some(Duration::from_secs(hour));
        assert_eq!(
            check_lifetime(&auth, &long),
            Err(Error::InvalidToken("token_lifetime"))
        );
        assert_eq!(check_lifetime(&auth, &short), Ok(()));
    }

    #[test]
    fn json_depth_counts_outside_strings() {
        assert_eq!(json_depth(br#"{"a":"[[[[","b":[1,[2]]}"#), Some(3));
        assert_eq!(json_depth(br#"{"a":"\"}"}"#), Some(1));
        assert_eq!(json_depth(b"{]"), Some(1));
        assert_eq!(json_depth(b"}"), None);
        assert_eq!(json_depth(b"{"), None);
    }

    #[test]
    fn claim_rules_and_forwarding() {
        use crate::config::{OnExpiry, Transport};
        let auth = Auth {
            provider: 0,
            token_from: vec![Transport::Header],
            query_param: "access_token".into(),
            subprotocol_marker: "bearer".into(),
            cookie_name: "access_token".into(),
            require_claims: vec![
                ("scope".into(), vec!["chat:read".into()]),
                ("roles".into(), vec!["user".into()]),
            ],
            forward_claims: vec![
                ("sub".into(), HeaderName::from_static("x-auth-subject")),
                ("roles".into(), HeaderName::from_static("x-auth-roles")),
            ],
            on_expiry: OnExpiry::Close,
            max_token_lifetime: None,
            refresh_prefix: None,
        };
        let claims = |json: &str| serde_json::from_str::<Map<String, Value>>(json).expect("json");
        let ok = claims(r#"{"sub":"alice","scope":"chat:read chat:write","roles":["user",7]}"#);
        assert_eq!(check_claims(&auth, &ok), Ok(()));
        let forwarded = forward_headers(&auth, &ok).expect("forwardable");
        assert_eq!(forwarded[0].1, "alice");
        assert_eq!(forwarded[1].1, "user,7");
        assert_eq!(
            check_claims(&auth, &claims(r#"{"scope":"chat:readx","roles":["user"]}"#)),
            Err(Error::InsufficientScope)
        );
        assert_eq!(
            check_claims(&auth, &claims(r#"{"scope":"chat:read"}"#)),
            Err(Error::InsufficientScope)
        );
        assert!(forward_headers(&auth, &claims(r#"{"sub":"a\nb"}"#)).is_err());
        assert!(forward_headers(&auth, &claims(r#"{"sub":{"x":1}}"#)).is_err());
        // Found by the `jwt_verify` fuzz target (fuzz/regressions/jwt_verify/): a tab in a
        // claim was forwarded; HTTP parsers trim tabs and spaces at the ends, so a signed
        // `sub` of "\tadmin" or " admin" would read as "admin" at the backend. Commas inside
        // array elements would read as two elements.
        for bad in [
            r#"{"sub":"a\\\n\\\true\\lice"}"#,
            r#"{"sub":"\tadmin"}"#,
            r#"{"sub":" admin"}"#,
            r#"{"sub":"admin "}"#,
            r#"{"roles":["user,admin"]}"#,
            r#"{"roles":[" admin"]}"#,
        ] {
            assert_eq!(
                forward_headers(&auth, &claims(bad)).map(|h| h.len()),
                Err(Error::InvalidToken("claim_unforwardable")),
                "{bad}"
            );
        }
        let spaced = forward_headers(&auth, &claims(r#"{"sub":"Ann Lee","roles":["a b"]}"#));
        assert_eq!(spaced.expect("forwardable")[1].1, "a b");
    }
}
