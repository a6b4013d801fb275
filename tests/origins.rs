//! Origin allowlists against cross-site WebSocket hijacking, checked before the token.

use crate::support::*;

fn routes(backend: &str) -> String {
    format!(
        "  - name: strict\n    match:\n      path: /echo\n    backend: {backend}\n    auth:\n      provider: test\n\
         \x20   origins:\n      allow: [https://app.example.com, \"https://*.corp.example.com\"]\n\
         \x20 - name: cli\n    match:\n      path: /cli\n    backend: {backend}\n    auth:\n      provider: test\n\
         \x20   origins:\n      allow: [https://app.example.com]\n      allow_missing: true\n"
    )
}

#[tokio::test]
async fn allowed_origins_pass_and_lookalikes_get_403() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_with("", &routes(&backend.url())).await;
    let bearer = proxy.bearer();
    for origin in [
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM:443",
        "https://eu.corp.example.com",
    ] {
        let answer = proxy
            .raw(&upgrade_request(
                "/echo",
                &format!("{bearer}Origin: {origin}\r\n"),
            ))
            .await;
        assert_eq!(status(&answer), 101, "{origin}: {answer}");
    }
    let admitted = backend.seen().len();
    let refused = [
        "Origin: https://app.example.com.evil.com\r\n",
        "Origin: https://evilapp.example.com\r\n",
        "Origin: https://corp.example.com\r\n",
        "Origin: http://app.example.com\r\n",
        "Origin: https://app.example.com:8443\r\n",
        "Origin: https://app.example.com/path\r\n",
        "Origin: null\r\n",
        "Origin: https://app.example.com\r\nOrigin: https://app.example.com\r\n",
        "",
    ];
    for origin in refused {
        let answer = proxy
            .raw(&upgrade_request("/echo", &format!("{bearer}{origin}")))
            .await;
        assert_eq!(status(&answer), 403, "{origin:?}: {answer}");
    }
    assert_eq!(
        backend.seen().len(),
        admitted,
        "a refused origin reached the backend"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_auth_failures_total{route="strict",reason="origin"}"#
        ),
        refused.len() as f64,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_origin_is_checked_before_the_token() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start_with("", &routes(&format!("ws://{}/", backend.addr))).await;
    // No token and a foreign origin: 403, not 401, and no signature work was needed.
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            "Origin: https://evil.example\r\n",
        ))
        .await;
    assert_eq!(status(&answer), 403, "{answer}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_auth_failures_total{route="strict",reason="missing"}"#
        ),
        0.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn allow_missing_admits_clients_without_an_origin_only_where_set() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_with("", &routes(&backend.url())).await;
    let answer = proxy.raw(&upgrade_request("/cli", &proxy.bearer())).await;
    assert_eq!(status(&answer), 101, "{answer}");
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 403, "{answer}");
    // allow_missing does not admit a wrong origin.
    let answer = proxy
        .raw(&upgrade_request(
            "/cli",
            &format!("{}Origin: https://evil.example\r\n", proxy.bearer()),
        ))
        .await;
    assert_eq!(status(&answer), 403, "{answer}");
    proxy.shutdown().await;
}
