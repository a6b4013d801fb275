//! The JWT attack matrix, one test per family. Every attack must be refused with the status
//! and `WWW-Authenticate` error DESIGN.md names, counted under its
//! `wsgate_auth_failures_total` reason, and never reach the backend (a raw backend counts
//! every connection). Each family also sends an honest token, which must reach the backend,
//! so a proxy that refused everything would fail.
//!
//! The backend answers every request with a 418, which the proxy relays as it is: a 418 at
//! the client means "authenticated and forwarded".

use std::collections::BTreeMap;
use std::io::ErrorKind;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// What the backend answers to anything.
const TEAPOT: &[u8] =
    b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const ADMIN_TOKEN: &str = "attack-jwt-admin-token";

/// Where the token travels.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    Query,
    Subprotocol,
    Cookie,
}

const EVERY_TRANSPORT: [Via; 4] = [Via::Header, Via::Query, Via::Subprotocol, Via::Cookie];

impl Via {
    fn request(self, token: &str) -> Vec<u8> {
        match self {
            Via::Header => upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n")),
            Via::Query => upgrade_request(&format!("/echo?access_token={token}"), ""),
            Via::Subprotocol => upgrade_request(
                "/echo",
                &format!("Sec-WebSocket-Protocol: chat, bearer, {token}\r\n"),
            ),
            Via::Cookie => upgrade_request("/echo", &format!("Cookie: access_token={token}\r\n")),
        }
    }
}

/// The answer an attack must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 401 `error="invalid_token"`, counted under this reason.
    InvalidToken(&'static str),
    /// 401 `error="invalid_request"`.
    InvalidRequest,
    /// 403 `error="insufficient_scope"`.
    InsufficientScope,
    /// 431: the request head is over the cap before any token is looked at.
    TooLarge,
    /// Authenticated and forwarded: the backend's 418.
    Admitted,
}

/// A proxy whose route takes a token in every transport, in front of a counting backend.
struct Arena {
    proxy: TestProxy,
    backend: RawBackend,
    /// Requests the backend must have seen (the admitted ones).
    admitted: usize,
    /// Expected `auth_failures_total` per reason.
    reasons: BTreeMap<String, f64>,
    /// Every mismatch, reported together at the end.
    problems: Vec<String>,
}

impl Arena {
    async fn start() -> Arena {
        Arena::start_with("", "").await
    }

