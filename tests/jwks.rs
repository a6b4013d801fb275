//! The provider's keys over time: rotation, floods of unknown kids, failures of the JWKS
//! endpoint, staleness, and removed keys.

use std::sync::Arc;

use serde_json::json;
use wsgate_core::auth::jwks::KeyStore;
use wsgate_core::auth::{Authenticator, Error};
use wsgate_core::config::Config;
use wsgate_core::metrics::Metrics;

use crate::support::*;

/// Waits until the JWKS server has answered more than `seen` requests.
async fn fetched_after(jwks: &JwksServer, seen: usize) {
    within(async {
        while jwks.requests() <= seen {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    let before = proxy.jwks.requests();
    proxy.jwks.publish(&[keys()[0].clone(), keys()[1].clone()]);
    let rotated = sign(&keys()[1], &claims("alice"));
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {rotated}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(proxy.jwks.requests(), before + 1, "exactly one refetch");
    proxy.shutdown().await;
}

/// A provider and authenticator on their own, against a real JWKS server.
async fn authenticator(jwks: &JwksServer, extra: &str) -> (Arc<Authenticator>, Arc<KeyStore>) {
    let pki = Pki::new();
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  address: 127.0.0.1:0\n\
         providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {}\n    audiences: [{AUDIENCE}]\n{extra}routes: []\n",
        pki.cert_path.display(),
        pki.key_path.display(),
        jwks.url
    );
    let config = Config::parse(&yaml, pki.dir.path(), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new();
    let provider = config.providers[0].clone();
    let store =
        Arc::new(KeyStore::new(provider.clone(), metrics.provider(&provider.name)).expect("store"));
    assert!(store.refresh().await, "first fetch");
    (Arc::new(Authenticator::new(vec![store.clone()])), store)
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let jwks = JwksServer::start(&keys()[..1]).await;
    let (auth, _) = authenticator(&jwks, "    refetch_cooldown: 30s\n").await;
    let before = jwks.requests();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let auth = auth.clone();
        let token = sign_raw(
            &keys()[0],
            &json!({"alg": "RS256", "kid": format!("random-{i}")}),
            &claims("alice"),
        );
        tasks.push(tokio::spawn(
            async move { auth.verify(0, &token).await.err() },
        ));
    }
    for task in tasks {
        assert_eq!(
            within(task).await.expect("task"),
            Some(Error::InvalidToken("unknown_key"))
        );
    }
    assert_eq!(
        jwks.requests(),
        before + 1,
        "1,000 unknown kids caused more than one fetch"
    );
    // The known key still verifies, without another fetch.
    assert!(
        auth.verify(0, &sign(&keys()[0], &claims("alice")))
            .await
            .is_ok()
    );
    assert_eq!(jwks.requests(), before + 1);
}

#[tokio::test]
async fn a_verified_token_is_served_from_the_cache_but_a_removed_key_is_not() {
    let jwks = JwksServer::start(&keys()[..2]).await;
    let (auth, store) = authenticator(&jwks, "    refetch_cooldown: 0s\n").await;
    let token = sign(&keys()[0], &claims("alice"));
    assert!(auth.verify(0, &token).await.is_ok());
    // While the endpoint is down, the cached verification keeps serving.
    jwks.set_mode(Mode::Status(500));
    assert!(!store.refresh().await);
    assert!(auth.verify(0, &token).await.is_ok());
    // After a refresh without rsa-1, the cached entry no longer counts.
    jwks.set_mode(Mode::Serve);
    jwks.publish(&keys()[1..2]);
    assert!(store.refresh().await);
    assert_eq!(
        auth.verify(0, &token).await.err(),
        Some(Error::InvalidToken("unknown_key"))
    );
}

#[tokio::test]
async fn jwks_failures_keep_the_last_good_keys_and_are_counted() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_full(Setup {
        provider_extra: "    refresh_interval: 50ms\n".to_owned(),
        routes: route("echo", "/echo", &backend.url()),
        ..Setup::default()
    })
    .await;
    let failures = [
        (Mode::Status(500), "bad_status"),
        (Mode::Html, "malformed"),
        (Mode::NotJson, "malformed"),
        (Mode::Huge, "too_large"),
        (Mode::RedirectAway, "unreachable"),
    ];
    for (mode, result) in failures {
        proxy.jwks.set_mode(mode.clone());
        let series = format!(r#"wsgate_jwks_refresh_total{{provider="test",result="{result}"}}"#);
        within(async {
            while sample(&proxy.metrics().await, &series) < 1.0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
        assert_eq!(status(&answer), 101, "{mode:?}: {answer}");
    }
    // A set with no usable key (only a symmetric one) fails too, and keeps the old keys.
    proxy.jwks.set_mode(Mode::Serve);
    proxy.jwks.publish(&[]);
    let series = r#"wsgate_jwks_refresh_total{provider="test",result="no_usable_key"}"#;
    within(async {
        while sample(&proxy.metrics().await, series) < 1.0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 101, "{answer}");
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_jwks_that_never_answers_gives_503_and_not_ready() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start_full(Setup {
        routes: route("echo", "/echo", &format!("ws://{}/", backend.addr)),
        ready: false,
        jwks_mode: Mode::Status(503),
        ..Setup::default()
    })
    .await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 503);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"wsgate_jwks_age_seconds{provider="test"} +Inf"#)
            || metrics.contains(r#"wsgate_jwks_age_seconds{provider="test"} inf"#),
        "{metrics}"
    );
    assert_eq!(backend.connections(), 0);
    // Once the provider answers, the proxy becomes ready on its own.
    proxy.jwks.set_mode(Mode::Serve);
    proxy.wait_ready().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn keys_older_than_max_stale_are_dropped() {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start_full(Setup {
        provider_extra: "    refresh_interval: 50ms\n    max_stale: 500ms\n".to_owned(),
        routes: route("echo", "/echo", &format!("ws://{}/", backend.addr)),
        ..Setup::default()
    })
    .await;
    let seen = proxy.jwks.requests();
    proxy.jwks.set_mode(Mode::Status(500));
    fetched_after(&proxy.jwks, seen).await;
    within(async {
        while http_get(proxy.admin, "/readyz").await.0 != 503 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 503, "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_private_identity_provider_is_trusted_through_ca_file_only() {
    let idp = Pki::new();
    let jwks = JwksServer::start_tls(&keys()[..1], idp.server_config()).await;
    let provider = |extra: &str| {
        format!(
            "providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {}\n    audiences: [{AUDIENCE}]\n{extra}",
            jwks.url
        )
    };
    let base = |pki: &Pki, providers: String| {
        format!(
            "listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  address: 127.0.0.1:0\n{providers}routes: []\n",
            pki.cert_path.display(),
            pki.key_path.display()
        )
    };
    let metrics = Metrics::new();
    // Without ca_file the private CA is not trusted: the fetch fails.
    let pki = Pki::new();
    let config = Config::parse(&base(&pki, provider("")), pki.dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let untrusting =
        KeyStore::new(config.providers[0].clone(), metrics.provider("test")).expect("store");
    assert!(
        !untrusting.refresh().await,
        "an unknown CA must not be trusted"
    );
    // With ca_file it is, and tokens verify.
    let with_ca = provider(&format!("    ca_file: {}\n", idp.ca_path.display()));
    let config = Config::parse(&base(&pki, with_ca), pki.dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(
        KeyStore::new(config.providers[0].clone(), metrics.provider("test")).expect("store"),
    );
    assert!(store.refresh().await, "the configured CA is trusted");
    let auth = Authenticator::new(vec![store]);
    assert!(
        auth.verify(0, &sign(&keys()[0], &claims("alice")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn keys_of_different_types_may_share_a_kid() {
    // RFC 7517 section 4.5: one kid for an RSA key and an EC key; the algorithm tells them
    // apart (the set used to keep only the last key of a kid).
    let backend = EchoBackend::start(&[]).await;
    let rsa = keys()[0].clone();
    let mut ec = keys()[2].clone();
    ec.kid = rsa.kid.clone();
    ec.jwk["kid"] = rsa.kid.clone().into();
    let proxy = TestProxy::start_full(Setup {
        routes: route("echo", "/echo", &backend.url()),
        jwks_keys: vec![rsa.clone(), ec.clone()],
        ..Setup::default()
    })
    .await;
    for key in [&rsa, &ec] {
        let auth = format!("Authorization: Bearer {}\r\n", sign(key, &claims("alice")));
        let answer = proxy.raw(&upgrade_request("/echo", &auth)).await;
        assert_eq!(status(&answer), 101, "{:?}: {answer}", key.alg);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_jwks_redirect_from_https_to_http_is_refused() {
    // Both servers on 127.0.0.1: the same host, so only the scheme tells them apart.
    let idp = Pki::new();
    let plain = JwksServer::start(&keys()[..1]).await;
    let secure = JwksServer::start_tls(&keys()[..1], idp.server_config()).await;
    let other_secure = JwksServer::start_tls(&keys()[..1], idp.server_config()).await;
    let pki = Pki::new();
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  address: 127.0.0.1:0\n\
         providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {}\n    audiences: [{AUDIENCE}]\n    ca_file: {}\nroutes: []\n",
        pki.cert_path.display(),
        pki.key_path.display(),
        secure.url,
        idp.ca_path.display(),
    );
    let config = Config::parse(&yaml, pki.dir.path(), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new();
    let store =
        KeyStore::new(config.providers[0].clone(), metrics.provider("test")).expect("store");
    secure.set_mode(Mode::RedirectTo(plain.url.clone()));
    assert!(
        !store.refresh().await,
        "keys were taken over plain http after a redirect from https"
    );
    assert_eq!(plain.requests(), 0, "the http URL was fetched");
    // A redirect that stays on https (same host) is still followed.
    secure.set_mode(Mode::RedirectTo(other_secure.url.clone()));
    assert!(store.refresh().await, "an https redirect on the same host");
    assert_eq!(other_secure.requests(), 1);
}
