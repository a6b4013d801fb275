//! Tokens never appear in logs, metrics or response bodies: traffic through every transport,
//! refused and admitted, with every log at TRACE captured, then searched for the token and each
//! of its three segments.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

// One thread, so the thread-local subscriber sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_reach_logs_metrics_or_bodies() {
    let (capture, _guard) = LogCapture::start();

    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n      token_from: [header, subprotocol, query, cookie]\n    origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n",
        backend.url()
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let valid = proxy.token.clone();
    let mut expired_claims = claims("alice");
    expired_claims["exp"] = (now() - 600).into();
    let expired = sign(&keys()[0], &expired_claims);
    let forged = format!("{}.{}", valid.rsplit_once('.').expect("dot").0, "AAAA");
    let mut bodies = String::new();
    for token in [&valid, &expired, &forged] {
        for request in [
            upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n")),
            upgrade_request(
                "/echo",
                &format!("Sec-WebSocket-Protocol: chat, bearer, {token}\r\n"),
            ),
            upgrade_request(&format!("/echo/x?access_token={token}"), ""),
            upgrade_request("/echo", &format!("Cookie: access_token={token}\r\n")),
            // Conflicting transports, and a refused origin.
            upgrade_request(
                &format!("/echo?access_token={token}x"),
                &format!("Authorization: Bearer {token}\r\n"),
            ),
            upgrade_request(
                "/echo",
                &format!("Authorization: Bearer {token}\r\nOrigin: https://evil.example\r\n"),
            ),
        ] {
            bodies.push_str(&proxy.raw(&request).await);
        }
    }
    // A live session, to get relay logs too.
    let (mut ws, response) = proxy
        .connect_with(
            "/echo",
            &[("sec-websocket-protocol", &format!("bearer, {valid}"))],
        )
        .await
        .expect("upgrade");
    bodies.push_str(&format!("{response:?}"));
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    drop(ws);
    let metrics = proxy.metrics().await;
    proxy.shutdown().await;

    let logs = capture.text();
    assert!(
        logs.contains("session closed") && logs.contains("refused"),
        "the capture saw the access log"
    );
    assert!(logs.contains("TRACE"), "the capture saw trace-level events");
    for token in [&valid, &expired, &forged] {
        for piece in std::iter::once(token.as_str()).chain(token.split('.')) {
            for (what, text) in [
                ("logs", &logs),
                ("metrics", &metrics),
                ("response bodies", &bodies),
            ] {
                assert!(
                    !text.contains(piece),
                    "a token piece ({} chars) appears in the {what}",
                    piece.len()
                );
            }
        }
    }
    for request in backend.seen() {
        let everything = format!("{} {:?}", request.uri, request.headers);
        assert!(
            !everything.contains(valid.as_str()),
            "the backend saw the token"
        );
    }
}

/// The suite-wide check (`support::leak`) sees the proxy's own log lines: a unique path is
/// registered as a canary, and the access log of its 404 must have been scanned by the time
/// the answer arrives (the proxy logs a refusal before it answers).
#[tokio::test]
async fn the_suite_wide_capture_scans_the_proxys_log_lines() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let canary = format!("canary-{nanos:024}");
    leak::register_canary(&canary);
    let answer = proxy
        .raw(&upgrade_request(&format!("/nowhere/{canary}"), ""))
        .await;
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(
        leak::canary_seen("logs", &canary),
        "the access log line of the refusal was not scanned"
    );
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

/// A token inside a path segment, not filling it, was written to the access log. The suite's
/// leak search (run when the proxy is dropped) fails the test if any piece is logged.
#[tokio::test]
async fn a_token_anywhere_in_the_path_is_not_logged() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let token = sign(&keys()[1], &claims("path-user"));
    let encoded_dots = token.replace('.', "%2E");
    let encoded_all: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    for path in [
        format!("/echo/t={token}"),
        format!("/echo/{token};v=1"),
        format!("/echo/x-{token}-y/z"),
        format!("/echo/t={encoded_dots}"),
        format!("/echo/{encoded_all}"),
        format!("/nowhere/{token};v=1"),
    ] {
        let answer = proxy.raw(&upgrade_request(&path, "")).await;
        assert!(status(&answer) >= 400, "{answer}");
    }
    proxy.shutdown().await;
}