    /// `auth_extra`: YAML under the route's `auth:`; `provider_extra`: under the provider.
    async fn start_with(auth_extra: &str, provider_extra: &str) -> Arena {
        let backend = RawBackend::start(Some(TEAPOT.to_vec())).await;
        let routes = format!(
            "  - name: echo\n    match:\n      path: /echo\n    backend: ws://{}/\n    auth:\n      provider: test\n\
             \x20     token_from: [header, subprotocol, query, cookie]\n{auth_extra}\
             \x20   origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n\
             \x20   limits:\n      handshake_rate_per_ip: 100000/s\n      handshake_burst_per_ip: 100000\n",
            backend.addr
        );
        let proxy = TestProxy::start_full(Setup {
            admin_extra: format!("  token: {ADMIN_TOKEN}\n"),
            provider_extra: provider_extra.to_owned(),
            routes,
            ..Setup::default()
        })
        .await;
        Arena {
            proxy,
            backend,
            admitted: 0,
            reasons: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Sends `request` while reading the answer (a large request may be answered before it
    /// is all written); returns everything the proxy sent until it closed.
    async fn send(&self, request: Vec<u8>) -> String {
        let tls = self.proxy.tls().await;
        let (mut read, mut write) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            // The proxy may close before reading it all; the answer is what counts.
            let _ = write.write_all(&request).await;
            write
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match within(read.read(&mut buf)).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if answer.is_empty() && e.kind() != ErrorKind::UnexpectedEof => {
                    answer.extend_from_slice(format!("(read failed: {e})").as_bytes());
                    break;
                }
                Err(_) => break,
            }
        }
        // Dropping the write half closes the connection for good.
        drop(within(writer).await);
        leak::observe("response", &answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Sends `token` in `via` and records any way the answer differs from `expect`.
    async fn check(&mut self, name: &str, via: Via, token: &str, expect: Expect) {
        let answer = self.send(via.request(token)).await;
        self.judge(&format!("{name} ({via:?})"), &answer, expect)
            .await;
    }

    /// Sends a whole hand-written request.
    async fn check_request(&mut self, name: &str, request: Vec<u8>, expect: Expect) {
        let answer = self.send(request).await;
        self.judge(name, &answer, expect).await;
    }

    async fn judge(&mut self, name: &str, answer: &str, expect: Expect) {
        let head = answer.lines().next().unwrap_or("(no answer)").to_owned();
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        let challenge = |error: &str| answer.contains(&format!("error=\"{error}\""));
        let (status, ok, reason) = match expect {
            Expect::InvalidToken(reason) => (401, challenge("invalid_token"), Some(reason)),
            Expect::InvalidRequest => (401, challenge("invalid_request"), Some("invalid_request")),
            Expect::InsufficientScope => (
                403,
                challenge("insufficient_scope"),
                Some("insufficient_scope"),
            ),
            Expect::TooLarge => (431, true, None),
            Expect::Admitted => (418, true, None),
        };
        if code != Some(status) || !ok {
            let challenge = answer
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate"))
                .unwrap_or("");
            self.problems.push(format!(
                "{name}: expected {expect:?}, got {head:?} {challenge:?}"
            ));
        }
        if expect == Expect::Admitted {
            self.admitted += 1;
        }
        let reached = self.backend.connections();
        if reached != self.admitted {
            self.problems.push(format!(
                "{name}: the backend has {reached} connections, {} expected",
                self.admitted
            ));
            self.admitted = reached;
        }
        if let Some(reason) = reason {
            *self.reasons.entry(reason.to_owned()).or_default() += 1.0;
            let metrics = self.proxy.metrics().await;
            for (reason, expected) in &self.reasons {
                let series =
                    format!(r#"wsgate_auth_failures_total{{route="echo",reason="{reason}"}}"#);
                let counted = sample(&metrics, &series);
                if counted != *expected {
                    let others: Vec<&str> = metrics
                        .lines()
                        .filter(|l| l.starts_with("wsgate_auth_failures_total{"))
                        .collect();
                    self.problems.push(format!(
                        "{name}: {series} is {counted}, {expected} expected; {others:?}"
                    ));
                    // Resynchronise, so one mismatch is reported once.
                    self.reasons = BTreeMap::new();
                    for line in others {
                        let reason = line
                            .split("reason=\"")
                            .nth(1)
                            .and_then(|r| r.split('"').next())
                            .unwrap_or("");
                        let value = line
                            .rsplit(' ')
                            .next()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0.0);
                        self.reasons.insert(reason.to_owned(), value);
                    }
                    break;
                }
            }
        }
    }

    /// Fails with every mismatch seen, then shuts the proxy down.
    async fn finish(self) {
        assert!(
            self.problems.is_empty(),
            "{} problem(s):\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
        assert!(self.admitted > 0, "no control case was admitted");
        self.proxy.shutdown().await;
    }
}

/// A token assembled by hand from already-encoded segments (registered with the leakage
/// check like every minted token).
fn assemble(segments: &[&str]) -> String {
    let token = segments.join(".");
    leak::register(&token);
    token
}

fn rsa() -> &'static TestKey {
    &keys()[0]
}

fn ec() -> &'static TestKey {
    &keys()[2]
}

/// The attacker's own RSA key (not in the JWKS).
fn attacker() -> &'static TestKey {
    &keys()[3]
}

fn claims_with(field: &str, value: Value) -> Value {
    let mut claims = claims("alice");
    claims[field] = value;
    claims
}

/// The three segments of a token.
fn split(token: &str) -> (&str, &str, &str) {
    let mut parts = token.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s)) => (h, c, s),
        _ => panic!("not a three-segment token"),
    }
}

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused() {
    let mut arena = Arena::start().await;
    let payload = b64(&claims("alice"));
    let honest = sign(rsa(), &claims("alice"));
    let (_, _, rs_signature) = split(&honest);
    let algs = [
        json!("none"),
        json!("None"),
        json!("NONE"),
        json!("nOnE"),
        json!("none "),
        json!(" none"),
        json!("none\u{0}"),
        json!(""),
        json!(null),
        json!(["none"]),
        json!({"none": true}),
    ];
    for via in EVERY_TRANSPORT {
        for alg in &algs {
            let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": rsa().kid}));
            // No signature at all, junk, and the honest RS256 signature of other input.
            for signature in ["", "AAAAAAAAAAAAAAAAAAAAAA", rs_signature] {
                let token = assemble(&[&header, &payload, signature]);
                arena
                    .check(
                        &format!("alg {alg} sig {}", signature.len()),
                        via,
                        &token,
                        Expect::InvalidToken("malformed"),
                    )
                    .await;
            }
            // The header signed for real by the provider's key: still not RS256.
            let token = sign_raw(
                rsa(),
                &json!({"alg": alg, "kid": rsa().kid}),
                &claims("alice"),
            );
            arena
                .check(
                    &format!("alg {alg}, signed"),
                    via,
                    &token,
                    Expect::InvalidToken("malformed"),
                )
                .await;
        }
        // No alg member at all.
        let token = sign_raw(rsa(), &json!({"kid": rsa().kid}), &claims("alice"));
        arena
            .check("no alg", via, &token, Expect::InvalidToken("malformed"))
            .await;
        arena.check("control", via, &honest, Expect::Admitted).await;
    }
    arena.finish().await;
}

