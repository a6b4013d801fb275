//! Admission control: every limit crossed, and stayed just under.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

fn limited_route(backend: &str, limits: &str, timeouts: &str) -> String {
    let mut yaml = route("echo", "/echo", backend);
    if !limits.is_empty() {
        yaml.push_str(&format!("    limits:\n{limits}"));
    }
    if !timeouts.is_empty() {
        yaml.push_str(&format!("    timeouts:\n{timeouts}"));
    }
    yaml
}

fn bearer_for(sub: &str) -> String {
    format!("Bearer {}", sign(&keys()[0], &claims(sub)))
}

#[tokio::test]
async fn the_handshake_rate_per_ip_counts_failed_authentications_and_answers_429() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      handshake_rate_per_ip: 1/m\n      handshake_burst_per_ip: 3\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    // Three attempts fit the burst, failed ones included.
    for headers in [
        "Authorization: Bearer junk.junk.junk\r\n".to_owned(),
        String::new(),
        proxy.bearer(),
    ] {
        let answer = proxy.raw(&upgrade_request("/echo", &headers)).await;
        assert_ne!(status(&answer), 429, "{answer}");
    }
    // The fourth is refused before the token is even looked at.
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 429, "{answer}");
    let retry = answer
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{answer}");
    assert_eq!(
        backend.seen().len(),
        1,
        "only the valid attempt within the burst reached the backend"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="handshake"}"#
        ),
        1.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn only_trusted_proxies_choose_the_address_limits_are_keyed_on() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      handshake_rate_per_ip: 1/m\n      handshake_burst_per_ip: 1\n";
    let routes = limited_route(&backend.url(), limits, "");
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    // Trusted: each forwarded client has its own budget, and the backend sees the chain.
    let proxy = start_trusting(&routes).await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        let answer = proxy
            .raw(&upgrade_request(
                "/echo",
                &format!("{}{}", proxy.bearer(), xff(ip)),
            ))
            .await;
        assert_eq!(status(&answer), 101, "{ip}: {answer}");
    }
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{}{}", proxy.bearer(), xff("203.0.113.1")),
        ))
        .await;
    assert_eq!(status(&answer), 429, "{answer}");
    assert_eq!(
        backend.seen()[0].header("x-forwarded-for"),
        Some("203.0.113.1, 127.0.0.1")
    );
    proxy.shutdown().await;

    // Untrusted: the header changes nothing and is overwritten for the backend.
    let plain_backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_with("", &limited_route(&plain_backend.url(), limits, "")).await;
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{}{}", proxy.bearer(), xff("203.0.113.1")),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{}{}", proxy.bearer(), xff("203.0.113.2")),
        ))
        .await;
    assert_eq!(
        status(&answer),
        429,
        "a spoofed X-Forwarded-For bought a new budget: {answer}"
    );
    assert_eq!(
        plain_backend.seen()[0].header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    proxy.shutdown().await;
}

