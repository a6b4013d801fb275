//! Busy polling (`listen.busy_poll`): with two worker threads and one session, the proxy keeps
//! polling for a while after each message it moves, reading its sockets itself. Each test runs
//! on its own two-thread runtime with the longest window, so what a peer does right after a
//! message goes through that path: data, the end of either stream, a protocol error, a broken
//! TLS record.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

/// The name of the test runtimes' threads, to find their CPU time.
const THREADS: &str = "busy-poll-test";

/// Runs `test` on a runtime of two worker threads (the proxy spins only with more workers than
/// sessions; `#[tokio::test]` has one).
fn on_two_workers<F: Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test)
}

/// A proxy on `/echo` to `backend` that polls 1 ms after each message, with message rates out
/// of the way.
async fn busy_proxy(backend: &str) -> TestProxy {
    let routes = route("echo", "/echo", backend)
        + "    limits:\n      message_rate: 100000/s\n      message_burst: 100000\n";
    TestProxy::start_with("  busy_poll: 1ms\n", &routes).await
}

/// A hand-spoken session on `/echo` whose first message has just come back: the proxy is
/// inside its busy-poll window.
async fn spinning_raw_session(proxy: &TestProxy) -> RawSession {
    let (head, mut session) = proxy
        .raw_session(&upgrade_request("/echo", &proxy.bearer()))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    session.send_text("hi").await;
    assert_eq!(session.read_frame().await, (0x1, b"hi".to_vec()));
    session
}

/// CPU time, in clock ticks, of this process's threads named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let dir = task.expect("a task entry").path();
        // A thread may end between the listing and the reads.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        // After the command's closing parenthesis: state (field 3) ... utime (14), stime (15).
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split(' ')
            .collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        total += ticks(11) + ticks(12);
    }
    total
}

#[test]
fn relays_exactly_and_stops_with_the_traffic() {
    on_two_workers(async {
        let mut backend = EchoBackend::start(&[]).await;
        let proxy = busy_proxy(&backend.url()).await;
        let mut ws = proxy.connect("/echo").await;
        for i in 0..500u32 {
            let payload = i.to_be_bytes().repeat(i as usize % 300 + 1);
            ws.send(Message::binary(payload.clone()))
                .await
                .expect("send");
            assert_eq!(next(&mut ws).await, Message::binary(payload));
            let text = format!("message {i}");
            ws.send(Message::text(text.clone())).await.expect("send");
            assert_eq!(next(&mut ws).await, Message::text(text));
        }
        // Messages larger than any buffer, multi-byte text split across reads.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::binary(big));
        let text = "żółw 🐢 ".repeat(20_000);
        ws.send(Message::text(text.clone())).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::text(text));
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .expect("send");
        match within(ws.next()).await {
            Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("expected a pong, got {other:?}"),
        }
        // Nothing moves now: the proxy's threads sleep. A spin that went on would take most
        // of a core (about 100 ticks a second) even on a machine busy with other tests.
        let before = thread_ticks(THREADS);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let spent = thread_ticks(THREADS) - before;
        assert!(
            spent <= 10,
            "idle for 1 s, the runtime's threads used {spent} ticks"
        );
        // And the session still works after its threads slept.
        ws.send(Message::text("after the pause"))
            .await
            .expect("send");
        assert_eq!(next(&mut ws).await, Message::text("after the pause"));
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .expect("close");
        assert_eq!(backend.next_close().await, Some(1000));
        proxy.shutdown().await;
    });
}

#[test]
fn a_backend_dropping_tcp_right_after_a_message_gives_the_client_1014() {
    on_two_workers(async {
        let backend = EchoBackend::start(&[]).await;
        let proxy = busy_proxy(&backend.url()).await;
        let mut session = spinning_raw_session(&proxy).await;
        session.send_text("drop").await;
        assert_eq!(session.close_code().await, 1014);
        proxy.shutdown().await;
    });
}

#[test]
fn a_client_dropping_tcp_right_after_a_message_gives_the_backend_1001() {
    on_two_workers(async {
        let mut backend = EchoBackend::start(&[]).await;
        let proxy = busy_proxy(&backend.url()).await;
        let mut ws = proxy.connect("/echo").await;
        ws.send(Message::text("hi")).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::text("hi"));
        drop(ws);
        assert_eq!(backend.next_close().await, Some(1001));
        proxy.shutdown().await;
    });
}

#[test]
fn invalid_utf8_right_after_a_message_closes_with_1007() {
    on_two_workers(async {
        let mut backend = EchoBackend::start(&[]).await;
        let proxy = busy_proxy(&backend.url()).await;
        let mut session = spinning_raw_session(&proxy).await;
        session.send_raw(&masked_frame(0x81, &[0xff, 0xfe])).await;
        assert_eq!(session.close_code().await, 1007);
        // The invalid bytes never reach the backend; the frame's header had gone out, so no close
        // frame can follow it: the backend's connection ends at once (1006), as without busy
        // polling.
        assert_eq!(backend.next_close().await, Some(1006));
        proxy.shutdown().await;
    });
}

#[test]
fn a_broken_tls_record_right_after_a_message_gives_the_backend_1001() {
    on_two_workers(async {
        let mut backend = EchoBackend::start(&[]).await;
        let proxy = busy_proxy(&backend.url()).await;
        let mut session = spinning_raw_session(&proxy).await;
        // An application-data record whose ciphertext does not authenticate.
        session
            .send_under_tls(&[
                0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
            ])
            .await;
        assert_eq!(backend.next_close().await, Some(1001));
        wait_for_sample(
            &proxy,
            r#"wsgate_closes_total{route="echo",code="1006"}"#,
            1.0,
        )
        .await;
        proxy.shutdown().await;
    });
}
