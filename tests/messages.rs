//! Message rules (DESIGN.md section 8, `routes[].messages`): each client message judged whole
//! against the route's rules; nothing of a refused message reaches the backend.

use std::path::{Path, PathBuf};

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Client = WebSocketStream<TlsStream<TcpStream>>;

/// A chat schema: an object with a string `text`, nothing else.
const CHAT: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["text"],
  "properties": {"text": {"type": "string", "maxLength": 64}},
  "additionalProperties": false
}"#;

/// Writes `text` as `name` in `dir` and returns its path.
fn schema(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write schema");
    path
}

/// A proxy with route `chat` on `/chat` to `backend`, its `messages` section from `rules`
/// (one `key: value` a line, indented here).
async fn start(backend: &EchoBackend, rules: &[&str]) -> TestProxy {
    TestProxy::start_full(Setup {
        routes: with_rules(&backend.url(), rules),
        ..Setup::default()
    })
    .await
}

fn with_rules(backend: &str, rules: &[&str]) -> String {
    let mut routes = route("chat", "/chat", backend);
    routes.push_str("    messages:\n");
    for rule in rules {
        routes.push_str(&format!("      {rule}\n"));
    }
    routes
}

async fn echoes(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next(ws).await, Message::text(text));
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    sample(
        metrics,
        &format!("wsgate_messages_rejected_total{{route=\"chat\",reason=\"{reason}\"}}"),
    )
}