/// A proxy that trusts loopback peers to set X-Forwarded-For.
async fn start_trusting(routes: &str) -> TestProxy {
    TestProxy::start_full(Setup {
        routes: routes.to_owned(),
        top_extra: "trusted_proxies: [127.0.0.0/8]\n".to_owned(),
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn sessions_per_subject_are_capped_and_released() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      max_connections_per_subject: 2\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let alice = bearer_for("alice");
    let (first, _) = proxy
        .connect_with("/echo", &[("authorization", &alice)])
        .await
        .expect("first");
    let (second, _) = proxy
        .connect_with("/echo", &[("authorization", &alice)])
        .await
        .expect("second");
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: {alice}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 429, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // Caps are per subject.
    let (bob, _) = proxy
        .connect_with("/echo", &[("authorization", &bearer_for("bob"))])
        .await
        .expect("bob");
    // Closing a session gives its slot back.
    drop(first);
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 2.0).await;
    let (third, _) = proxy
        .connect_with("/echo", &[("authorization", &alice)])
        .await
        .expect("slot released");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="subject"}"#
        ),
        1.0,
        "{metrics}"
    );
    drop((second, bob, third));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_message_rate_closes_with_1008_past_the_burst() {
    let mut backend = EchoBackend::start(&[]).await;
    let limits = "      message_rate: 1/m\n      message_burst: 3\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let mut ws = proxy.connect("/echo").await;
    for i in 0..3 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        assert_eq!(
            next(&mut ws).await,
            Message::text(format!("m{i}")),
            "within the burst"
        );
    }
    ws.send(Message::text("one too many")).await.expect("send");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "rate limit");
        }
        other => panic!("expected 1008, got {other:?}"),
    }
    assert_eq!(backend.next_close().await, Some(1001));
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="message"}"#
        ),
        1.0,
        "{metrics}"
    );
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn pings_count_against_the_message_rate() {
    let mut backend = EchoBackend::start(&[]).await;
    let limits = "      message_rate: 1/m\n      message_burst: 3\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    let mut pings = Vec::new();
    for _ in 0..50 {
        pings.extend(masked_frame(0x89, b"ping"));
    }
    session.send_raw(&pings).await;
    // The backend's pongs to the pings within the burst, then the proxy's close.
    let code = tokio::time::timeout(std::time::Duration::from_secs(3), session.close_code())
        .await
        .expect("closed for the rate");
    assert_eq!(code, 1008);
    assert_eq!(backend.next_close().await, Some(1001));
    let seen = backend.pings.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen <= 3, "the backend got {seen} pings");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="message"}"#
        ),
        1.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn on_limit_drop_discards_messages_and_keeps_the_session() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      message_rate: 1/m\n      message_burst: 3\n      on_limit: drop\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let mut ws = proxy.connect("/echo").await;
    for i in 0..5 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
    }
    for i in 0..3 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
    wait_for_sample(
        &proxy,
        r#"wsgate_rate_limited_total{route="echo",kind="message"}"#,
        2.0,
    )
    .await;
    // Nothing else was relayed: close frames are not metered, and the next thing the client
    // sees is the reply to its own close, not a fourth echo.
    ws.send(Message::Close(None)).await.expect("close");
    assert_eq!(close_code(&mut ws).await, None);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dropped_fragmented_message_is_dropped_whole() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let backend = EchoBackend::start(&[]).await;
    let limits = "      message_rate: 1/m\n      message_burst: 1\n      on_limit: drop\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let mut ws = proxy.connect("/echo").await;
    ws.send(Message::text("first")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("first"));
    // Over the rate: the message is judged by its first frame and every fragment goes. A
    // continuation frame reaching the backend alone would be a protocol error there (1002).
    for (part, opcode, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("men", OpCode::Data(Data::Continue), false),
        ("ted", OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(part.as_bytes().to_vec(), opcode, fin);
        ws.send(Message::Frame(frame)).await.expect("send frame");
    }
    wait_for_sample(
        &proxy,
        r#"wsgate_rate_limited_total{route="echo",kind="message"}"#,
        1.0,
    )
    .await;
    ws.send(Message::Close(None)).await.expect("close");
    assert_eq!(
        close_code(&mut ws).await,
        None,
        "a clean close, not a protocol error"
    );
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_byte_rate_closes_past_its_budget() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      byte_rate: 1000B/m\n      max_message_size: 1000B\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let mut ws = proxy.connect("/echo").await;
    for size in [600, 400] {
        ws.send(Message::binary(vec![1u8; size]))
            .await
            .expect("send");
        assert_eq!(
            next(&mut ws).await,
            Message::binary(vec![1u8; size]),
            "within the byte budget"
        );
    }
    ws.send(Message::binary(vec![1u8; 100]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="bytes"}"#
        ),
        1.0,
        "{metrics}"
    );
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_idle_session_closes_with_1001_and_traffic_keeps_one_open() {
    let mut backend = EchoBackend::start(&[]).await;
    let timeouts = "      idle: 400ms\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), "", timeouts)).await;
    // Just under: a message every 100 ms for a second keeps the session.
    let mut busy = proxy.connect("/echo").await;
    let mut pacing = tokio::time::interval(Duration::from_millis(100));
    for i in 0..10 {
        pacing.tick().await;
        busy.send(Message::text(format!("{i}")))
            .await
            .expect("send");
        assert_eq!(next(&mut busy).await, Message::text(format!("{i}")));
    }
    // Over: silence closes both sides.
    let started = Instant::now();
    match next(&mut busy).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "idle timeout");
        }
        other => panic!("expected an idle close, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the idle timeout"
    );
    assert_eq!(backend.next_close().await, Some(1001));
    drop(busy);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_and_one_that_does_stays() {
    let backend = EchoBackend::start(&[]).await;
    let timeouts = "      ping_interval: 100ms\n      pong_timeout: 200ms\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), "", timeouts)).await;
    // A dead peer: reads frames but never answers the pings.
    let (head, mut dead) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    let (opcode, _) = dead.read_frame().await;
    assert_eq!(opcode, 0x9, "the proxy pings");
    assert_eq!(dead.close_code().await, 1001);
    // A live peer (tungstenite answers pings while reading) outlives several ping rounds.
    let mut live = proxy.connect("/echo").await;
    let mut pacing = tokio::time::interval(Duration::from_millis(150));
    for i in 0..6 {
        pacing.tick().await;
        live.send(Message::text(format!("{i}")))
            .await
            .expect("send");
        assert_eq!(next(&mut live).await, Message::text(format!("{i}")));
    }
    drop((dead, live));
    proxy.shutdown().await;
}

