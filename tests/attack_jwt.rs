//! The JWT attack matrix, one test per family. Every attack must be refused with the status
//! and `WWW-Authenticate` error docs/contract.md names, counted under its
//! `wsgate_auth_failures_total` reason, and never reach the backend (a raw backend counts
//! every connection). Each family also sends an honest token, which must reach the backend,
//! so a proxy that refused everything would fail.
//!
//! The backend answers every request with a 418, which the proxy relays as it is: a 418 at
//! the client means "authenticated and forwarded".

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

mod algorithms;
mod claims;
mod header;
mod shape;
mod signatures;

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
    /// `auth_failures_total` per reason after the last request.
    failures: BTreeMap<String, f64>,
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
            failures: BTreeMap::new(),
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
                // Without close_notify, or reset after the answer: what was read stands.
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
        // Exactly this reason counted once more, and nothing else (none for 418 and 431).
        let mut expected = self.failures.clone();
        if let Some(reason) = reason {
            *expected.entry(reason.to_owned()).or_default() += 1.0;
        }
        let counted = auth_failures(&self.proxy.metrics().await);
        if counted != expected {
            self.problems.push(format!(
                "{name}: auth_failures_total {counted:?}, expected {expected:?}"
            ));
        }
        self.failures = counted;
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

/// `wsgate_auth_failures_total` of route `echo`, per reason.
fn auth_failures(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(r#"wsgate_auth_failures_total{route="echo",reason=""#))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
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
