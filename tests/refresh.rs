//! In-band token refresh (DESIGN.md section 9, `auth.refresh: message`): a client hands the
//! proxy a new token as a text message, and its session lives on under it.

use futures_util::SinkExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const PREFIX: &str = "wsgate.refresh:";

type Client = WebSocketStream<TlsStream<TcpStream>>;

/// A proxy without leeway (expiry closes come at `exp`), with `routes`.
async fn start(routes: String) -> TestProxy {
    TestProxy::start_full(Setup {
        routes,
        admin_extra: format!("  token: {ADMIN_TOKEN}\n"),
        provider_extra: "    leeway: 0s\n".to_owned(),
        ..Setup::default()
    })
    .await
}

/// A route with in-band refresh, and `auth_extra` (indented YAML) under its `auth`.
fn refreshing(name: &str, path: &str, backend: &str, auth_extra: &str) -> String {
    route(name, path, backend).replace(
        "      provider: test\n",
        &format!("      provider: test\n      refresh: message\n{auth_extra}"),
    )
}

/// A token for `sub` with `jti`, expiring `exp_in` seconds from now.
fn token(sub: &str, jti: &str, exp_in: u64) -> String {
    let mut c = claims(sub);
    c["jti"] = jti.into();
    c["exp"] = (now() + exp_in).into();
    sign(&keys()[0], &c)
}

async fn open(proxy: &TestProxy, path: &str, token: &str) -> Client {
    let bearer = format!("Bearer {token}");
    proxy
        .connect_with(path, &[("authorization", bearer.as_str())])
        .await
        .expect("upgrade")
        .0
}

/// Sends a refresh with `token` and returns the proxy's answer.
async fn refresh(ws: &mut Client, token: &str) -> String {
    ws.send(Message::text(format!("{PREFIX}{token}")))
        .await
        .expect("send");
    match next(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected the proxy's answer, got {other:?}"),
    }
}

/// The session still relays: a message comes back from the echo backend.
async fn echoes(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next(ws).await, Message::text(text));
}

/// `POST /admin/revoke` with `body`: the status and the answer.
async fn revoke(proxy: &TestProxy, body: &str) -> (u16, String) {
    admin_call(
        proxy.admin,
        "POST",
        "/admin/revoke",
        Some(ADMIN_TOKEN),
        body,
    )
    .await
}

async fn sessions(proxy: &TestProxy) -> Value {
    let (code, text) =
        admin_call(proxy.admin, "GET", "/admin/sessions", Some(ADMIN_TOKEN), "").await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test]
async fn a_refresh_extends_the_session_past_the_old_expiry() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(refreshing("chat", "/chat", &backend.url(), "")).await;
    // Both sessions start on a token that expires in two seconds.
    let short = token("alice", "old", 2);
    let mut renewed = open(&proxy, "/chat", &short).await;
    let mut control = open(&proxy, "/chat", &short).await;
    let exp = now() + 3600;
    let fresh = token("alice", "new", 3600);
    let answer = refresh(&mut renewed, &fresh).await;
    // The answer names the new exp (signing may have crossed a second boundary).
    let named: u64 = answer
        .strip_prefix("wsgate.refresh:ok ")
        .and_then(|exp| exp.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"));
    assert!((exp..=exp + 1).contains(&named), "{answer}");
    // The registry lists the session under its new token.
    let list = sessions(&proxy).await;
    let listed: Vec<(&str, u64)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["jti"].as_str().unwrap_or(""),
                s["expires"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(listed.contains(&("new", named)), "{list}");
    assert!(
        listed.iter().any(|s| s.0 == "old"),
        "the other session: {list}"
    );
    // The session that did not refresh is closed at the old expiry...
    assert_eq!(close_code(&mut control).await, Some(4001));
    // ...and the renewed one, past it, still relays; the backend never saw the refresh
    // (it would have echoed it back before this).
    echoes(&mut renewed, "still here").await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_token_refreshes_total{route="chat",result="ok"}"#
        ),
        1.0,
        "{metrics}"
    );
    // The refresh was not relayed: one message up (the echo), none for the refresh.
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_messages_total{route="chat",direction="client_to_backend"}"#
        ),
        1.0,
        "{metrics}"
    );
    drop(renewed);
    proxy.shutdown().await;
}