/// Reads one unmasked frame from `stream`, `buf` holding what was read past the last one.
async fn frame_from<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    loop {
        if buf.len() >= 2 {
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                126 | 127 => (usize::MAX, 0),
                len => (usize::from(len), 2),
            };
            if len != usize::MAX && buf.len() >= header + len {
                let opcode = buf[0] & 0x0f;
                let payload = buf[header..header + len].to_vec();
                buf.drain(..header + len);
                return (opcode, payload);
            }
        }
        let mut chunk = [0u8; 65536];
        let n = within(stream.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_live_client_behind_a_backend_that_stops_reading_is_not_closed_for_idle() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    // A backend that takes the upgrade, then reads nothing until told to, then echoes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let tcp = accept_upgrade(&listener).await;
        let _ = resumed.await;
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_binary() && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let limits = "      message_rate: 100000/s\n      message_burst: 100000\n";
    let timeouts = "      idle: 1s\n      ping_interval: 200ms\n      pong_timeout: 200ms\n";
    let proxy = TestProxy::start_with("", &limited_route(&url, limits, timeouts)).await;
    let (head, session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    let (tls, mut buf) = session.into_parts();
    let (mut reader, mut writer) = tokio::io::split(tls);
    // A live client: it sends all it can and answers every ping, between its messages.
    let (pongs, mut to_answer) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let data = masked_frame(0x82, &[0x5a; 32 * 1024]);
    let sender = tokio::spawn(async move {
        loop {
            while let Ok(payload) = to_answer.try_recv() {
                if writer
                    .write_all(&masked_frame(0x8a, &payload))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if writer.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    // The backend takes nothing, so the client's pongs sit behind its data: still, over
    // several ping intervals and past `idle`, the proxy keeps pinging and closes nothing.
    let mut pings = 0;
    while pings < 8 {
        match frame_from(&mut reader, &mut buf).await {
            (0x9, payload) => {
                pings += 1;
                let _ = pongs.send(payload);
            }
            (0x8, payload) => panic!("closed after {pings} pings: {payload:?}"),
            (opcode, _) => panic!("unexpected frame {opcode:#x} while the backend reads nothing"),
        }
    }
    // The backend reads again: the client's data flows through and back.
    let _ = resume.send(());
    loop {
        match frame_from(&mut reader, &mut buf).await {
            (0x9, payload) => {
                let _ = pongs.send(payload);
            }
            (0x2, payload) => {
                assert_eq!(payload.len(), 32 * 1024);
                break;
            }
            (opcode, payload) => panic!("unexpected frame {opcode:#x}: {payload:?}"),
        }
    }
    sender.abort();
    let _ = sender.await;
    drop(reader);
    backend.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_the_proxy_buffers_little() {
    let mut backend = EchoBackend::start(&[]).await;
    let timeouts = "      pong_timeout: 500ms\n      ping_interval: 1h\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), "", timeouts)).await;
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    // The backend offers 64 MiB; the client reads nothing.
    session.send_text("blob:64:1048576").await;
    assert!(
        backend.next_close().await.is_some(),
        "the backend's session ended"
    );
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="1008"}"#,
        1.0,
    )
    .await;
    let metrics = proxy.metrics().await;
    let relayed = sample(
        &metrics,
        r#"wsgate_bytes_total{route="echo",direction="backend_to_client"}"#,
    );
    assert!(
        relayed < 32.0 * 1048576.0,
        "the proxy took {relayed} bytes for a client that reads nothing"
    );
    drop(session);
    proxy.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_get_protocol_close_codes() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      max_message_size: 64KiB\n";
    let proxy = TestProxy::start_with("", &limited_route(&backend.url(), limits, "")).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("reserved bit", masked_frame(0x81 | 0x40, b"hi"), 1002),
        ("unknown opcode", masked_frame(0x83, b"hi"), 1002),
        ("ping over 125 bytes", masked_frame(0x89, &[0u8; 126]), 1002),
        ("invalid UTF-8", masked_frame(0x81, &[0xff, 0xfe]), 1007),
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        // A 10 MiB frame header: refused before any payload arrives.
        (
            "declared length over the limit",
            vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0xa0, 0, 0, 0, 0, 0, 0],
            1009,
        ),
    ];
    for (name, frame, expected) in cases {
        let (head, mut session) = proxy
            .raw_session(&upgrade_request("/echo", &proxy.bearer()))
            .await;
        assert_eq!(status(&head), 101, "{head}");
        session.send_raw(&frame).await;
        assert_eq!(session.close_code().await, expected, "{name}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn slowloris_sockets_do_not_keep_a_real_client_out() {
    let backend = EchoBackend::start(&[]).await;
    // The sockets and the real client share 127.0.0.1 here: the per-address cap is lifted so
    // that this stays a test of 5,000 sockets holding their slots, not of that cap.
    let proxy = TestProxy::start_with(
        "  max_pending_per_ip: 10000\n",
        &route("echo", "/echo", &backend.url()),
    )
    .await;
    // 5,000 connections that each send one byte of a TLS record and then nothing.
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        tcp.write_all(&[0x16]).await.expect("write");
        idle.push(tcp);
    }
    let started = Instant::now();
    let mut ws = proxy.connect("/echo").await;
    let took = started.elapsed();
    ws.send(Message::text("through")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("through"));
    eprintln!("upgrade beside 5,000 slowloris sockets took {took:?}");
    // Generous: the point is that it completes while the sockets hold their slots.
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(ws);
    drop(idle);
    proxy.shutdown().await;
}

async fn upgrade_from(proxy: &TestProxy, client: &str) -> u16 {
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{}X-Forwarded-For: {client}\r\n", proxy.bearer()),
        ))
        .await;
    status(&answer)
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_prefix_and_mapped_addresses_are_ipv4() {
    let backend = EchoBackend::start(&[]).await;
    let limits = "      handshake_rate_per_ip: 1/m\n      handshake_burst_per_ip: 1\n";
    let routes = limited_route(&backend.url(), limits, "");
    let proxy = start_trusting(&routes).await;
    assert_eq!(upgrade_from(&proxy, "2001:db8:1:2::1").await, 101);
    assert_eq!(
        upgrade_from(&proxy, "[2001:db8:1:2:ffff::9]:443").await,
        429,
        "another address of the same /64 bought a new budget"
    );
    assert_eq!(upgrade_from(&proxy, "2001:db8:1:3::1").await, 101);
    assert_eq!(upgrade_from(&proxy, "192.0.2.1").await, 101);
    assert_eq!(
        upgrade_from(&proxy, "::ffff:192.0.2.1").await,
        429,
        "the IPv4-mapped form of an address bought a new budget"
    );
    proxy.shutdown().await;

    // The prefix is configurable: /128 keys every address on its own.
    let proxy = TestProxy::start_full(Setup {
        routes,
        top_extra: "trusted_proxies: [127.0.0.0/8]\n".to_owned(),
        listen_extra: "  ipv6_prefix: 128\n".to_owned(),
        ..Setup::default()
    })
    .await;
    assert_eq!(upgrade_from(&proxy, "2001:db8:1:2::1").await, 101);
    assert_eq!(upgrade_from(&proxy, "2001:db8:1:2::2").await, 101);
    assert_eq!(upgrade_from(&proxy, "2001:db8:1:2::2").await, 429);
    proxy.shutdown().await;
}

/// True once the proxy has closed `tcp` (end of stream or reset).
async fn closed(tcp: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(within(tcp.read(&mut buf)).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn connections_per_ip_before_the_upgrade_are_capped_before_tls() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_full(Setup {
        routes: route("echo", "/echo", &backend.url()),
        listen_extra: "  max_pending_per_ip: 2\n".to_owned(),
        ..Setup::default()
    })
    .await;
    // Two connections that never start TLS hold both places; a third is closed unanswered.
    let first = TcpStream::connect(proxy.addr).await.expect("connect");
    let second = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut third = TcpStream::connect(proxy.addr).await.expect("connect");
    assert!(closed(&mut third).await, "the third connection was served");
    wait_for_sample(
        &proxy,
        r#"wsgate_rate_limited_total{route="",kind="pending"}"#,
        1.0,
    )
    .await;
    // The first is still served: it finishes TLS and upgrades, which frees its place.
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls =
        within(tokio_rustls::TlsConnector::from(proxy.pki.client_config()).connect(name, first))
            .await
            .expect("TLS handshake on a connection under the cap");
    let answer = exchange(&mut tls, &upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 101, "{answer}");
    // So a new connection gets through.
    let fourth = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&fourth), 101, "{fourth}");
    drop((second, tls));
    proxy.shutdown().await;
}
