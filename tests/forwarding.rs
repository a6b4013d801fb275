//! What the backend receives: its path, forwarding headers, and nothing hop-by-hop.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn backend_gets_the_rest_of_the_path_and_clean_forwarding_headers() {
    let backend = EchoBackend::start(&[]).await;
    let route = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: ws://{}/base?v=2\n    auth:\n      provider: test\n    origins: any\n",
        backend.addr
    );
    let proxy = TestProxy::start_with("", &route).await;
    let bearer = format!("Bearer {}", proxy.token);
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=6.6.6.6"),
        (
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        ),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("x-custom", "kept"),
    ];
    let (mut ws, response) = proxy
        .connect_with("/echo/room/7?x=1", &headers)
        .await
        .expect("upgrade");
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "compression is declined"
    );
    ws.send(Message::text("ping")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("ping"));

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.uri, "/base/room/7?v=2&x=1");
    assert_eq!(request.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(request.headers_named("x-forwarded-proto"), ["https"]);
    assert_eq!(
        request.header("x-forwarded-host"),
        Some(format!("localhost:{}", proxy.addr.port()).as_str())
    );
    assert_eq!(
        request.header("host"),
        Some(backend.addr.to_string().as_str())
    );
    assert_eq!(request.header("x-custom"), Some("kept"));
    for absent in [
        "forwarded",
        "sec-websocket-extensions",
        "proxy-authorization",
    ] {
        assert_eq!(
            request.header(absent),
            None,
            "{absent} must not reach the backend"
        );
    }
    let key = request.header("sec-websocket-key").expect("a key");
    assert_eq!(key.len(), 24);
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_chosen_subprotocol_is_returned_to_the_client() {
    let backend = EchoBackend::start(&["chat.v2"]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let (ws, response) = proxy
        .connect_with(
            "/echo",
            &[
                ("sec-websocket-protocol", "chat.v1, chat.v2"),
                ("authorization", &format!("Bearer {}", proxy.token)),
            ],
        )
        .await
        .expect("upgrade");
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    assert_eq!(chosen, Some("chat.v2"));
    assert_eq!(
        backend.seen()[0].header("sec-websocket-protocol"),
        Some("chat.v1, chat.v2")
    );
    drop(ws);
    // A backend that picks nothing: the 101 has no subprotocol either.
    let plain = EchoBackend::start(&[]).await;
    let proxy2 = TestProxy::start(&plain.url()).await;
    let head = proxy2
        .raw(&upgrade_request(
            "/echo",
            &format!("{}Sec-WebSocket-Protocol: chat.v1\r\n", proxy2.bearer()),
        ))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    proxy.shutdown().await;
    proxy2.shutdown().await;
}

#[tokio::test]
async fn headers_named_by_connection_are_hop_by_hop() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let request = String::from_utf8(upgrade_request(
        "/echo",
        &format!(
            "{}X-Hop: only for the proxy\r\nX-Kept: yes\r\n",
            proxy.bearer()
        ),
    ))
    .expect("ascii")
    .replace("Connection: Upgrade\r\n", "Connection: Upgrade, X-Hop\r\n");
    let head = proxy.raw(request.as_bytes()).await;
    assert_eq!(status(&head), 101, "{head}");
    let seen = backend.seen();
    assert_eq!(seen[0].header("x-hop"), None);
    assert_eq!(seen[0].header("x-kept"), Some("yes"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn host_routes_pick_their_own_backends() {
    let a = EchoBackend::start(&[]).await;
    let b = EchoBackend::start(&[]).await;
    let routes = format!(
        "  - name: any-host\n    match:\n      path: /\n    backend: {}\n    auth:\n      provider: test\n    origins: any\n  - name: localhost\n    match:\n      host: localhost\n      path: /echo\n    backend: {}\n    auth:\n      provider: test\n    origins: any\n",
        a.url(),
        b.url()
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let ws = proxy.connect("/echo/x").await;
    let ws2 = proxy.connect("/elsewhere").await;
    drop((ws, ws2));
    assert_eq!(b.seen().len(), 1, "the host route wins for /echo");
    assert_eq!(b.seen()[0].uri, "/x");
    assert_eq!(a.seen().len(), 1, "the catch-all takes the rest");
    assert_eq!(a.seen()[0].uri, "/elsewhere");
    proxy.shutdown().await;
}

/// Found by the `token_extract` fuzz target (fuzz/regressions/token_extract/): copies of the
/// token where the route does not read it (a plain subprotocol entry, the query, a cookie)
/// reached the backend, and so did a bearer value that was not read (not UTF-8, or a tab):
/// the first are now stripped, the second refused before the backend is contacted.
#[tokio::test]
async fn copies_of_the_token_and_unread_bearer_values_never_reach_the_backend() {
    let backend = EchoBackend::start(&["chat"]).await;
    let routes = format!(
        "{}{}",
        route("echo", "/echo", &backend.url()).replace(
            "provider: test\n",
            "provider: test\n      token_from: [header]\n"
        ),
        route("query", "/query", &backend.url()).replace(
            "provider: test\n",
            "provider: test\n      token_from: [header, query]\n"
        ),
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let token = proxy.token.clone();
    let bearer = format!("Bearer {token}");
    let offer = format!("chat, {token}, bearer, {token}");
    let cookie = format!("session=s1; jwt={token}");
    let (ws, response) = proxy
        .connect_with(
            &format!("/echo?room=1&access_token={token}"),
            &[
                ("authorization", &bearer),
                ("sec-websocket-protocol", &offer),
                ("cookie", &cookie),
            ],
        )
        .await
        .expect("upgrade");
    drop(ws);
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii")),
        Some("chat")
    );
    let seen = backend.seen();
    let [request] = &seen[..] else {
        panic!("one backend handshake, saw {}", seen.len());
    };
    assert!(request.uri.ends_with("?room=1"), "{request:?}");
    assert_eq!(request.header("cookie"), Some("session=s1"));
    assert_eq!(
        request.header("sec-websocket-protocol"),
        Some("chat, bearer")
    );
    assert!(
        !format!("{request:?}").contains(&token),
        "the backend saw the token"
    );

    let with_header = |header: &[u8]| {
        let mut bytes = upgrade_request(&format!("/query?access_token={token}"), "");
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes
    };
    for header in [
        [
            b"Authorization: Bearer ".as_slice(),
            token.as_bytes(),
            b"\xff",
        ]
        .concat(),
        [b"Authorization: Bearer\t".as_slice(), token.as_bytes()].concat(),
    ] {
        let answer = proxy.raw(&with_header(&header)).await;
        assert_eq!(status(&answer), 401, "{answer}");
        assert!(answer.contains(r#"error="invalid_request""#), "{answer}");
    }
    assert_eq!(backend.seen().len(), 1, "refusals never reach the backend");
    proxy.shutdown().await;
}

/// Copies of the token that no transport reads (in the path, in another header, in a quoted
/// cookie value) are refused as a whole request, before the backend is contacted.
#[tokio::test]
async fn a_token_anywhere_else_in_the_request_is_refused_before_the_backend() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let token = proxy.token.clone();
    let bearer = proxy.bearer();
    let cases = [
        (format!("/echo/{token}"), bearer.clone()),
        ("/echo".to_owned(), format!("{bearer}X-Token: {token}\r\n")),
        (
            "/echo".to_owned(),
            format!("{bearer}Cookie: jwt=\"{token}\"\r\n"),
        ),
        (
            "/echo?note=x{token}x".replace("{token}", &token),
            bearer.clone(),
        ),
    ];
    for (path, headers) in &cases {
        let answer = proxy.raw(&upgrade_request(path, headers)).await;
        assert_eq!(status(&answer), 401, "{path} {headers}\n->\n{answer}");
        assert!(answer.contains(r#"error="invalid_request""#), "{answer}");
    }
    assert!(backend.seen().is_empty(), "refused before the backend");
    // The same request without the extra copy is admitted.
    let answer = proxy.raw(&upgrade_request("/echo", &bearer)).await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(backend.seen().len(), 1);
    proxy.shutdown().await;
}

/// A Cookie header with a byte past ASCII (browsers send UTF-8 cookie values) was skipped
/// whole: a copy of the token in it reached a header-only route's backend, and a cookie
/// route did not find its token there.
#[tokio::test]
async fn cookies_are_read_as_bytes_so_a_non_ascii_one_hides_nothing() {
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "{}{}",
        route("echo", "/echo", &backend.url()).replace(
            "provider: test\n",
            "provider: test\n      token_from: [header]\n"
        ),
        route("cookie", "/cookie", &backend.url())
            .replace(
                "provider: test\n",
                "provider: test\n      token_from: [cookie]\n"
            )
            .replace(
                "origins: any\n",
                "origins:\n      allow: [https://app.example.com]\n"
            ),
    );
    let proxy = TestProxy::start_with("", &routes).await;
    let token = proxy.token.clone();
    let request = |path: &str, extra: &str, cookie: &[u8]| {
        let mut bytes = upgrade_request(path, extra);
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(b"Cookie: name=Jos\xc3\xa9; ");
        bytes.extend_from_slice(cookie);
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes
    };
    let copy = format!("jwt={token}");
    let answer = proxy
        .raw(&request("/echo", &proxy.bearer(), copy.as_bytes()))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    let read = format!("access_token={token}");
    let answer = proxy
        .raw(&request(
            "/cookie",
            "Origin: https://app.example.com\r\n",
            read.as_bytes(),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "both upgrades reached the backend");
    for request in &seen {
        assert_eq!(request.header("cookie"), Some("name=José"), "{request:?}");
        assert!(
            !format!("{request:?}").contains(&token),
            "the backend saw the token"
        );
    }
    proxy.shutdown().await;
}
