//! Authentication end to end: every transport, the token never reaching the backend, claim
//! rules, identity forwarding, the attack list, and closing sessions when tokens expire.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A route accepting every transport, with an Origin allowlist and `sub` forwarded.
fn all_transports(backend: &str) -> String {
    format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {backend}\n    auth:\n      provider: test\n\
         \x20     token_from: [header, subprotocol, query, cookie]\n      forward_claims:\n        sub: X-Auth-Subject\n\
         \x20   origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n"
    )
}

/// Asserts the backend saw no trace of `token` (whole or any segment) anywhere.
fn assert_token_absent(seen: &SeenRequest, token: &str) {
    let mut everything = seen.uri.clone();
    for (name, value) in &seen.headers {
        everything.push_str(&format!("\n{name}: {value}"));
    }
    for piece in std::iter::once(token).chain(token.split('.')) {
        assert!(
            !everything.contains(piece),
            "the backend saw the token:\n{everything}"
        );
    }
}

#[tokio::test]
async fn every_transport_admits_and_the_backend_never_sees_the_token() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_with("", &all_transports(&backend.url())).await;
    let token = proxy.token.clone();
    let requests = [
        upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {token}\r\nX-Auth-Subject: mallory\r\n"),
        ),
        upgrade_request(
            "/echo",
            &format!("Sec-WebSocket-Protocol: chat.v1, bearer, {token}\r\n"),
        ),
        upgrade_request(&format!("/echo/room?access_token={token}&x=1"), ""),
        upgrade_request(
            "/echo",
            &format!("Cookie: theme=dark; access_token={token}\r\n"),
        ),
    ];
    for request in &requests {
        let head = proxy.raw(request).await;
        assert_eq!(
            status(&head),
            101,
            "{}\n->\n{head}",
            String::from_utf8_lossy(request)
        );
        assert!(!head.contains(&token), "the 101 echoes the token: {head}");
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_token_absent(request, &token);
        assert_eq!(
            request.headers_named("x-auth-subject"),
            ["alice"],
            "spoofed identity header replaced"
        );
    }
    assert_eq!(seen[1].header("sec-websocket-protocol"), Some("chat.v1"));
    assert_eq!(seen[2].uri, "/room?x=1");
    assert_eq!(seen[3].header("cookie"), Some("theme=dark"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn subprotocol_transport_answers_with_the_marker_or_the_backend_choice() {
    // A backend that picks nothing: the 101 names the marker so browsers accept it.
    let plain = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&plain.url()).await;
    let offer = format!("Sec-WebSocket-Protocol: bearer, {}\r\n", proxy.token);
    let head = proxy.raw(&upgrade_request("/echo", &offer)).await;
    assert_eq!(status(&head), 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: bearer\r\n"),
        "{head}"
    );
    assert_eq!(plain.seen()[0].header("sec-websocket-protocol"), None);
    // A backend that picks one of the other entries: that one is returned.
    let chat = EchoBackend::start(&["chat.v1"]).await;
    let proxy2 = TestProxy::start(&chat.url()).await;
    let offer = format!(
        "Sec-WebSocket-Protocol: chat.v1, bearer, {}\r\n",
        proxy2.token
    );
    let head = proxy2.raw(&upgrade_request("/echo", &offer)).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chat.v1\r\n"),
        "{head}"
    );
    proxy.shutdown().await;
    proxy2.shutdown().await;
}

