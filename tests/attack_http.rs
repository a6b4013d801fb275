//! Attacks on the HTTP side of the handshake: path tricks against route prefixes, Host and
//! SNI disagreeing, oversized heads, requests smuggled behind a refused upgrade, and control
//! characters aimed at the logs. Each attack asserts its exact outcome and that no backend was
//! contacted; each group has a control request that does reach the backend, so nothing passes
//! by refusing everything.

use std::net::{IpAddr, Ipv4Addr};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// An upgrade request like [`upgrade_request`], for another `Host`.
fn upgrade_for_host(host: &str, path: &str, extra: &str) -> Vec<u8> {
    let request = String::from_utf8(upgrade_request(path, extra)).expect("ascii");
    request
        .replacen("Host: localhost\r\n", &format!("Host: {host}\r\n"), 1)
        .into_bytes()
}

/// A route that admits only tokens whose `scope` holds `admin`.
fn admin_route(path: &str, backend: &str) -> String {
    format!(
        "  - name: admin\n    match:\n      path: {path}\n    backend: {backend}\n    auth:\n      provider: test\n      require_claims:\n        scope: [admin]\n    origins: any\n"
    )
}

/// `/public` and `/` lead to `open`, `/admin` (admin tokens only) to `admin`.
async fn public_and_admin(open: &EchoBackend, admin: &EchoBackend) -> TestProxy {
    let routes = format!(
        "{}{}{}",
        route("public", "/public", &open.url()),
        route("root", "/", &open.url()),
        admin_route("/admin", &admin.url()),
    );
    TestProxy::start_with("", &routes).await
}

#[tokio::test]
async fn path_tricks_are_refused_before_routing() {
    let open = EchoBackend::start(&[]).await;
    let admin = EchoBackend::start(&[]).await;
    let proxy = public_and_admin(&open, &admin).await;
    let bearer = proxy.bearer();
    let tricks = [
        "/public/../admin",
        "/public/./../admin",
        "/public/..",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/%252e%252e/admin",
        "/public/..;/admin",
        "/public/..%2Fadmin",
        "/public%2F..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5Cadmin",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/public/%00/../admin",
        "/%61dmin",
        "/%2561dmin",
        "//admin",
        "///admin",
        "/public//admin",
        "/public/",
        "*",
    ];
    // `/public/` is a trailing slash, not an empty segment: it is the one control in the
    // list, and the loop below expects 101 for it.
    for path in tricks {
        let answer = proxy.raw(&upgrade_request(path, &bearer)).await;
        let expected = if path == "/public/" { 101 } else { 400 };
        assert_eq!(status(&answer), expected, "{path}: {answer}");
    }
    assert_eq!(open.seen().len(), 1, "only /public/ reached a backend");
    assert_eq!(admin.seen().len(), 0, "nothing reached the admin backend");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_handshakes_total{route="",result="bad_request"}"#
        ),
        (tricks.len() - 1) as f64,
        "{metrics}"
    );

    // Controls: literal paths still route by their prefix, and /admin itself is guarded.
    for path in ["/public/room", "/other/x"] {
        let answer = proxy.raw(&upgrade_request(path, &bearer)).await;
        assert_eq!(status(&answer), 101, "{path}: {answer}");
    }
    let uris: Vec<String> = open.seen().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/", "/room", "/other/x"]);
    let answer = proxy.raw(&upgrade_request("/admin", &bearer)).await;
    assert_eq!(status(&answer), 403, "{answer}");
    let mut admin_claims = claims("root");
    admin_claims["scope"] = "admin".into();
    let admin_token = sign(&keys()[0], &admin_claims);
    let answer = proxy
        .raw(&upgrade_request(
            "/admin/panel",
            &format!("Authorization: Bearer {admin_token}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(admin.seen().len(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_host_other_than_the_tls_server_name_gets_421() {
    let public = EchoBackend::start(&[]).await;
    let internal = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: internal\n    match:\n      host: admin.internal\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n    origins: any\n{}",
        internal.url(),
        route("echo", "/echo", &public.url()),
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let bearer = proxy.bearer();
    let sni = || ServerName::try_from("localhost").expect("name");
    let no_sni = || ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));

    // SNI `localhost`, Host names another host: refused before routing.
    for host in [
        "admin.internal",
        "ADMIN.internal:443",
        "127.0.0.1",
        "localhost.evil",
    ] {
        let mut tls = tls_connect_as(proxy.addr, &proxy.pki, sni()).await;
        let answer = exchange(&mut tls, &upgrade_for_host(host, "/echo", &bearer)).await;
        assert_eq!(status(&answer), 421, "Host {host}: {answer}");
    }
    // The absolute form cannot name another host either.
    let mut tls = tls_connect_as(proxy.addr, &proxy.pki, sni()).await;
    let absolute = String::from_utf8(upgrade_request("/echo", &bearer))
        .expect("ascii")
        .replacen("GET /echo ", "GET https://admin.internal/echo ", 1);
    let answer = exchange(&mut tls, absolute.as_bytes()).await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert_eq!(public.seen().len() + internal.seen().len(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_handshakes_total{route="",result="misdirected"}"#
        ),
        4.0,
        "{metrics}"
    );

    // Controls: the same name in another case and with a port passes; without SNI (a client
    // that dialled an IP address) the Host header alone routes.
    let mut tls = tls_connect_as(proxy.addr, &proxy.pki, sni()).await;
    let answer = exchange(
        &mut tls,
        &upgrade_for_host("LocalHost:8443", "/echo", &bearer),
    )
    .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(public.seen().len(), 1);
    let mut tls = tls_connect_as(proxy.addr, &proxy.pki, no_sni()).await;
    let answer = exchange(
        &mut tls,
        &upgrade_for_host("admin.internal", "/echo", &bearer),
    )
    .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(
        internal.seen().len(),
        1,
        "routed by Host to the internal route"
    );
    proxy.shutdown().await;
}

