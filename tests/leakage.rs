//! Tokens never appear in logs, metrics or response bodies: traffic through every transport,
//! refused and admitted, with every log at TRACE captured, then searched for the token and each
//! of its three segments.

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Collects everything written by the subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so the thread-local subscriber sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_reach_logs_metrics_or_bodies() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
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