#[tokio::test]
async fn missing_invalid_and_ambiguous_tokens_get_the_right_401() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let other = sign(&keys()[0], &claims("bob"));
    let cases = [
        ("".to_owned(), r#"www-authenticate: bearer realm="wsgate""#),
        (
            "Authorization: Basic YWxpY2U6cHc=\r\n".to_owned(),
            r#"www-authenticate: bearer realm="wsgate""#,
        ),
        (
            "Authorization: Bearer not.a.jwt\r\n".to_owned(),
            r#"error="invalid_token""#,
        ),
        (
            format!(
                "{}Authorization: Bearer {}\r\n",
                proxy.bearer(),
                proxy.token
            ),
            r#"error="invalid_request""#,
        ),
        (
            format!(
                "{}Sec-WebSocket-Protocol: bearer, {other}\r\n",
                proxy.bearer()
            ),
            r#"error="invalid_request""#,
        ),
    ];
    for (headers, challenge) in &cases {
        let answer = proxy.raw(&upgrade_request("/echo", headers)).await;
        assert_eq!(status(&answer), 401, "{headers}\n->\n{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&challenge.to_ascii_lowercase()),
            "{headers}\n->\n{answer}"
        );
    }
    assert_eq!(backend.connections(), 0, "refused before the backend");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_auth_failures_total{route="echo",reason="missing"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_auth_failures_total{route="echo",reason="invalid_request"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert!(!metrics.contains(&proxy.token), "token in metrics");
    proxy.shutdown().await;
}

#[tokio::test]
async fn claim_rules_refuse_with_403_and_admit_when_met() {
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: admin\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n      require_claims:\n        scope: [chat:admin]\n        roles: admin\n    origins: any\n",
        backend.url()
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(answer.contains(r#"error="insufficient_scope""#), "{answer}");
    let mut admin = claims("root");
    admin["scope"] = json!("chat:read chat:admin");
    admin["roles"] = json!(["user", "admin"]);
    let token = sign(&keys()[0], &admin);
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {token}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(
        backend.seen().len(),
        1,
        "only the admitted request reached the backend"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_attack_list_is_refused_before_the_backend() {
    let backend = RawBackend::start(None).await;
    // Header-supplied key URLs must never be fetched: this listener counts connections.
    let lure = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let key = &keys()[0];
    let attacker = &keys()[3];
    let valid = claims("alice");
    let with = |field: &str, value: serde_json::Value| {
        let mut c = valid.clone();
        c[field] = value;
        c
    };
    let header = |extra: serde_json::Value| {
        let mut h = json!({"alg": "RS256", "typ": "JWT", "kid": key.kid});
        for (k, v) in extra.as_object().expect("object") {
            h[k] = v.clone();
        }
        h
    };
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        base64_std(&key.public)
    );
    let mut expected = std::collections::HashMap::<&str, f64>::new();
    let attacks: Vec<(&str, &str, String)> = vec![
        (
            "alg none, no signature",
            "malformed",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": key.kid})),
                b64(&valid)
            ),
        ),
        (
            "alg None, junk signature",
            "malformed",
            format!(
                "{}.{}.AAAA",
                b64(&json!({"alg": "None", "kid": key.kid})),
                b64(&valid)
            ),
        ),
        (
            "stripped signature",
            "malformed",
            sign(key, &valid)
                .rsplit_once('.')
                .expect("dot")
                .0
                .to_owned()
                + ".",
        ),
        (
            "HS256 with the public key (DER) as secret",
            "bad_algorithm",
            sign_hs256(
                &key.public,
                &json!({"alg": "HS256", "kid": key.kid}),
                &valid,
            ),
        ),
        (
            "HS256 with the public key (PEM) as secret",
            "bad_algorithm",
            sign_hs256(
                pem.as_bytes(),
                &json!({"alg": "HS256", "kid": key.kid}),
                &valid,
            ),
        ),
        (
            "HS256 with the JWK as secret",
            "bad_algorithm",
            sign_hs256(
                key.jwk.to_string().as_bytes(),
                &json!({"alg": "HS256", "kid": key.kid}),
                &valid,
            ),
        ),
        (
            "embedded jwk",
            "header_key",
            sign_raw(
                attacker,
                &json!({"alg": "RS256", "kid": attacker.kid, "jwk": attacker.jwk}),
                &valid,
            ),
        ),
        (
            "jku",
            "header_key",
            sign_raw(
                attacker,
                &json!({"alg": "RS256", "kid": attacker.kid, "jku": format!("http://{}/jwks.json", lure.addr)}),
                &valid,
            ),
        ),
        (
            "x5u",
            "header_key",
            sign_raw(
                attacker,
                &json!({"alg": "RS256", "kid": attacker.kid, "x5u": format!("http://{}/cert.pem", lure.addr)}),
                &valid,
            ),
        ),
        (
            "unknown crit",
            "unknown_crit",
            sign_raw(key, &header(json!({"crit": ["exp"]})), &valid),
        ),
        (
            "another provider's key",
            "unknown_key",
            sign(attacker, &valid),
        ),
        (
            "right kid, wrong key",
            "bad_signature",
            sign_raw(attacker, &json!({"alg": "RS256", "kid": key.kid}), &valid),
        ),
        (
            "ES256 header on an RSA key",
            "unknown_key",
            sign_raw(&keys()[2], &json!({"alg": "ES256", "kid": key.kid}), &valid),
        ),
        (
            "expired",
            "expired",
            sign(key, &with("exp", json!(now() - 120))),
        ),
        (
            "not yet valid",
            "not_yet_valid",
            sign(key, &with("nbf", json!(now() + 600))),
        ),
        (
            "no exp",
            "missing_claim",
            sign(key, &{
                let mut c = valid.clone();
                c.as_object_mut().expect("object").remove("exp");
                c
            }),
        ),
        (
            "string exp",
            "missing_claim",
            sign(key, &with("exp", json!((now() + 300).to_string()))),
        ),
        (
            "float exp",
            "malformed",
            sign(key, &with("exp", json!(now() as f64 + 300.5))),
        ),
        (
            "huge exp",
            "missing_claim",
            sign(key, &with("exp", json!(1e30))),
        ),
        (
            "null exp",
            "missing_claim",
            sign(key, &with("exp", json!(null))),
        ),
        (
            "wrong issuer",
            "wrong_issuer",
            sign(key, &with("iss", json!("https://evil.test/"))),
        ),
        (
            "partial issuer",
            "wrong_issuer",
            sign(key, &with("iss", json!("https://issuer.test"))),
        ),
        (
            "issuer with suffix",
            "wrong_issuer",
            sign(key, &with("iss", json!("https://issuer.test/x"))),
        ),
        (
            "wrong audience",
            "wrong_audience",
            sign(key, &with("aud", json!("other-app"))),
        ),
        (
            "kid path traversal",
            "unknown_key",
            sign_raw(key, &header(json!({"kid": "../../etc/passwd"})), &valid),
        ),
        (
            "64 KiB kid",
            "431",
            sign_raw(key, &header(json!({"kid": "k".repeat(64 * 1024)})), &valid),
        ),
        (
            "oversized token",
            "too_long",
            sign(key, &with("pad", json!("p".repeat(17 * 1024)))),
        ),
        (
            "five segments (JWE)",
            "malformed",
            "aaaa.bbbb.cccc.dddd.eeee".to_owned(),
        ),
        ("garbage", "malformed", "this is not a token".to_owned()),
    ];
    for (name, reason, token) in &attacks {
        let request = upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n"));
        let answer = proxy.raw(&request).await;
        if *reason == "431" {
            // Larger than the 32 KiB request head cap: refused before it is even parsed.
            assert_eq!(status(&answer), 431, "{name}: {answer}");
            continue;
        }
        assert_eq!(status(&answer), 401, "{name}: {answer}");
        assert!(
            answer.contains(r#"error="invalid_token""#),
            "{name}: {answer}"
        );
        *expected.entry(*reason).or_insert(0.0) += 1.0;
        let metrics = proxy.metrics().await;
        let series = format!(r#"wsgate_auth_failures_total{{route="echo",reason="{reason}"}}"#);
        assert_eq!(
            sample(&metrics, &series),
            expected[reason],
            "{name} was not refused as {reason}"
        );
    }
    assert_eq!(backend.connections(), 0, "an attack reached the backend");
    assert_eq!(
        lure.connections(),
        0,
        "a header-supplied key URL was fetched"
    );
    // The honest token still works.
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_ne!(status(&answer), 401, "{answer}");
    proxy.shutdown().await;
}

/// A bearer header value for alice's token expiring at `exp`.
fn expiring_at(exp: u64) -> String {
    let mut c = claims("alice");
    c["exp"] = json!(exp);
    format!("Bearer {}", sign(&keys()[0], &c))
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn an_oversized_token_in_the_query_is_refused_as_too_long() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let mut big = claims("alice");
    big["pad"] = json!("p".repeat(17 * 1024));
    let token = sign(&keys()[0], &big);
    let answer = proxy
        .raw(&upgrade_request(&format!("/echo?access_token={token}"), ""))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_auth_failures_total{route="echo",reason="too_long"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_closes_with_4001_when_its_token_expires() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_full(Setup {
        provider_extra: "    leeway: 0s\n".to_owned(),
        routes: route("echo", "/echo", &backend.url()),
        ..Setup::default()
    })
    .await;
    let exp = now() + 2;
    let bearer = expiring_at(exp);
    let (mut ws, _) = proxy
        .connect_with("/echo", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    ws.send(Message::text("still valid")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("still valid"));
    assert_eq!(close_code(&mut ws).await, Some(4001));
    let closed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        closed_at >= exp as f64 - 0.05,
        "closed before exp: {closed_at} < {exp}"
    );
    assert!(
        closed_at <= exp as f64 + 1.0,
        "closed more than a second late: {closed_at} vs {exp}"
    );
    assert_eq!(backend.next_close().await, Some(1001));
    drop(ws);
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="4001"}"#,
        1.0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn on_expiry_ignore_keeps_the_session_past_exp() {
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n      on_expiry: ignore\n    origins: any\n",
        backend.url()
    );
    let proxy = TestProxy::start_full(Setup {
        provider_extra: "    leeway: 0s\n".to_owned(),
        routes,
        ..Setup::default()
    })
    .await;
    let exp = now() + 1;
    let bearer = expiring_at(exp);
    let (mut ws, _) = proxy
        .connect_with("/echo", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    // Waiting for wall-clock time to pass exp is the point of this test.
    let after_exp = std::time::UNIX_EPOCH + Duration::from_millis(exp * 1000 + 300);
    let wait = after_exp
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    ws.send(Message::text("after exp")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("after exp"));
    drop(ws);
    proxy.shutdown().await;
}
