//! Every refusal before the 101, with its status, and that the backend is not contacted.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test]
async fn plain_get_gets_426_with_upgrade_header() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let answer = proxy
        .raw(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(status(&answer), 426, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("upgrade: websocket"),
        "{answer}"
    );
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_upgrades_get_400_and_a_wrong_version_426() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let cases: [(&[u8], u16); 6] = [
        (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
        (b"GET /echo HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-base64-16-bytes\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426),
    ];
    for (request, expected) in cases {
        let answer = proxy.raw(request).await;
        assert_eq!(
            status(&answer),
            expected,
            "{}\n->\n{answer}",
            String::from_utf8_lossy(request)
        );
        if expected == 426 {
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        backend.connections(),
        0,
        "the backend must not be contacted"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_handshakes_total{route="",result="bad_request"}"#
        ),
        5.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn unrouted_path_gets_404() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    for path in ["/", "/other", "/echoes"] {
        let answer = proxy.raw(&upgrade_request(path, "")).await;
        assert_eq!(status(&answer), 404, "{path}: {answer}");
    }
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_down_gives_502() {
    // A port that was just free: nothing listens there any more.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = TestProxy::start(&format!("ws://{closed}/")).await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 502, "{answer}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_backend_errors_total{route="echo",kind="backend_refused"}"#
        ),
        1.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn silent_backend_gives_504_after_backend_connect() {
    let backend = RawBackend::start(None).await;
    let route = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: ws://{}/\n    auth:\n      provider: test\n    origins: any\n    timeouts:\n      backend_connect: 200ms\n",
        backend.addr
    );
    let proxy = TestProxy::start_with("", &route).await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 504, "{answer}");
    assert_eq!(backend.connections(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_refusal_is_relayed_as_is_and_nothing_is_smuggled() {
    let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Backend-Reason: nope\r\nContent-Length: 6\r\n\r\ndenied".to_vec();
    let backend = RawBackend::start(Some(refusal)).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    // A second request rides behind the upgrade in the same write.
    let mut request = upgrade_request("/echo", &proxy.bearer());
    request.extend_from_slice(b"GET /admin HTTP/1.1\r\nHost: backend\r\n\r\n");
    let answer = proxy.raw(&request).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(answer.contains("x-backend-reason: nope"), "{answer}");
    assert!(answer.ends_with("denied"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "exactly one answer: {answer}"
    );
    let received = backend.received.lock().expect("lock").clone();
    assert_eq!(received.len(), 1);
    let text = String::from_utf8_lossy(&received[0]);
    assert!(
        !text.contains("/admin"),
        "smuggled request reached the backend: {text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_101_with_a_wrong_accept_gives_502() {
    let bogus = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n".to_vec();
    let backend = RawBackend::start(Some(bogus)).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 502, "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_headers_under_the_cap_pass() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    let answer = proxy.raw(&upgrade_request("/echo", &big)).await;
    assert_eq!(status(&answer), 431, "{answer}");
    let fits = format!("X-Big: {}\r\n", "a".repeat(16 * 1024));
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{}{fits}", proxy.bearer()),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert!(
        backend
            .seen()
            .iter()
            .all(|r| r.header("x-big").is_some_and(|v| v.len() == 16 * 1024))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_off_at_the_handshake_deadline() {
    let backend = RawBackend::start(None).await;
    let route = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: ws://{}/\n    auth:\n      provider: test\n    origins: any\n",
        backend.addr
    );
    let proxy = TestProxy::start_with("  handshake_timeout: 300ms\n", &route).await;
    // No TLS at all: the proxy must close the socket.
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = within(silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the proxy to close, got {read:?}"
    );
    // TLS done, then half a request head and silence.
    let mut slow = proxy.tls().await;
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: local")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = within(slow.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains(" 101 "),
        "{rest:?}"
    );
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_get_503() {
    let backend = EchoBackend::start(&[]).await;
    let route = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n    origins: any\n",
        backend.url()
    );
    let proxy = TestProxy::start_with("  max_connections: 2\n", &route).await;
    let first = proxy.connect("/echo").await;
    let second = proxy.connect("/echo").await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(
        backend.seen().len(),
        2,
        "the refused one never reached the backend"
    );
    drop((first, second));
    proxy.shutdown().await;
}

/// A stricter route must not be skipped by writing its path so that the proxy matches another
/// route while the backend resolves the stricter one: Tomcat, Jetty and Spring strip `;params`
/// from each segment, and ASP.NET Core and SignalR match paths without regard to case.
#[tokio::test]
async fn paths_that_match_another_route_once_params_or_case_are_ignored_get_400() {
    let backend = EchoBackend::start(&[]).await;
    let url = backend.url();
    let routes = format!(
        "  - name: admin\n    match:\n      path: /ws/admin\n    backend: {url}\n    auth:\n      provider: test\n      require_claims:\n        roles: admin\n    origins: any\n{}{}",
        route("ws", "/ws", &url),
        route("root", "/", &url),
    );
    let proxy = TestProxy::start_with("", &routes).await;
    // alice's token has no admin role: the admin route refuses her, the others admit her.
    assert_eq!(
        status(
            &proxy
                .raw(&upgrade_request("/ws/admin", &proxy.bearer()))
                .await
        ),
        403
    );
    for path in [
        "/ws/admin;x",
        "/ws/admin;jsessionid=1/feed",
        "/ws;x/admin",
        "/WS/ADMIN",
        "/ws/Admin",
        "/Ws/admin;v=2",
    ] {
        let answer = proxy.raw(&upgrade_request(path, &proxy.bearer())).await;
        assert_eq!(status(&answer), 400, "{path}: {answer}");
    }
    // Parameters and capitals that lead to the same route change nothing.
    for (path, expected) in [
        ("/ws/chat;v=2", 101),
        ("/ws/Chat", 101),
        ("/other;x", 101),
        ("/ws/admin/;x", 403),
    ] {
        let answer = proxy.raw(&upgrade_request(path, &proxy.bearer())).await;
        assert_eq!(status(&answer), expected, "{path}: {answer}");
    }
    assert_eq!(
        backend.seen().len(),
        3,
        "only the unambiguous admitted requests reached the backend"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_handshakes_total{route="",result="bad_request"}"#
        ),
        6.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn series_without_a_route_are_refusals_before_routing_only() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let answer = proxy.raw(&upgrade_request("/nowhere", "")).await;
    assert_eq!(status(&answer), 404, "{answer}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_handshakes_total{route="",result="no_route"}"#
        ),
        1.0
    );
    // Sessions, messages and bytes never happen without a route: no series says they could.
    for line in metrics.lines().filter(|l| l.contains(r#"route="""#)) {
        assert!(
            [
                "wsgate_handshakes_total{",
                "wsgate_handshake_duration_seconds_",
                "wsgate_rate_limited_total{"
            ]
            .iter()
            .any(|family| line.starts_with(family)),
            "{line}"
        );
    }
    proxy.shutdown().await;
}
