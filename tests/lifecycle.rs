//! Admin endpoints, metrics, and the drain.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn health_ready_and_metrics_are_served() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    assert_eq!(http_get(proxy.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 200);
    assert_eq!(http_get(proxy.admin, "/nothing").await.0, 404);

    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("12345")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("12345"));
    ws.send(Message::text("close:1000:")).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1000));
    drop(ws);
    let _ = proxy.raw(&upgrade_request("/nowhere", "")).await;

    let metrics = proxy.metrics().await;
    for (series, value) in [
        (r#"wsgate_handshakes_total{route="echo",result="ok"}"#, 1.0),
        (
            r#"wsgate_handshakes_total{route="",result="no_route"}"#,
            1.0,
        ),
        (
            r#"wsgate_messages_total{route="echo",direction="client_to_backend"}"#,
            2.0,
        ),
        (
            r#"wsgate_messages_total{route="echo",direction="backend_to_client"}"#,
            1.0,
        ),
        (
            r#"wsgate_bytes_total{route="echo",direction="backend_to_client"}"#,
            5.0,
        ),
        (
            r#"wsgate_handshake_duration_seconds_count{route="echo"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), value, "{series}\n{metrics}");
    }
    assert!(
        metrics.contains(r#"wsgate_build_info{version=""#),
        "{metrics}"
    );
    proxy.shutdown().await;
    // The session's close is counted once the relay has finished, which the drain waits for.
}

#[tokio::test]
async fn drain_closes_sessions_with_1001_on_both_sides_and_turns_unready() {
    let mut backend = EchoBackend::start(&[]).await;
    let mut proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("before")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("before"));

    proxy.begin_shutdown();
    assert_eq!(close_code(&mut ws).await, Some(1001));
    assert_eq!(backend.next_close().await, Some(1001));
    // The drain is still waiting for this session, so the admin listener answers.
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 503);
    drop(ws);
    proxy.shutdown().await;
}