// One thread, so the log capture sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn each_refused_refresh_gets_its_reason_and_the_old_expiry_stands() {
    let (capture, _guard) = LogCapture::start();
    let backend = EchoBackend::start(&[]).await;
    let scoped = "      require_claims:\n        scope: chat:read\n      max_token_lifetime: 2h\n";
    let proxy = start(refreshing("chat", "/chat", &backend.url(), scoped)).await;
    let (code, _) = revoke(&proxy, r#"{"jti": "stolen"}"#).await;
    assert_eq!(code, 200);
    let mut ws = open(&proxy, "/chat", &token("alice", "old", 3)).await;
    let mut unscoped = claims("alice");
    unscoped["scope"] = "chat:write".into();
    let mut too_long = claims("alice");
    too_long["exp"] = (now() + 3 * 3600).into();
    let mut expired = claims("alice");
    expired["exp"] = (now() - 60).into();
    let cases = [
        ("not a token".to_owned(), "invalid_token"),
        (sign(&keys()[0], &expired), "invalid_token"),
        // Signed by a key the provider does not publish.
        (sign(&keys()[1], &claims("alice")), "invalid_token"),
        (sign(&keys()[0], &too_long), "invalid_token"),
        (sign(&keys()[0], &unscoped), "insufficient_scope"),
        (token("bob", "bobs", 3600), "subject_mismatch"),
        (token("alice", "stolen", 3600), "revoked"),
    ];
    for (token, reason) in &cases {
        assert_eq!(
            refresh(&mut ws, token).await,
            format!("wsgate.refresh:error {reason}"),
            "{reason}"
        );
    }
    // Every refusal left the session running on its old token, which still ends it.
    echoes(&mut ws, "between").await;
    assert_eq!(close_code(&mut ws).await, Some(4001));
    let metrics = proxy.metrics().await;
    for (reason, count) in [
        ("invalid_token", 4.0),
        ("insufficient_scope", 1.0),
        ("subject_mismatch", 1.0),
        ("revoked", 1.0),
    ] {
        let series = format!(r#"wsgate_token_refreshes_total{{route="chat",result="{reason}"}}"#);
        assert_eq!(sample(&metrics, &series), count, "{metrics}");
    }
    let logs = capture.text();
    let refused = logs
        .lines()
        .filter(|line| line.contains("refresh refused"))
        .count();
    assert_eq!(refused, cases.len(), "{logs}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn revoking_the_new_jti_closes_the_refreshed_session() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(refreshing("chat", "/chat", &backend.url(), "")).await;
    let mut ws = open(&proxy, "/chat", &token("alice", "first", 3600)).await;
    let answer = refresh(&mut ws, &token("alice", "second", 3600)).await;
    assert!(answer.starts_with("wsgate.refresh:ok "), "{answer}");
    // The old jti no longer speaks for the session.
    let (code, text) = revoke(&proxy, r#"{"jti": "first"}"#).await;
    assert_eq!(code, 200, "{text}");
    echoes(&mut ws, "still mine").await;
    let (code, text) = revoke(&proxy, r#"{"jti": "second"}"#).await;
    assert_eq!(code, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["closed"], 1, "{text}");
    assert_eq!(close_code(&mut ws).await, Some(4003));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_prefix_on_a_route_without_refresh_is_an_ordinary_message() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(route("plain", "/plain", &backend.url())).await;
    let mut ws = open(&proxy, "/plain", &token("alice", "a", 3600)).await;
    // Not a signed token: the suite's leak check would rightly flag one coming back.
    let text = format!("{PREFIX}eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl");
    // Relayed like any message: the echo backend sends it back.
    echoes(&mut ws, &text).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refresh_counts_against_the_message_rate() {
    let backend = EchoBackend::start(&[]).await;
    let limited = refreshing("chat", "/chat", &backend.url(), "")
        + "    limits:\n      message_rate: 1/h\n      message_burst: 2\n";
    let proxy = start(limited).await;
    let mut ws = open(&proxy, "/chat", &token("alice", "a", 3600)).await;
    let answer = refresh(&mut ws, &token("alice", "b", 3600)).await;
    assert!(answer.starts_with("wsgate.refresh:ok "), "{answer}");
    echoes(&mut ws, "second").await;
    // The third message is over the burst of two.
    ws.send(Message::text("third")).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    proxy.shutdown().await;
}

#[tokio::test]
async fn fragmented_messages_are_judged_whole() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(refreshing("chat", "/chat", &backend.url(), "")).await;
    let request = upgrade_request(
        "/chat",
        &format!("Authorization: Bearer {}\r\n", token("alice", "a", 3600)),
    );
    let (head, mut ws) = proxy.raw_session(&request).await;
    assert_eq!(status(&head), 101, "{head}");
    // A refresh whose prefix is split over three fragments.
    let refresh = format!("{PREFIX}{}", token("alice", "b", 3600));
    let bytes = refresh.as_bytes();
    let mut frames = masked_frame(0x01, &bytes[..3]);
    frames.extend(masked_frame(0x00, &bytes[3..9]));
    frames.extend(masked_frame(0x80, &bytes[9..]));
    ws.send_raw(&frames).await;
    let (opcode, answer) = ws.read_frame().await;
    assert_eq!(opcode, 0x1, "a text frame");
    let answer = String::from_utf8(answer).expect("text");
    assert!(answer.starts_with("wsgate.refresh:ok "), "{answer}");
    // A message that starts like the prefix and is not a refresh reaches the backend whole.
    let mut frames = masked_frame(0x01, b"wsg");
    frames.extend(masked_frame(0x80, b"ate is a name"));
    ws.send_raw(&frames).await;
    let (opcode, echoed) = ws.read_frame().await;
    assert_eq!((opcode, echoed.as_slice()), (0x1, &b"wsgate is a name"[..]));
    proxy.shutdown().await;
}
