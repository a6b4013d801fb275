//! Session lifetime (DESIGN.md section 9): the hard cap on a session (`timeouts.max_session`)
//! and the ceiling on a token's lifetime (`auth.max_token_lifetime`).

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A route `name` on `path` to `backend`, with `timeouts` (indented YAML) under it.
fn route_with_timeouts(name: &str, path: &str, backend: &str, timeouts: &str) -> String {
    format!("{}    timeouts:\n{timeouts}", route(name, path, backend))
}

// One thread, so the log capture sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn max_session_closes_the_session_with_1001_session_limit() {
    let (capture, _guard) = LogCapture::start();
    let mut backend = EchoBackend::start(&[]).await;
    let routes = route_with_timeouts(
        "capped",
        "/capped",
        &backend.url(),
        "      max_session: 300ms\n",
    ) + &route("open", "/open", &backend.url());
    let proxy = TestProxy::start_full(Setup {
        routes,
        ..Setup::default()
    })
    .await;
    // The token lives for an hour and the route closes on expiry: only the cap can end it.
    let mut long = claims("alice");
    long["exp"] = serde_json::json!(now() + 3600);
    let bearer = format!("Bearer {}", sign(&keys()[0], &long));
    let headers = [("authorization", bearer.as_str())];
    let (mut open, _) = proxy
        .connect_with("/open", &headers)
        .await
        .expect("upgrade");
    let (mut capped, _) = proxy
        .connect_with("/capped", &headers)
        .await
        .expect("upgrade");
    match next(&mut capped).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "session limit");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The backend of the capped session gets its close as well.
    assert_eq!(backend.next_close().await, Some(1001));
    drop(capped);
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="capped",code="1001"}"#,
        1.0,
    )
    .await;
    let logs = capture.text();
    assert!(
        logs.lines().any(|line| line.contains("session closed")
            && line.contains("route=\"capped\"")
            && line.contains("code=1001")
            && line.contains("session limit")),
        "{logs}"
    );
    // The session on the route without the key outlived the capped one and still relays.
    open.send(Message::text("still here")).await.expect("send");
    assert_eq!(next(&mut open).await, Message::text("still here"));
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, r#"wsgate_closes_total{route="open",code="1001"}"#),
        0.0,
        "{metrics}"
    );
    drop(open);
    proxy.shutdown().await;
}

/// A bearer header line for alice's token expiring `exp_in` seconds from now, with `iat` now
/// or without one.
fn bearer_line(exp_in: u64, with_iat: bool) -> String {
    let mut c = claims("alice");
    c["exp"] = serde_json::json!(now() + exp_in);
    if !with_iat {
        c.as_object_mut().expect("claims").remove("iat");
    }
    format!("Authorization: Bearer {}\r\n", sign(&keys()[0], &c))
}

// One thread, so the log capture sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn max_token_lifetime_refuses_long_lived_tokens_at_the_upgrade() {
    let (capture, _guard) = LogCapture::start();
    let backend = EchoBackend::start(&[]).await;
    let ceiling = route("ceiling", "/ceiling", &backend.url()).replace(
        "      provider: test\n",
        "      provider: test\n      max_token_lifetime: 1h\n",
    );
    let routes = ceiling + &route("open", "/open", &backend.url());
    let proxy = TestProxy::start_full(Setup {
        routes,
        ..Setup::default()
    })
    .await;
    const HOUR: u64 = 3600;
    // iat now, exp in two hours: over the ceiling, refused before the backend is contacted.
    let answer = proxy
        .raw(&upgrade_request("/ceiling", &bearer_line(2 * HOUR, true)))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"wsgate\", error=\"invalid_token\""),
        "{answer}"
    );
    assert_eq!(backend.seen().len(), 0, "the backend was contacted");
    let metrics = proxy.metrics().await;
    let series = r#"wsgate_auth_failures_total{route="ceiling",reason="token_lifetime"}"#;
    assert_eq!(sample(&metrics, series), 1.0, "{metrics}");
    let logs = capture.text();
    let logged: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("refused") && line.contains("token_lifetime"))
        .collect();
    assert_eq!(logged.len(), 1, "{logs}");
    // Without iat the lifetime is judged from now: two hours is refused too.
    let answer = proxy
        .raw(&upgrade_request("/ceiling", &bearer_line(2 * HOUR, false)))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    assert_eq!(backend.seen().len(), 0, "the backend was contacted");
    // Thirty minutes is under the ceiling, with iat or without.
    for with_iat in [true, false] {
        let line = bearer_line(30 * 60, with_iat);
        let bearer = line
            .trim_start_matches("Authorization: ")
            .trim_end()
            .to_owned();
        let (mut ws, _) = proxy
            .connect_with("/ceiling", &[("authorization", &bearer)])
            .await
            .unwrap_or_else(|e| panic!("with iat {with_iat}: {e}"));
        ws.send(Message::text("short")).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::text("short"));
    }
    // A route without the key accepts the two-hour token.
    let line = bearer_line(2 * HOUR, true);
    let bearer = line
        .trim_start_matches("Authorization: ")
        .trim_end()
        .to_owned();
    let (mut ws, _) = proxy
        .connect_with("/open", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    ws.send(Message::text("long")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("long"));
    let metrics = proxy.metrics().await;
    assert_eq!(sample(&metrics, series), 2.0, "{metrics}");
    drop(ws);
    proxy.shutdown().await;
}

/// A reload that adds a ceiling is the route's policy changing: a live session whose token
/// lives longer is closed with 4003, as one whose claims no longer suffice.
#[tokio::test]
async fn a_reload_that_adds_a_lifetime_ceiling_closes_sessions_over_it() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let line = bearer_line(2 * 3600, true);
    let bearer = line
        .trim_end()
        .strip_prefix("Authorization: ")
        .expect("header line")
        .to_owned();
    let (mut session, _) = proxy
        .connect_with("/echo", &[("authorization", bearer.as_str())])
        .await
        .expect("upgrade");
    let ceiling = proxy.yaml.replace(
        "      provider: test\n",
        "      provider: test\n      max_token_lifetime: 1h\n",
    );
    std::fs::write(&proxy.config_path, ceiling).expect("write");
    proxy.reloader.reload().expect("reload");
    assert_eq!(close_code(&mut session).await, Some(4003));
    proxy.shutdown().await;
}
