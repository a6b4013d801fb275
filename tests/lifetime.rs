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
    capped.send(Message::text("before")).await.expect("send");
    assert_eq!(next(&mut capped).await, Message::text("before"));
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