#[tokio::test]
async fn stripped_and_tampered_signatures_are_refused() {
    let mut arena = Arena::start().await;
    let honest = sign(rsa(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let other = sign(rsa(), &claims("bob"));
    let (_, other_payload, other_signature) = split(&other);
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    flipped[17] ^= 0x01;
    let flipped = URL_SAFE_NO_PAD.encode(&flipped);
    let standard = STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).expect("base64url"));
    // Re-encoded, so the text stays canonical base64url whatever the signature's bits.
    let short = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let short = URL_SAFE_NO_PAD.encode(&short[..short.len() - 3]);
    let attacks = [
        (
            "stripped, trailing dot",
            format!("{header}.{payload}."),
            "malformed",
        ),
        (
            "stripped, two segments",
            format!("{header}.{payload}"),
            "malformed",
        ),
        (
            "signature of another token",
            format!("{header}.{payload}.{other_signature}"),
            "bad_signature",
        ),
        (
            "claims of another token",
            format!("{header}.{other_payload}.{signature}"),
            "bad_signature",
        ),
        (
            "one bit flipped",
            format!("{header}.{payload}.{flipped}"),
            "bad_signature",
        ),
        (
            "signature three bytes short",
            format!("{header}.{payload}.{short}"),
            "bad_signature",
        ),
        (
            "signature doubled",
            format!("{header}.{payload}.{signature}{signature}"),
            "bad_signature",
        ),
        (
            "standard base64 with padding",
            format!("{header}.{payload}.{standard}"),
            "malformed",
        ),
        (
            "empty header",
            format!(".{payload}.{signature}"),
            "malformed",
        ),
        (
            "empty claims",
            format!("{header}..{signature}"),
            "malformed",
        ),
    ];
    for (name, token, reason) in &attacks {
        leak::register(token);
        arena
            .check(name, Via::Header, token, Expect::InvalidToken(reason))
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    arena.finish().await;
}

/// DER: one tag-length-value element.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        len if len < 0x80 => out.push(len as u8),
        len if len < 0x100 => out.extend([0x81, len as u8]),
        len => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo around a raw public key.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    der(0x30, &[der(0x30, algorithm), der(0x03, &bits)].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Every form of a public key someone might feed to HMAC as the secret.
fn public_key_forms(key: &TestKey) -> Vec<(String, Vec<u8>)> {
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const EC_P256: &[u8] = &[
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
        0x3d, 0x03, 0x01, 0x07,
    ];
    let algorithm = if key.jwk["kty"] == "RSA" {
        RSA_ENCRYPTION
    } else {
        EC_P256
    };
    let spki = spki(algorithm, &key.public);
    let mut forms = vec![
        (
            "raw public key (DER / EC point)".to_owned(),
            key.public.clone(),
        ),
        ("SPKI DER".to_owned(), spki.clone()),
        ("SPKI PEM".to_owned(), pem("PUBLIC KEY", &spki).into_bytes()),
        (
            "SPKI PEM, no final newline".to_owned(),
            pem("PUBLIC KEY", &spki).trim_end().as_bytes().to_vec(),
        ),
        ("JWK".to_owned(), key.jwk.to_string().into_bytes()),
        (
            "JWKS".to_owned(),
            json!({"keys": [key.jwk]}).to_string().into_bytes(),
        ),
    ];
    if key.jwk["kty"] == "RSA" {
        forms.push((
            "PKCS#1 PEM".to_owned(),
            pem("RSA PUBLIC KEY", &key.public).into_bytes(),
        ));
        let n = key.jwk["n"].as_str().expect("n");
        forms.push(("modulus".to_owned(), URL_SAFE_NO_PAD.decode(n).expect("n")));
    }
    forms
}

/// An HMAC-signed token (HS256, HS384 or HS512) with `secret`.
fn sign_hmac(alg: &str, secret: &[u8], header: &Value, claims: &Value) -> String {
    let algorithm = match alg {
        "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
        "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
        _ => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let input = format!("{}.{}", b64(header), b64(claims));
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(algorithm, secret),
        input.as_bytes(),
    );
    assemble(&[&input, &URL_SAFE_NO_PAD.encode(tag.as_ref())])
}

#[tokio::test]
async fn hmac_with_the_public_key_as_the_secret_is_refused() {
    let mut arena = Arena::start().await;
    for key in [rsa(), ec()] {
        for (form, secret) in public_key_forms(key) {
            for alg in ["HS256", "HS384", "HS512"] {
                let token = sign_hmac(
                    alg,
                    &secret,
                    &json!({"alg": alg, "typ": "JWT", "kid": key.kid}),
                    &claims("alice"),
                );
                arena
                    .check(
                        &format!("{alg} with {}'s {form}", key.kid),
                        Via::Header,
                        &token,
                        Expect::InvalidToken("bad_algorithm"),
                    )
                    .await;
            }
        }
        arena
            .check(
                "control",
                Via::Header,
                &sign(key, &claims("alice")),
                Expect::Admitted,
            )
            .await;
    }
    arena.finish().await;
}

/// The order of the P-256 group.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `a - b` for 256-bit big-endian numbers, `a >= b`.
fn sub256(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "a < b");
    out
}

/// An ASN.1 INTEGER for an unsigned big-endian number.
fn der_uint(n: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        vec![0u8]
    } else {
        Vec::new()
    };
    content.extend(trimmed);
    der(0x02, &content)
}

