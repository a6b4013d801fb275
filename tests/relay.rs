//! The live session: data both ways, fragmentation, pings, and close propagation.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use crate::support::*;

#[tokio::test]
async fn text_and_binary_round_trip() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    let binary = vec![0u8, 1, 2, 255];
    ws.send(Message::binary(binary.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(binary));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(big));
    ws.close(None).await.expect("close");
    proxy.shutdown().await;
}

#[tokio::test]
async fn fragmented_message_arrives_whole() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    let parts = ["frag", "mented ", "text"];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(part.as_bytes().to_vec(), opcode, i == parts.len() - 1);
        ws.send(Message::Frame(frame)).await.expect("send frame");
    }
    assert_eq!(next(&mut ws).await, Message::text("fragmented text"));
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn ping_is_answered_with_the_same_payload() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    match within(ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The session still relays after the ping.
    ws.send(Message::text("after ping")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("after ping"));
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_burst_from_the_backend_arrives_complete_and_in_order() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("burst:2000")).await.expect("send");
    for i in 0..2000 {
        assert_eq!(next(&mut ws).await, Message::text(i.to_string()));
    }
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_close_code_and_reason_reach_the_backend() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    let frame = CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(frame))).await.expect("close");
    assert_eq!(backend.next_close().await, Some(4000));
    // The client's closing handshake completes with its own code echoed.
    assert_eq!(close_code(&mut ws).await, Some(4000));
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_close_code_and_reason_reach_the_client() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("close:4321:done here"))
        .await
        .expect("send");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4321);
            assert_eq!(frame.reason.as_str(), "done here");
        }
        other => panic!("expected the backend's close, got {other:?}"),
    }
    drop(ws);
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="other"}"#,
        1.0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_dropping_tcp_gives_the_client_1014() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    session.send_text("drop").await;
    assert_eq!(session.close_code().await, 1014);
    drop(session);
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="1014"}"#,
        1.0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_dropping_tcp_gives_the_backend_1001() {
    let mut backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("hi"));
    drop(ws);
    assert_eq!(backend.next_close().await, Some(1001));
    proxy.shutdown().await;
}

#[tokio::test]
async fn message_size_limit_closes_with_1009_and_spares_messages_at_the_limit() {
    let mut backend = EchoBackend::start(&[]).await;
    let route = format!(
        "  - name: small\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n    origins: any\n    limits:\n      max_message_size: 1KiB\n",
        backend.url()
    );
    let proxy = TestProxy::start_with("", &route).await;
    let mut ws = proxy.connect("/echo").await;
    let at_limit = vec![7u8; 1024];
    ws.send(Message::binary(at_limit.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(at_limit));
    ws.send(Message::binary(vec![7u8; 1025]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1009));
    assert_eq!(backend.next_close().await, Some(1001));
    proxy.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_sessions_stay_separate() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut sessions = Vec::new();
    // Twenty users (one user may hold only ten sessions by default).
    for i in 0..20 {
        let bearer = format!("Bearer {}", sign(&keys()[0], &claims(&format!("user-{i}"))));
        let (ws, _) = proxy
            .connect_with("/echo", &[("authorization", &bearer)])
            .await
            .expect("upgrade");
        sessions.push(ws);
    }
    for (i, ws) in sessions.iter_mut().enumerate() {
        ws.send(Message::text(format!("session {i}")))
            .await
            .expect("send");
    }
    for (i, ws) in sessions.iter_mut().enumerate() {
        assert_eq!(next(ws).await, Message::text(format!("session {i}")));
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, r#"wsgate_connections_active{route="echo"}"#),
        20.0,
        "{metrics}"
    );
    drop(sessions);
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 0.0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_relayed() {
    // A client may pipeline its first frames behind the request: hyper has read them with the
    // head, and the relay must start from those bytes.
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let mut request = upgrade_request("/echo", &proxy.bearer());
    for text in ["early", "bird"] {
        request.extend(masked_frame(0x81, text.as_bytes()));
    }
    let (head, mut session) = proxy.raw_session(&request).await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(session.read_frame().await, (0x1, b"early".to_vec()));
    assert_eq!(session.read_frame().await, (0x1, b"bird".to_vec()));
    drop(session);
    proxy.shutdown().await;
}

#[tokio::test]
async fn registered_codes_from_the_backend_pass_unchanged() {
    // 1012-1014 are registered codes some WebSocket libraries do not know; the relay passes
    // the backend's close frame as it is (read here from the wire, not through a library).
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    for code in [1012u16, 1013, 1014] {
        let (head, mut session) = proxy
            .raw_session(&upgrade_request("/echo", &proxy.bearer()))
            .await;
        assert_eq!(status(&head), 101, "{head}");
        session.send_text(&format!("close:{code}:upstream")).await;
        let (opcode, payload) = session.read_frame().await;
        assert_eq!(opcode, 0x8);
        assert_eq!(payload[..2], code.to_be_bytes(), "{code}");
        assert_eq!(&payload[2..], b"upstream");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn close_codes_outside_the_known_set_share_one_label() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    for code in [4567u16, 3999] {
        let mut ws = proxy.connect("/echo").await;
        ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
        .await
        .expect("close");
        // The closing handshake ends with the backend's answer and the end of the stream.
        while let Some(Ok(_)) = within(ws.next()).await {}
    }
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="other"}"#,
        2.0,
    )
    .await;
    let metrics = proxy.metrics().await;
    for code in ["4567", "3999"] {
        assert!(
            !metrics.contains(&format!("code=\"{code}\"")),
            "code {code} has a series of its own:\n{metrics}"
        );
    }
    proxy.shutdown().await;
}

/// The header of a masked client frame of `len` (126..64 KiB) payload bytes, and its mask.
fn masked_header(first: u8, len: u16) -> (Vec<u8>, [u8; 4]) {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut header = vec![first, 0x80 | 126];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&mask);
    (header, mask)
}