/// Streams `head`, then `filler` bytes of one header value in 64 KiB writes, then the end of
/// the head, while reading the answer. Returns the answer and how the writing ended.
async fn flood(proxy: &TestProxy, head: &[u8], filler: usize) -> (String, std::io::Result<()>) {
    let (mut reader, mut writer) = tokio::io::split(proxy.tls().await);
    let head = head.to_vec();
    let writing = tokio::spawn(async move {
        writer.write_all(&head).await?;
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = filler;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            left -= n;
        }
        writer.write_all(b"\r\n\r\n").await?;
        writer.flush().await
    });
    let mut answer = Vec::new();
    let _ = within(reader.read_to_end(&mut answer)).await;
    let wrote = within(writing).await.expect("writer task");
    (String::from_utf8_lossy(&answer).into_owned(), wrote)
}

#[tokio::test]
async fn oversized_heads_get_431_without_being_buffered() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let bearer = proxy.bearer();

    // 2,000 small headers (about 20 KiB, under the size cap): the count cap answers.
    let many: String = (0..2000).map(|i| format!("X{i}: 1\r\n")).collect();
    let answer = proxy
        .raw(&upgrade_request("/echo", &format!("{bearer}{many}")))
        .await;
    assert_eq!(status(&answer), 431, "{answer}");

    // A 100 KiB subprotocol list is a 100 KiB header.
    let offers: Vec<String> = (0..100 * 1024 / 8).map(|i| format!("p{i:05}")).collect();
    let protocols = format!("Sec-WebSocket-Protocol: {}\r\n", offers.join(", "));
    assert!(protocols.len() >= 100 * 1024);
    let answer = proxy
        .raw(&upgrade_request("/echo", &format!("{bearer}{protocols}")))
        .await;
    assert_eq!(status(&answer), 431);

    // One 1 MiB header, streamed.
    let head = upgrade_request("/echo", &bearer);
    let open = &head[..head.len() - 2]; // without the blank line
    let mut start = open.to_vec();
    start.extend_from_slice(b"X-Big: ");
    let (answer, _) = flood(&proxy, &start, 1024 * 1024).await;
    assert_eq!(status(&answer), 431, "{answer}");

    // A 64 MiB header: the proxy answers and stops reading, so the sender fails long before
    // it is done (loopback socket buffers hold a few MiB at most).
    let (answer, wrote) = flood(&proxy, &start, 64 * 1024 * 1024).await;
    assert_eq!(status(&answer), 431, "{answer}");
    assert!(
        wrote.is_err(),
        "the proxy took all 64 MiB of one header without closing"
    );
    assert_eq!(backend.seen().len(), 0);

    // Controls: 95 headers and an 8 KiB subprotocol list (under both caps) pass.
    let some: String = (0..90).map(|i| format!("X{i}: 1\r\n")).collect();
    let offers: Vec<String> = (0..1024).map(|i| format!("p{i:05}")).collect();
    let protocols = format!("Sec-WebSocket-Protocol: {}\r\n", offers.join(", "));
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("{bearer}{some}{protocols}"),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x89"), Some("1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn nothing_is_smuggled_behind_a_refused_upgrade() {
    let refusal = b"HTTP/1.1 403 Forbidden\r\nX-Backend-Reason: nope\r\nContent-Length: 0\r\n\r\n";
    let backend = RawBackend::start(Some(refusal.to_vec())).await;
    let routes = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: ws://{}/\n    auth:\n      provider: test\n    origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n",
        backend.addr
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let bearer = proxy.bearer();
    let smuggled = upgrade_request("/echo/SMUGGLED", &bearer);
    let mut chunked = upgrade_request("/echo", &format!("Transfer-Encoding: chunked\r\n{bearer}"));
    chunked.extend_from_slice(format!("{:x}\r\n", smuggled.len()).as_bytes());
    chunked.extend_from_slice(&smuggled);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no token", upgrade_request("/echo", ""), 401),
        (
            "foreign Origin",
            upgrade_request(
                "/echo",
                &format!("{bearer}Origin: https://evil.example\r\n"),
            ),
            403,
        ),
        ("path trick", upgrade_request("/echo/../echo", &bearer), 400),
        (
            "Host other than SNI",
            upgrade_for_host("elsewhere.example", "/echo", &bearer),
            421,
        ),
        ("no route", upgrade_request("/nowhere", &bearer), 404),
        (
            "plain GET",
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            426,
        ),
        (
            "Content-Length body",
            upgrade_request(
                "/echo",
                &format!("{bearer}Content-Length: {}\r\n", smuggled.len()),
            ),
            400,
        ),
        ("chunked body", chunked, 400),
        (
            "Content-Length and chunked",
            upgrade_request(
                "/echo",
                &format!("{bearer}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
            ),
            400,
        ),
    ];
    for (what, first, expected) in cases {
        let mut request = first;
        request.extend_from_slice(&smuggled);
        let answer = proxy.raw(&request).await;
        assert_eq!(status(&answer), expected, "{what}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: one answer, then the connection closes: {answer}"
        );
        assert_eq!(backend.connections(), 0, "{what} reached the backend");
    }

    // Control: a valid upgrade reaches the backend, whose refusal is relayed, and the request
    // riding behind it is not forwarded.
    let mut request = upgrade_request("/echo", &bearer);
    request.extend_from_slice(&smuggled);
    let answer = proxy.raw(&request).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(answer.contains("x-backend-reason: nope"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(backend.connections(), 1);
    let received = backend.received.lock().expect("lock").clone();
    assert!(
        received
            .iter()
            .all(|bytes| !String::from_utf8_lossy(bytes).contains("SMUGGLED")),
        "the pipelined request reached the backend"
    );
    proxy.shutdown().await;
}

/// True for characters that a terminal or a log pipeline would act on.
fn is_control(c: char) -> bool {
    c.is_control() && c != '\n'
}

// One thread, so the thread-local subscriber sees the proxy's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn control_characters_from_clients_are_refused_or_escaped_in_logs() {
    let (capture, _guard) = LogCapture::start();
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n    origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n",
        backend.url()
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let csi = '\u{9b}'; // the 8-bit CSI: ESC [ for terminals that take C1 controls
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Bytes HTTP does not carry: the parser refuses them (400) before anything logs them.
        (
            "ESC in the path",
            b"GET /echo/\x1b[31mFORGED-1 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
        ),
        (
            "CR in Origin",
            upgrade_request("/echo", "Origin: https://app.example.com\rFORGED-2: x\r\n"),
            400,
        ),
        (
            "LF in User-Agent",
            upgrade_request("/echo", "User-Agent: ua\n\x1b[31mFORGED-3 line\r\n"),
            400,
        ),
        (
            "ESC in User-Agent",
            upgrade_request("/echo", "User-Agent: \x1b[31mFORGED-4\x1b[0m\r\n"),
            400,
        ),
        (
            "ESC in Origin",
            upgrade_request("/echo", "Origin: https://\x1b[31mFORGED-5\r\n"),
            400,
        ),
        // Bytes HTTP does carry: percent-encoded controls in the path, and C1 controls as
        // UTF-8 (obs-text) in header values. Refused later, with an access-log line.
        (
            "escaped CR LF ESC in the path",
            upgrade_request("/echo/%1B%5B31m%0D%0AFORGED-6", ""),
            401,
        ),
        (
            "C1 CSI in User-Agent",
            upgrade_request("/echo", &format!("User-Agent: {csi}31mFORGED-7\r\n")),
            401,
        ),
        (
            "C1 CSI in Origin",
            upgrade_request(
                "/echo",
                &format!("{}Origin: https://{csi}31mFORGED-8\r\n", proxy.bearer()),
            ),
            403,
        ),
    ];
    for (what, request, expected) in cases {
        let answer = proxy.raw(&request).await;
        assert_eq!(status(&answer), expected, "{what}: {answer}");
        assert!(
            !answer.contains("FORGED"),
            "{what}: the answer echoes client text: {answer}"
        );
    }
    assert_eq!(backend.seen().len(), 0);

    // Control: a session whose token's `sub` (logged when it closes) holds controls.
    let sub = format!("mallory\u{1b}[31m\r\nFORGED-9{csi}");
    let token = sign(&keys()[0], &claims(&sub));
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {token}\r\nUser-Agent: {csi}FORGED-10\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(backend.seen().len(), 1);
    proxy.shutdown().await;

    let logs = capture.text();
    let raw: Vec<&str> = logs
        .lines()
        .filter(|line| line.chars().any(is_control))
        .collect();
    assert!(
        raw.is_empty(),
        "raw control characters in the logs: {raw:?}"
    );
    assert!(
        !logs
            .lines()
            .any(|line| line.trim_start().starts_with("FORGED")),
        "a forged log line: {logs}"
    );
    let line = |marker: &str| {
        logs.lines()
            .find(|line| line.contains(marker))
            .unwrap_or_else(|| panic!("no log line for {marker}: {logs}"))
            .to_owned()
    };
    assert!(
        line("FORGED-6").contains(r#"path="/echo/%1B%5B31m%0D%0AFORGED-6""#),
        "{}",
        line("FORGED-6")
    );
    // The subject is also on every line inside its connection's span: take the access line.
    let closed = logs
        .lines()
        .find(|l| l.contains("FORGED-9") && l.contains("session closed"))
        .unwrap_or_else(|| panic!("no access line for FORGED-9: {logs}"));
    assert!(
        closed.contains("session closed")
            && closed.contains(r#"sub="mallory\u{1b}[31m\r\nFORGED-9\u{9b}""#),
        "{closed}"
    );
}