fn texts(backend: &EchoBackend) -> Vec<String> {
    backend
        .received()
        .into_iter()
        .map(|message| match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => format!("binary:{}", bytes.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn malformed_json_closes_with_1007_and_never_reaches_the_backend() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json"]).await;
    let mut ws = proxy.connect("/chat").await;
    echoes(&mut ws, r#"{"text": "hello"}"#).await;
    echoes(&mut ws, "  [1, 2.5e3, null, true, \"\\u00e9\"]  ").await;
    ws.send(Message::text(r#"{"text": "hello""#))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1007));
    // Gone without answering the close, so the session ends now, not at the close deadline.
    drop(ws);
    assert_eq!(backend.next_close().await, Some(1001));
    assert_eq!(
        texts(&backend),
        [
            r#"{"text": "hello"}"#,
            "  [1, 2.5e3, null, true, \"\\u00e9\"]  "
        ]
    );
    let metrics = proxy.metrics().await;
    assert_eq!(rejected(&metrics, "json"), 1.0, "{metrics}");
    wait_for_sample(
        &proxy,
        "wsgate_closes_total{route=\"chat\",code=\"1007\"}",
        1.0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn too_deep_closes_with_1008() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json", "max_depth: 3"]).await;
    let mut ws = proxy.connect("/chat").await;
    echoes(&mut ws, "[[[1]]]").await;
    echoes(&mut ws, r#"{"a": {"b": []}}"#).await;
    ws.send(Message::text("[[[[1]]]]")).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(backend.next_close().await, Some(1001));
    assert_eq!(texts(&backend), ["[[[1]]]", r#"{"a": {"b": []}}"#]);
    assert_eq!(rejected(&proxy.metrics().await, "depth"), 1.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_message_failing_the_schema_closes_with_1008() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = schema(dir.path(), "chat.json", CHAT);
    let mut backend = EchoBackend::start(&[]).await;
    let rule = format!("schema: {}", chat.display());
    let proxy = start(&backend, &["text: json", &rule]).await;
    let mut ws = proxy.connect("/chat").await;
    echoes(&mut ws, r#"{"text": "hi"}"#).await;
    ws.send(Message::text(r#"{"text": "hi", "admin": true}"#))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(backend.next_close().await, Some(1001));
    assert_eq!(texts(&backend), [r#"{"text": "hi"}"#]);
    assert_eq!(rejected(&proxy.metrics().await, "schema"), 1.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn binary_on_a_refusing_route_closes_with_1008() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["binary: refuse"]).await;
    // A route with rules shows its series at zero before the first refusal.
    let metrics = proxy.metrics().await;
    for reason in ["json", "depth", "schema", "binary"] {
        let series =
            format!("wsgate_messages_rejected_total{{route=\"chat\",reason=\"{reason}\"}} 0");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let mut ws = proxy.connect("/chat").await;
    // Text is still any text.
    echoes(&mut ws, "not json, and fine").await;
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(backend.next_close().await, Some(1001));
    assert_eq!(texts(&backend), ["not json, and fine"]);
    assert_eq!(rejected(&proxy.metrics().await, "binary"), 1.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_drop_each_refused_message_is_dropped_and_the_session_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = schema(dir.path(), "chat.json", CHAT);
    let mut backend = EchoBackend::start(&[]).await;
    let rule = format!("schema: {}", chat.display());
    let proxy = start(
        &backend,
        &[
            "text: json",
            "binary: refuse",
            "max_depth: 2",
            &rule,
            "on_invalid: drop",
        ],
    )
    .await;
    let mut ws = proxy.connect("/chat").await;
    for refused in [
        Message::text("{\"text\": "),
        Message::text("[[[\"deep\"]]]"),
        Message::text("{\"text\": 42}"),
        Message::binary(vec![0u8; 300]),
    ] {
        ws.send(refused).await.expect("send");
    }
    // No answer to any of them: the next thing the client gets is this echo.
    echoes(&mut ws, r#"{"text": "still here"}"#).await;
    assert_eq!(texts(&backend), [r#"{"text": "still here"}"#]);
    let metrics = proxy.metrics().await;
    for reason in ["json", "depth", "schema", "binary"] {
        assert_eq!(rejected(&metrics, reason), 1.0, "{reason}: {metrics}");
    }
    // Only what reached the backend counts as relayed: one message, its payload bytes.
    let up = |family: &str| {
        sample(
            &metrics,
            &format!("wsgate_{family}_total{{route=\"chat\",direction=\"client_to_backend\"}}"),
        )
    };
    assert_eq!((up("messages"), up("bytes")), (1.0, 22.0));
    ws.close(None).await.expect("close");
    assert_eq!(backend.next_close().await, None, "a close without a code");
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_fragmented_message_is_assembled_judged_and_forwarded_whole() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json", "on_invalid: drop"]).await;
    let (head, mut ws) = proxy
        .raw_session(&upgrade_request("/chat", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    // Three fragments with a ping between them (control frames may interleave).
    let mut frames = masked_frame(0x01, br#"{"text":"#);
    frames.extend(masked_frame(0x89, b"between"));
    frames.extend(masked_frame(0x00, br#" "frag"#));
    frames.extend(masked_frame(0x80, br#"mented"}"#));
    ws.send_raw(&frames).await;
    loop {
        let (opcode, payload) = ws.read_frame().await;
        if opcode == 0xA {
            continue; // the backend's pong
        }
        assert_eq!(opcode, 0x1, "one text frame");
        assert_eq!(payload, br#"{"text": "fragmented"}"#);
        break;
    }
    // A fragmented invalid message: nothing of it, not even its first fragment, is forwarded
    // (the backend would see a new message inside an unfinished one and fail).
    let mut frames = masked_frame(0x01, br#"{"text": "never"#);
    frames.extend(masked_frame(0x80, b" sent"));
    frames.extend(masked_frame(0x81, br#"{"after": 1}"#));
    ws.send_raw(&frames).await;
    assert_eq!(ws.read_frame().await, (0x1, br#"{"after": 1}"#.to_vec()));
    assert_eq!(
        texts(&backend),
        [r#"{"text": "fragmented"}"#, r#"{"after": 1}"#]
    );
    assert_eq!(rejected(&proxy.metrics().await, "json"), 1.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_fragmented_binary_message_is_dropped_from_its_first_frame() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["binary: refuse", "on_invalid: drop"]).await;
    let (head, mut ws) = proxy
        .raw_session(&upgrade_request("/chat", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    let mut frames = masked_frame(0x02, &[7u8; 40]);
    frames.extend(masked_frame(0x00, &[8u8; 40]));
    frames.extend(masked_frame(0x80, &[9u8; 40]));
    frames.extend(masked_frame(0x81, b"after the binary"));
    ws.send_raw(&frames).await;
    assert_eq!(ws.read_frame().await, (0x1, b"after the binary".to_vec()));
    assert_eq!(texts(&backend), ["after the binary"]);
    assert_eq!(rejected(&proxy.metrics().await, "binary"), 1.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refused_fragmented_message_closes_before_any_fragment_goes_on() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json", "max_depth: 4"]).await;
    let (head, mut ws) = proxy
        .raw_session(&upgrade_request("/chat", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    let mut frames = masked_frame(0x01, b"[[[");
    frames.extend(masked_frame(0x00, b"[[1"));
    frames.extend(masked_frame(0x80, b"]]]]]"));
    ws.send_raw(&frames).await;
    assert_eq!(ws.close_code().await, 1008);
    assert_eq!(backend.next_close().await, Some(1001));
    assert!(texts(&backend).is_empty(), "{:?}", texts(&backend));
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_depth_bomb_closes_with_1008_and_the_proxy_serves_on() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json"]).await;
    let mut ws = proxy.connect("/chat").await;
    ws.send(Message::text("[".repeat(512 * 1024)))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(backend.next_close().await, Some(1001));
    assert!(texts(&backend).is_empty());
    let mut again = proxy.connect("/chat").await;
    echoes(&mut again, "[[[[\"fine\"]]]]").await;
    assert_eq!(rejected(&proxy.metrics().await, "depth"), 1.0);
    drop((ws, again));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refresh_on_a_route_with_rules_is_the_proxys_not_judged() {
    let backend = EchoBackend::start(&[]).await;
    let routes = with_rules(&backend.url(), &["text: json"]).replace(
        "      provider: test\n",
        "      provider: test\n      refresh: message\n",
    );
    let proxy = TestProxy::start_full(Setup {
        routes,
        ..Setup::default()
    })
    .await;
    let mut ws = proxy.connect("/chat").await;
    // Not JSON, yet answered by the proxy rather than refused.
    ws.send(Message::text("wsgate.refresh:not-a-token"))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Message::text("wsgate.refresh:error invalid_token")
    );
    echoes(&mut ws, "{}").await;
    assert_eq!(texts(&backend), ["{}"]);
    assert_eq!(rejected(&proxy.metrics().await, "json"), 0.0);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_schema_for_the_next_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = schema(dir.path(), "chat.json", CHAT);
    let body = schema(
        dir.path(),
        "body.json",
        r#"{"type": "object", "required": ["body"]}"#,
    );
    let backend = EchoBackend::start(&[]).await;
    let rule = format!("schema: {}", chat.display());
    let proxy = start(&backend, &["text: json", &rule, "on_invalid: drop"]).await;
    let mut before = proxy.connect("/chat").await;
    echoes(&mut before, r#"{"text": "a"}"#).await;

    // A schema that does not compile is refused, and the one in force stays.
    let broken = schema(dir.path(), "broken.json", r#"{"type": "thing"}"#);
    let yaml = proxy
        .yaml
        .replace(&chat.display().to_string(), &broken.display().to_string());
    std::fs::write(&proxy.config_path, yaml).expect("write");
    let problems = proxy.reloader.reload().expect_err("an invalid schema");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("routes[0].messages.schema")),
        "{problems:?}"
    );
    let mut still = proxy.connect("/chat").await;
    echoes(&mut still, r#"{"text": "b"}"#).await;

    let yaml = proxy
        .yaml
        .replace(&chat.display().to_string(), &body.display().to_string());
    std::fs::write(&proxy.config_path, yaml).expect("write");
    proxy.reloader.reload().expect("reload");
    let mut after = proxy.connect("/chat").await;
    after
        .send(Message::text(r#"{"text": "old shape"}"#))
        .await
        .expect("send");
    echoes(&mut after, r#"{"body": "new shape"}"#).await;
    // A session opened before the reload judges its next message by the new schema too.
    before
        .send(Message::text(r#"{"text": "c"}"#))
        .await
        .expect("send");
    echoes(&mut before, r#"{"body": "d"}"#).await;
    assert_eq!(
        texts(&backend),
        [
            r#"{"text": "a"}"#,
            r#"{"text": "b"}"#,
            r#"{"body": "new shape"}"#,
            r#"{"body": "d"}"#
        ]
    );
    assert_eq!(rejected(&proxy.metrics().await, "schema"), 2.0);
    drop((before, still, after));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_log_counts_rejections_and_never_shows_content() {
    let (logs, _guard) = LogCapture::start();
    let canary = "CANARY-7f3a-message-content";
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&backend, &["text: json", "on_invalid: drop"]).await;
    let mut ws = proxy.connect("/chat").await;
    ws.send(Message::text(format!("{{\"{canary}\": ")))
        .await
        .expect("send");
    echoes(&mut ws, "1").await;
    ws.close(None).await.expect("close");
    while !matches!(next(&mut ws).await, Message::Close(_)) {}
    let metrics = proxy.metrics().await;
    drop(ws);
    proxy.shutdown().await;
    let logs = logs.text();
    let closed = logs
        .lines()
        .find(|line| line.contains("session closed"))
        .unwrap_or_else(|| panic!("no access line: {logs}"));
    assert!(closed.contains("rejected=1"), "{closed}");
    assert!(!logs.contains(canary), "message content in the logs");
    assert!(!metrics.contains(canary), "message content in the metrics");
}