#[tokio::test]
async fn invalid_utf8_mid_frame_closes_at_once_and_frees_the_session() {
    let mut backend = EchoBackend::start(&[]).await;
    // Long timers, so only an immediate close passes; one session per subject, so the freed
    // slot shows.
    let routes = route("echo", "/echo", &backend.url())
        + "    limits:\n      max_connections_per_subject: 1\n    timeouts:\n      idle: 30s\n      ping_interval: 30s\n      pong_timeout: 30s\n";
    let proxy = TestProxy::start_with("", &routes).await;
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    // A text frame announced at 200 bytes: its header and 20 valid bytes go to the backend,
    // then a byte that is never UTF-8.
    let (mut bytes, mask) = masked_header(0x81, 200);
    let payload: Vec<u8> = [b'a'; 20].iter().chain(&[0xff]).copied().collect();
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    session.send_raw(&bytes).await;
    // Well under the 5 s the proxy grants a closing handshake.
    let bound = std::time::Duration::from_secs(2);
    let code = tokio::time::timeout(bound, session.close_code())
        .await
        .expect("the client's close at once");
    assert_eq!(code, 1007);
    // The backend's stream is mid-frame: its connection is ended, not left waiting.
    let ended = tokio::time::timeout(bound, backend.next_close())
        .await
        .expect("the backend's connection ended at once");
    assert_eq!(ended, Some(1006));
    // The session is gone, and with it the subject's one slot.
    tokio::time::timeout(
        bound,
        wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 0.0),
    )
    .await
    .expect("the session freed at once");
    let (head, _again) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_backend_ending_mid_frame_ends_the_client_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that accepts the upgrade, starts a 200-byte binary frame and ends its stream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let backend = tokio::spawn(async move {
        let mut tcp = accept_upgrade(&listener).await;
        let mut chunk = [0u8; 4096];
        tcp.write_all(&[0x82, 126, 0, 200]).await.expect("header");
        tcp.write_all(&[7u8; 10]).await.expect("payload");
        tcp.shutdown().await.expect("FIN");
        // Holds its end open, reading, until the proxy lets go.
        while let Ok(n) = tcp.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    });
    let routes = route("echo", "/echo", &url)
        + "    timeouts:\n      idle: 30s\n      ping_interval: 30s\n      pong_timeout: 30s\n";
    let proxy = TestProxy::start_with("", &routes).await;
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    // The client's stream is mid-frame: no close frame can reach it, so its connection ends,
    // at once rather than after the 5 s closing handshake.
    let bound = std::time::Duration::from_secs(2);
    let mut received = Vec::new();
    tokio::time::timeout(bound, session.read_to_end(&mut received))
        .await
        .expect("the client's connection ended at once");
    assert_eq!(received[..4], [0x82, 126, 0, 200]);
    assert!(received.len() < 4 + 200, "{received:?}");
    within(backend).await.expect("backend task");
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 0.0).await;
    proxy.shutdown().await;
}