#[tokio::test]
async fn ecdsa_signature_edge_cases() {
    let mut arena = Arena::start_with("", "").await;
    let honest = sign(ec(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let raw = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    assert_eq!(raw.len(), 64, "ES256 signatures are r || s");
    let r: [u8; 32] = raw[..32].try_into().expect("r");
    let s: [u8; 32] = raw[32..].try_into().expect("s");
    let zero = [0u8; 32];
    let with =
        |r: &[u8], s: &[u8]| assemble(&[header, payload, &URL_SAFE_NO_PAD.encode([r, s].concat())]);
    let der_signature = der(0x30, &[der_uint(&r), der_uint(&s)].concat());
    let attacks = [
        ("r = s = 0", with(&zero, &zero)),
        ("r = 0", with(&zero, &s)),
        ("s = 0", with(&r, &zero)),
        ("r = n", with(&P256_N, &s)),
        ("s = n", with(&r, &P256_N)),
        ("r = s = n", with(&P256_N, &P256_N)),
        ("all ones", with(&[0xff; 32], &[0xff; 32])),
        ("r and s swapped", with(&s, &r)),
        (
            "DER-encoded",
            assemble(&[header, payload, &URL_SAFE_NO_PAD.encode(&der_signature)]),
        ),
        (
            "63 bytes",
            assemble(&[header, payload, &URL_SAFE_NO_PAD.encode(&raw[..63])]),
        ),
        (
            "65 bytes",
            assemble(&[
                header,
                payload,
                &URL_SAFE_NO_PAD.encode([&raw[..], &[0]].concat()),
            ]),
        ),
    ];
    for (name, token) in &attacks {
        arena
            .check(
                name,
                Via::Header,
                token,
                Expect::InvalidToken("bad_signature"),
            )
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    // (r, n - s) verifies for the same key and claims: ECDSA signatures are malleable and
    // ES256 (RFC 7518) does not ask for low S; signers produce either half, so refusing one
    // half would refuse honest tokens. The twin is the same principal: revoking its jti
    // refuses both forms.
    let twin = with(&r, &sub256(&P256_N, &s));
    arena
        .check("high/low-S twin", Via::Header, &twin, Expect::Admitted)
        .await;
    let mut revocable = claims("carol");
    revocable["jti"] = json!("attack-jwt-malleable");
    let carol = sign(ec(), &revocable);
    let (h, p, sig) = split(&carol);
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
    let s2: [u8; 32] = sig[32..].try_into().expect("s");
    let carol_twin = assemble(&[
        h,
        p,
        &URL_SAFE_NO_PAD.encode([&sig[..32], &sub256(&P256_N, &s2)].concat()),
    ]);
    let (code, body) = admin_call(
        arena.proxy.admin,
        "POST",
        "/admin/revoke",
        Some(ADMIN_TOKEN),
        r#"{"jti": "attack-jwt-malleable"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for token in [&carol, &carol_twin] {
        arena
            .check(
                "revoked jti, either S",
                Via::Header,
                token,
                Expect::InvalidToken("revoked"),
            )
            .await;
    }
    arena.finish().await;
}

/// A listener that must never be connected to: counts what is pending on it, without
/// accepting in the background (so there is no race with a connection still in flight).
struct Lure(std::net::TcpListener);

impl Lure {
    fn start() -> Lure {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind lure");
        listener.set_nonblocking(true).expect("nonblocking");
        Lure(listener)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.local_addr().expect("addr"))
    }

    /// Connections made to it so far.
    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

#[tokio::test]
async fn header_supplied_keys_are_never_used_or_fetched() {
    let mut arena = Arena::start().await;
    let lure = Lure::start();
    let jwks_url = arena.proxy.jwks.url.clone();
    let x5c = STANDARD.encode(Pki::new().ca.as_ref());
    let headers = [
        ("jwk: the attacker's key", json!({"jwk": attacker().jwk})),
        ("jwk: the provider's own key", json!({"jwk": rsa().jwk})),
        ("jku: a listener", json!({"jku": lure.url("/jwks.json")})),
        ("jku: the provider's own JWKS", json!({"jku": jwks_url})),
        ("x5u: a listener", json!({"x5u": lure.url("/cert.pem")})),
        ("x5c: a certificate chain", json!({"x5c": [x5c]})),
        (
            "jku and x5u",
            json!({"jku": lure.url("/a"), "x5u": lure.url("/b")}),
        ),
    ];
    for signer in [attacker(), rsa()] {
        for (name, extra) in &headers {
            let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid});
            for (k, v) in extra.as_object().expect("object") {
                header[k] = v.clone();
            }
            let token = sign_raw(signer, &header, &claims("alice"));
            arena
                .check(
                    &format!("{name}, signed by {}", signer.kid),
                    Via::Header,
                    &token,
                    Expect::InvalidToken("header_key"),
                )
                .await;
        }
    }
    // A kid that is a URL is only a name.
    let token = sign_raw(
        attacker(),
        &json!({"alg": "RS256", "kid": lure.url("/jwks.json")}),
        &claims("alice"),
    );
    arena
        .check(
            "kid: a listener's URL",
            Via::Header,
            &token,
            Expect::InvalidToken("unknown_key"),
        )
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    assert_eq!(lure.connections(), 0, "a header-supplied URL was fetched");
    arena.finish().await;
}

#[tokio::test]
async fn kid_tricks_find_no_key_and_refetch_at_most_once() {
    let mut arena = Arena::start().await;
    let fetched = arena.proxy.jwks.requests();
    let kids = [
        "../../../../etc/passwd",
        "/dev/null",
        "..\\..\\..\\windows\\win.ini",
        "rsa-1/../rsa-1",
        "rsa-1\u{0}",
        "rsa-1 ",
        " rsa-1",
        "RSA-1",
        "rsa-1\nrsa-1",
        "' OR '1'='1",
        "%72sa-1",
        "ec-1",
        "",
    ];
    for kid in kids {
        let token = sign_raw(
            rsa(),
            &json!({"alg": "RS256", "kid": kid}),
            &claims("alice"),
        );
        arena
            .check(
                &format!("kid {kid:?}"),
                Via::Header,
                &token,
                Expect::InvalidToken("unknown_key"),
            )
            .await;
    }
    for (kid, reason) in [(json!(7), "malformed"), (json!(["rsa-1"]), "malformed")] {
        let token = sign_raw(
            rsa(),
            &json!({"alg": "RS256", "kid": kid}),
            &claims("alice"),
        );
        arena
            .check(
                &format!("kid {kid}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    // 8 KiB: under the token cap, so it is looked up; 64 KiB: over the request head cap in
    // a header, over the token cap elsewhere.
    let long = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": "k".repeat(8 * 1024)}),
        &claims("alice"),
    );
    arena
        .check(
            "8 KiB kid",
            Via::Header,
            &long,
            Expect::InvalidToken("unknown_key"),
        )
        .await;
    let huge = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": "k".repeat(64 * 1024)}),
        &claims("alice"),
    );
    for via in EVERY_TRANSPORT {
        arena
            .check("64 KiB kid", via, &huge, Expect::TooLarge)
            .await;
    }
    // A null kid is no kid: the provider's only RS256 key answers (with two it would not).
    let token = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": null}),
        &claims("alice"),
    );
    arena
        .check("control: kid null", Via::Header, &token, Expect::Admitted)
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    let refetches = arena.proxy.jwks.requests() - fetched;
    assert!(
        refetches <= 1,
        "unknown kids made {refetches} JWKS requests within one refetch cooldown"
    );
    arena.finish().await;
}

#[tokio::test]
async fn crit_extensions_are_refused() {
    let mut arena = Arena::start().await;
    let cases = [
        (json!(["exp"]), "unknown_crit"),
        (json!(["b64"]), "unknown_crit"),
        (json!(["https://example.com/ext"]), "unknown_crit"),
        (json!([]), "unknown_crit"),
        (json!("exp"), "malformed"),
    ];
    for (crit, reason) in cases {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": rsa().kid, "crit": crit});
        if crit == json!(["b64"]) {
            header["b64"] = json!(false);
        }
        let token = sign_raw(rsa(), &header, &claims("alice"));
        arena
            .check(
                &format!("crit {crit}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    // A null member is an absent one (as for every optional header member).
    let token = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": rsa().kid, "crit": null}),
        &claims("alice"),
    );
    arena
        .check("control: crit null", Via::Header, &token, Expect::Admitted)
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    arena.finish().await;
}

#[tokio::test]
async fn exp_and_nbf_of_the_wrong_type_are_refused() {
    let mut arena = Arena::start().await;
    let soon = now() + 300;
    let past = now() - 60;
    let exps = [
        ("string", json!(soon.to_string()), "missing_claim"),
        ("float", json!(soon as f64 + 0.5), "malformed"),
        ("float without fraction", json!(soon as f64), "malformed"),
        ("1e30", json!(1e30), "missing_claim"),
        ("u64::MAX", json!(u64::MAX), "malformed"),
        ("2^63", json!(1u64 << 63), "malformed"),
        ("year 10000", json!(253_402_300_800u64), "malformed"),
        ("negative", json!(-1), "missing_claim"),
        ("zero", json!(0), "expired"),
        ("null", json!(null), "missing_claim"),
        ("true", json!(true), "missing_claim"),
        // Past jsonwebtoken's lenient number parser only as far as the JSON itself breaks.
        ("array", json!([soon]), "malformed"),
        ("object", json!({"$date": soon}), "malformed"),
    ];
    for (name, exp, reason) in exps {
        let token = sign(rsa(), &claims_with("exp", exp));
        arena
            .check(
                &format!("exp {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    let nbfs = [
        ("string", json!(past.to_string())),
        ("float", json!(past as f64 + 0.5)),
        ("1e30", json!(1e30)),
        ("negative", json!(-1)),
        ("null", json!(null)),
        ("true", json!(true)),
        ("array", json!([past])),
    ];
    for (name, nbf) in nbfs {
        let token = sign(rsa(), &claims_with("nbf", nbf));
        arena
            .check(
                &format!("nbf {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken("malformed"),
            )
            .await;
    }
    for (name, nbf) in [
        ("in an hour", json!(now() + 3600)),
        ("u64::MAX", json!(u64::MAX)),
    ] {
        let token = sign(rsa(), &claims_with("nbf", nbf));
        arena
            .check(
                &format!("nbf {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken("not_yet_valid"),
            )
            .await;
    }
    let token = sign(rsa(), &claims_with("exp", json!(253_402_300_799u64)));
    arena
        .check(
            "control: exp 9999-12-31",
            Via::Header,
            &token,
            Expect::Admitted,
        )
        .await;
    let token = sign(rsa(), &claims_with("nbf", json!(past)));
    arena
        .check(
            "control: nbf in the past",
            Via::Header,
            &token,
            Expect::Admitted,
        )
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    arena.finish().await;
}

#[tokio::test]
async fn duplicate_json_members_are_refused() {
    let mut arena =
        Arena::start_with("      require_claims:\n        scope: [chat:admin]\n", "").await;
    let kid = &rsa().kid;
    let (soon, past) = (now() + 300, now() - 600);
    let body = |extra: &str| {
        format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","jti":"dup","exp":{soon},{extra}}}"#
        )
    };
    let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
    let admin = body(r#""scope":"chat:admin""#);
    let cases = [
        (
            "two alg, none last",
            format!(r#"{{"alg":"RS256","kid":"{kid}","alg":"none"}}"#),
            admin.clone(),
        ),
        (
            "two alg, none first",
            format!(r#"{{"alg":"none","kid":"{kid}","alg":"RS256"}}"#),
            admin.clone(),
        ),
        (
            "two kid",
            format!(r#"{{"alg":"RS256","kid":"nope","kid":"{kid}"}}"#),
            admin.clone(),
        ),
        (
            "two typ",
            format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
            admin.clone(),
        ),
        (
            "two exp, expired last",
            header.clone(),
            body(&format!(r#""scope":"chat:admin","exp":{past}"#)),
        ),
        (
            "two exp, expired first",
            header.clone(),
            format!(
                r#"{{"exp":{past},"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{soon},"scope":"chat:admin"}}"#
            ),
        ),
        (
            "two sub",
            header.clone(),
            body(r#""scope":"chat:admin","sub":"root""#),
        ),
        (
            "two scope, the wider last",
            header.clone(),
            body(r#""scope":"chat:read","scope":"chat:admin""#),
        ),
        (
            "two scope, the wider first",
            header.clone(),
            body(r#""scope":"chat:admin","scope":"chat:read""#),
        ),
        (
            "two aud",
            header.clone(),
            body(r#""scope":"chat:admin","aud":"other""#),
        ),
        (
            "escaped twin",
            header.clone(),
            body(r#""scope":"chat:read","sc\u006fpe":"chat:admin""#),
        ),
        (
            "nested twin",
            header.clone(),
            body(r#""scope":"chat:admin","ctx":{"a":1,"a":2}"#),
        ),
    ];
    for (name, header, claims) in &cases {
        let token = sign_text(rsa(), header, claims);
        arena
            .check(name, Via::Header, &token, Expect::InvalidToken("malformed"))
            .await;
    }
    let token = sign_text(rsa(), &header, &body(r#""scope":"chat:read""#));
    arena
        .check(
            "control: a narrower scope",
            Via::Header,
            &token,
            Expect::InsufficientScope,
        )
        .await;
    let token = sign_text(rsa(), &header, &admin);
    arena
        .check("control", Via::Header, &token, Expect::Admitted)
        .await;
    arena.finish().await;
}

#[tokio::test]
async fn jwe_and_other_segment_counts_are_refused() {
    let mut arena = Arena::start().await;
    let honest = sign(rsa(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let jwe_header = b64(&json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa().kid}));
    let random =
        |n: usize| URL_SAFE_NO_PAD.encode((0..n).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
    let (key, iv, text, tag) = (random(256), random(12), random(64), random(16));
    let tokens = [
        (
            "5-segment JWE",
            assemble(&[&jwe_header, &key, &iv, &text, &tag]),
        ),
        (
            "JWE, direct encryption",
            assemble(&[
                &b64(&json!({"alg": "dir", "enc": "A256GCM"})),
                "",
                &iv,
                &text,
                &tag,
            ]),
        ),
        (
            "a valid JWS then two more segments",
            assemble(&[header, payload, signature, &iv, &tag]),
        ),
        (
            "four segments",
            assemble(&[header, payload, signature, &tag]),
        ),
        ("one segment", assemble(&[payload])),
        ("only dots", "....".to_owned()),
        ("a valid JWS twice", assemble(&[&honest, &honest])),
    ];
    for (name, token) in &tokens {
        arena
            .check(name, Via::Header, token, Expect::InvalidToken("malformed"))
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    arena.finish().await;
}

#[tokio::test]
async fn oversized_tokens_in_every_transport() {
    let mut arena = Arena::start().await;
    // 1 MiB: the request head is over its 32 KiB cap, which is checked before the request is
    // routed, so every transport gets the same 431 (a status line has no room for finer).
    let mib = sign(rsa(), &claims_with("pad", json!("p".repeat(1 << 20))));
    // 17 KiB: within the head cap, over the 16 KiB token cap.
    let big = sign(rsa(), &claims_with("pad", json!("p".repeat(17 * 1024))));
    for via in EVERY_TRANSPORT {
        arena
            .check("1 MiB token", via, &mib, Expect::TooLarge)
            .await;
        arena
            .check("17 KiB token", via, &big, Expect::InvalidToken("too_long"))
            .await;
        arena
            .check(
                "control",
                via,
                &sign(rsa(), &claims("alice")),
                Expect::Admitted,
            )
            .await;
    }
    arena.finish().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let mut arena = Arena::start().await;
    let alice = sign(rsa(), &claims("alice"));
    let bob = sign(rsa(), &claims("bob"));
    let cases = [
        (
            "the same token twice",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "two different tokens",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {bob}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "a token and junk",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer x.y.z\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "junk and a token",
            format!("Authorization: Bearer x.y.z\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "Bearer and Basic",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Basic YTpi\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "Basic and Bearer",
            format!("Authorization: Basic YTpi\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "a token and an empty header",
            format!("Authorization: Bearer {alice}\r\nAuthorization: \r\n"),
            Expect::InvalidRequest,
        ),
        (
            "differently cased names",
            format!("authorization: Bearer {alice}\r\nAUTHORIZATION: Bearer {bob}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "two tokens in one header",
            format!("Authorization: Bearer {alice}, Bearer {bob}\r\n"),
            Expect::InvalidToken("malformed"),
        ),
        (
            "the header and a different query token",
            format!("Authorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
    ];
    for (i, (name, headers, expect)) in cases.iter().enumerate() {
        let path = if i == cases.len() - 1 {
            format!("/echo?access_token={bob}")
        } else {
            "/echo".to_owned()
        };
        arena
            .check_request(name, upgrade_request(&path, headers), *expect)
            .await;
    }
    arena
        .check_request(
            "control: the header and the same query token",
            upgrade_request(
                &format!("/echo?access_token={alice}"),
                &format!("Authorization: Bearer {alice}\r\n"),
            ),
            Expect::Admitted,
        )
        .await;
    arena
        .check("control", Via::Header, &alice, Expect::Admitted)
        .await;
    arena.finish().await;
}
