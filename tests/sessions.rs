//! Live session control: the admin API, revocation, hot reload, certificate rotation, and
//! timers that leave nothing behind.

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

async fn start(routes: &str) -> TestProxy {
    TestProxy::start_full(Setup {
        routes: routes.to_owned(),
        admin_extra: format!("  token: {ADMIN_TOKEN}\n"),
        ..Setup::default()
    })
    .await
}

fn bearer(sub: &str, jti: &str) -> String {
    let mut c = claims(sub);
    c["jti"] = jti.into();
    format!("Bearer {}", sign(&keys()[0], &c))
}

async fn open(
    proxy: &TestProxy,
    path: &str,
    bearer: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    proxy
        .connect_with(path, &[("authorization", bearer)])
        .await
        .expect("upgrade")
        .0
}

async fn admin(proxy: &TestProxy, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, text) = admin_call(proxy.admin, method, path, Some(ADMIN_TOKEN), body).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    for token in [
        None,
        Some("wrong-token-of-some-length"),
        Some(&proxy.token[..]),
    ] {
        let (code, _) = admin_call(proxy.admin, "GET", "/admin/sessions", token, "").await;
        assert_eq!(code, 401, "{token:?}");
    }
    assert_eq!(admin(&proxy, "GET", "/admin/sessions", "").await.0, 200);
    proxy.shutdown().await;
    // Without a configured token every admin call is refused.
    let open_proxy = TestProxy::start(&backend.url()).await;
    let (code, _) = admin_call(
        open_proxy.admin,
        "GET",
        "/admin/sessions",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(code, 401);
    open_proxy.shutdown().await;
}

#[tokio::test]
async fn sessions_are_listed_and_filtered() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let a = open(&proxy, "/echo", &bearer("alice", "a-1")).await;
    let b = open(&proxy, "/echo", &bearer("bob", "b-1")).await;
    let (code, all) = admin(&proxy, "GET", "/admin/sessions", "").await;
    assert_eq!(code, 200);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let (_, alice) = admin(&proxy, "GET", "/admin/sessions?sub=alice&route=echo", "").await;
    let alice = alice.as_array().expect("array");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0]["sub"], "alice");
    assert_eq!(alice[0]["jti"], "a-1");
    assert_eq!(alice[0]["route"], "echo");
    assert!(
        alice[0]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert!(alice[0]["expires"].as_u64().is_some_and(|e| e > now()));
    drop((a, b));
    proxy.shutdown().await;
}

#[tokio::test]
async fn revoking_a_session_closes_only_it_with_4003() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let alice = bearer("alice", "a-1");
    let mut first = open(&proxy, "/echo", &alice).await;
    let mut second = open(&proxy, "/echo", &alice).await;
    let (_, list) = admin(&proxy, "GET", "/admin/sessions", "").await;
    let id = list[0]["id"].as_u64().expect("id");
    let (code, answer) = admin(
        &proxy,
        "POST",
        "/admin/revoke",
        &format!(r#"{{"session": {id}}}"#),
    )
    .await;
    assert_eq!((code, answer["closed"].as_u64()), (200, Some(1)));
    assert_eq!(close_code(&mut first).await, Some(4003));
    second
        .send(Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(next(&mut second).await, Message::text("still here"));
    // A session revocation does not refuse the token.
    let third = open(&proxy, "/echo", &alice).await;
    drop((first, second, third));
    proxy.shutdown().await;
}

#[tokio::test]
async fn revoking_a_subject_closes_its_sessions_and_refuses_it_until_lifted() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let alice = bearer("alice", "a-1");
    let mut a1 = open(&proxy, "/echo", &alice).await;
    let mut a2 = open(&proxy, "/echo", &bearer("alice", "a-2")).await;
    let mut bob = open(&proxy, "/echo", &bearer("bob", "b-1")).await;
    let (code, answer) = admin(
        &proxy,
        "POST",
        "/admin/revoke",
        r#"{"sub": "alice", "ttl": "1h"}"#,
    )
    .await;
    assert_eq!((code, answer["closed"].as_u64()), (200, Some(2)));
    assert_eq!(close_code(&mut a1).await, Some(4003));
    assert_eq!(close_code(&mut a2).await, Some(4003));
    bob.send(Message::text("unaffected")).await.expect("send");
    assert_eq!(next(&mut bob).await, Message::text("unaffected"));
    // The token was verified (and cached) before; the revocation still refuses it.
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: {alice}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    assert!(answer.contains("revoked"), "{answer}");
    let (_, list) = admin(&proxy, "GET", "/admin/revocations", "").await;
    assert_eq!(list[0]["kind"], "sub");
    assert_eq!(list[0]["value"], "alice");
    assert!(
        list[0]["until"].as_u64().is_some_and(|u| u > now() + 3000),
        "{list}"
    );
    let (code, lifted) = admin(&proxy, "DELETE", "/admin/revocations?sub=alice", "").await;
    assert_eq!((code, lifted["lifted"].as_bool()), (200, Some(true)));
    let again = open(&proxy, "/echo", &alice).await;
    drop((a1, a2, bob, again));
    proxy.shutdown().await;
}

#[tokio::test]
async fn revoking_a_token_id_refuses_that_token_only() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let stolen = bearer("alice", "stolen");
    let mut victim = open(&proxy, "/echo", &stolen).await;
    let (code, answer) = admin(&proxy, "POST", "/admin/revoke", r#"{"jti": "stolen"}"#).await;
    assert_eq!((code, answer["closed"].as_u64()), (200, Some(1)));
    assert_eq!(close_code(&mut victim).await, Some(4003));
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: {stolen}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    // Alice's other tokens still work.
    let fresh = open(&proxy, "/echo", &bearer("alice", "fresh")).await;
    let (code, _) = admin(&proxy, "POST", "/admin/revoke", r#"{"nothing": 1}"#).await;
    assert_eq!(code, 400);
    drop((victim, fresh));
    wait_for_sample(
        &proxy,
        r#"wsgate_closes_total{route="echo",code="4003"}"#,
        1.0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_broken_reload_keeps_the_running_configuration() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let mut session = open(&proxy, "/echo", &bearer("alice", "a-1")).await;
    std::fs::write(
        &proxy.config_path,
        proxy.yaml.replace("path: /echo", "path: echo"),
    )
    .expect("write");
    let (code, answer) = admin(&proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["error"][0]
            .as_str()
            .is_some_and(|e| e.contains("routes[0].match.path")),
        "{answer}"
    );
    // Old configuration still serves old and new sessions.
    session.send(Message::text("still")).await.expect("send");
    assert_eq!(next(&mut session).await, Message::text("still"));
    let other = open(&proxy, "/echo", &bearer("bob", "b-1")).await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, r#"wsgate_config_reloads_total{result="error"}"#),
        1.0,
        "{metrics}"
    );
    drop((session, other));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_live_session_does_not_keep_the_configuration_it_arrived_under() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let mut session = open(&proxy, "/echo", &bearer("alice", "a-1")).await;
    session.send(Message::text("before")).await.expect("send");
    assert_eq!(next(&mut session).await, Message::text("before"));
    let arrived_under = proxy.reloader.generation();
    assert!(arrived_under.is_alive());
    // A reload that leaves the route as it was: the session stays, its generation goes.
    proxy.reloader.reload().expect("reload");
    assert!(
        !arrived_under.is_alive(),
        "the replaced configuration is still held"
    );
    session.send(Message::text("after")).await.expect("send");
    assert_eq!(next(&mut session).await, Message::text("after"));
    drop(session);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_closes_exactly_the_sessions_it_concerns() {
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "{}  - name: shared\n    match:\n      path: /shared\n    backend: {url}\n    auth:\n      provider: test\n    origins:\n      allow: [https://a.example, https://b.example]\n",
        route("doomed", "/doomed", &backend.url()),
        url = backend.url()
    );
    let proxy = start(&routes).await;
    let jwks_before = proxy.jwks.requests();
    let mut doomed = open(&proxy, "/doomed", &bearer("alice", "d")).await;
    let (mut from_a, _) = proxy
        .connect_with(
            "/shared",
            &[
                ("authorization", &bearer("alice", "a")),
                ("origin", "https://a.example"),
            ],
        )
        .await
        .expect("upgrade");
    let (mut from_b, _) = proxy
        .connect_with(
            "/shared",
            &[
                ("authorization", &bearer("bob", "b")),
                ("origin", "https://b.example"),
            ],
        )
        .await
        .expect("upgrade");
    // The new file drops /doomed and no longer allows b.example.
    let shared_only = format!(
        "  - name: shared\n    match:\n      path: /shared\n    backend: {}\n    auth:\n      provider: test\n    origins:\n      allow: [https://a.example]\n",
        backend.url()
    );
    let start = proxy.yaml.find("routes:\n").expect("routes") + "routes:\n".len();
    std::fs::write(
        &proxy.config_path,
        format!("{}{shared_only}", &proxy.yaml[..start]),
    )
    .expect("write");
    let (code, answer) = admin(&proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["closed_route_removed"], 1, "{answer}");
    assert_eq!(answer["closed_policy_changed"], 1, "{answer}");
    assert_eq!(close_code(&mut doomed).await, Some(1001));
    assert_eq!(close_code(&mut from_b).await, Some(4003));
    from_a.send(Message::text("kept")).await.expect("send");
    assert_eq!(next(&mut from_a).await, Message::text("kept"));
    // New handshakes use the new file at once; the unchanged provider kept its keys.
    let answer = proxy
        .raw(&upgrade_request("/doomed", &proxy.bearer()))
        .await;
    assert_eq!(status(&answer), 404, "{answer}");
    assert_eq!(
        proxy.jwks.requests(),
        jwks_before,
        "no refetch for an unchanged provider"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, r#"wsgate_config_reloads_total{result="ok"}"#),
        1.0,
        "{metrics}"
    );
    drop((doomed, from_a, from_b));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_clients_while_old_sessions_stay() {
    let backend = EchoBackend::start(&[]).await;
    let mut proxy = start(&route("echo", "/echo", &backend.url())).await;
    let metrics = proxy.metrics().await;
    assert!(
        sample(&metrics, "wsgate_tls_cert_expiry_seconds") > 86_400.0,
        "{metrics}"
    );
    let mut old_session = open(&proxy, "/echo", &bearer("alice", "a")).await;
    // Rotation swaps the files (a new CA, so old and new are told apart), then reloads.
    let rotated = Pki::new();
    std::fs::copy(&rotated.cert_path, &proxy.pki.cert_path).expect("cert");
    std::fs::copy(&rotated.key_path, &proxy.pki.key_path).expect("key");
    let (code, answer) = admin(&proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 200, "{answer}");
    old_session.send(Message::text("old")).await.expect("send");
    assert_eq!(next(&mut old_session).await, Message::text("old"));
    // A client that trusts only the new CA gets through.
    let old_pki = std::mem::replace(&mut proxy.pki, rotated);
    let fresh = open(&proxy, "/echo", &bearer("bob", "b")).await;
    // A broken pair (the configured key file overwritten) keeps the current certificate.
    std::fs::write(&old_pki.key_path, "not a key").expect("write");
    let (code, _) = admin(&proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 422);
    let another = open(&proxy, "/echo", &bearer("carol", "c")).await;
    drop((old_session, fresh, another, old_pki));
    proxy.shutdown().await;
}

#[tokio::test]
async fn many_sessions_with_staggered_expiry_leave_no_tasks_behind() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_full(Setup {
        provider_extra: "    leeway: 0s\n".to_owned(),
        // 300 handshakes from one address: lift the per-IP rate out of the way.
        routes: route("echo", "/echo", &backend.url())
            + "    limits:\n      handshake_rate_per_ip: 10000/s\n      handshake_burst_per_ip: 10000\n",
        ..Setup::default()
    })
    .await;
    let runtime = tokio::runtime::Handle::current().metrics();
    let baseline = runtime.num_alive_tasks();
    let mut sessions = Vec::new();
    for i in 0..300u64 {
        let mut c = claims(&format!("user-{i}"));
        c["exp"] = (now() + 2 + i % 3).into();
        let bearer = format!("Bearer {}", sign(&keys()[0], &c));
        sessions.push(open(&proxy, "/echo", &bearer).await);
    }
    // Half close early; the rest run into their expiry.
    let mut expiring = Vec::new();
    for (i, ws) in sessions.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(ws);
        } else {
            expiring.push(ws);
        }
    }
    for ws in &mut expiring {
        assert_eq!(close_code(ws).await, Some(4001));
    }
    drop(expiring);
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 0.0).await;
    within(async {
        while runtime.num_alive_tasks() > baseline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_changed_file_is_reloaded_without_a_signal() {
    let backend = EchoBackend::start(&[]).await;
    let routes = format!(
        "{}{}",
        route("kept", "/kept", &backend.url()),
        route("gone", "/gone", &backend.url())
    );
    let proxy = TestProxy::start_full(Setup {
        routes,
        watch: true,
        ..Setup::default()
    })
    .await;
    let mut gone = open(&proxy, "/gone", &bearer("alice", "g")).await;
    let cut = proxy.yaml.find("  - name: gone").expect("route");
    std::fs::write(&proxy.config_path, &proxy.yaml[..cut]).expect("write");
    // The watcher debounces, then reloads: the removed route's session is closed.
    assert_eq!(close_code(&mut gone).await, Some(1001));
    wait_for_sample(&proxy, r#"wsgate_config_reloads_total{result="ok"}"#, 1.0).await;
    let answer = proxy.raw(&upgrade_request("/gone", &proxy.bearer())).await;
    assert_eq!(status(&answer), 404, "{answer}");
    drop(gone);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_changes_other_limits_keeps_the_subject_counts() {
    let backend = EchoBackend::start(&[]).await;
    let capped = |rate: &str| {
        format!(
            "{}    limits:\n      max_connections_per_subject: 1\n      message_rate: {rate}\n",
            route("echo", "/echo", &backend.url())
        )
    };
    let proxy = start(&capped("100/s")).await;
    let first = open(&proxy, "/echo", &bearer("alice", "1")).await;
    let over = |jti: &'static str| {
        let proxy = &proxy;
        async move {
            let auth = format!("Authorization: {}\r\n", bearer("alice", jti));
            status(&proxy.raw(&upgrade_request("/echo", &auth)).await)
        }
    };
    assert_eq!(over("2").await, 429, "the cap before the reload");
    // Only the message rate changes: alice's live session still holds her one slot.
    let start = proxy.yaml.find("routes:\n").expect("routes") + "routes:\n".len();
    std::fs::write(
        &proxy.config_path,
        format!("{}{}", &proxy.yaml[..start], capped("50/s")),
    )
    .expect("write");
    let (code, answer) = admin(&proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(over("3").await, 429, "the cap after the reload");
    drop(first);
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_query_values_are_percent_decoded() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let ws = open(&proxy, "/echo", &bearer("auth0|123", "p-1")).await;
    let (code, list) = admin(&proxy, "GET", "/admin/sessions?sub=auth0%7C123", "").await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let revoke = r#"{"sub": "auth0|123"}"#;
    assert_eq!(admin(&proxy, "POST", "/admin/revoke", revoke).await.0, 200);
    let (code, lifted) = admin(&proxy, "DELETE", "/admin/revocations?sub=auth0%7C123", "").await;
    assert_eq!(
        (code, &lifted["lifted"]),
        (200, &Value::Bool(true)),
        "{lifted}"
    );
    drop(ws);
    proxy.shutdown().await;
}

#[tokio::test]
async fn out_of_range_revocation_ttls_get_400_and_the_admin_api_stays_up() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    for body in [
        r#"{"sub": "alice", "ttl": 18446744073709551615}"#,
        r#"{"jti": "j-1", "ttl": 18446744073709551615}"#,
        r#"{"sub": "alice", "ttl": "5124095576030431h"}"#,
        r#"{"sub": "alice", "ttl": "876001h"}"#,
        r#"{"sub": "alice", "ttl": -1}"#,
    ] {
        let (code, answer) = admin(&proxy, "POST", "/admin/revoke", body).await;
        assert_eq!(code, 400, "{body}: {answer}");
    }
    // Nothing was revoked, and the API still answers.
    let (code, list) = admin(&proxy, "GET", "/admin/revocations", "").await;
    assert_eq!((code, list), (200, serde_json::json!([])));
    let (code, _) = admin(
        &proxy,
        "POST",
        "/admin/revoke",
        r#"{"sub": "alice", "ttl": "87600h"}"#,
    )
    .await;
    assert_eq!(code, 200, "ten years is the longest ttl");
    proxy.shutdown().await;
}

/// Tokens are accepted until `exp` plus the provider's leeway, so a revocation of a live
/// token id must last that long too.
#[tokio::test]
async fn a_jti_revocation_lasts_through_the_leeway() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    // Past its exp, inside the default 30 s leeway: still accepted.
    let mut late = claims("alice");
    late["exp"] = (now() - 5).into();
    late["jti"] = "late-1".into();
    let token = format!("Bearer {}", sign(&keys()[0], &late));
    let mut session = open(&proxy, "/echo", &token).await;
    let (code, answer) = admin(&proxy, "POST", "/admin/revoke", r#"{"jti": "late-1"}"#).await;
    assert_eq!((code, answer["closed"].as_u64()), (200, Some(1)));
    assert_eq!(close_code(&mut session).await, Some(4003));
    let (_, list) = admin(&proxy, "GET", "/admin/revocations", "").await;
    assert!(
        list[0]["until"].as_u64().is_some_and(|u| u >= now() + 20),
        "lasts until exp + leeway: {list}"
    );
    let answer = proxy
        .raw(&upgrade_request(
            "/echo",
            &format!("Authorization: {token}\r\n"),
        ))
        .await;
    assert_eq!(status(&answer), 401, "{answer}");
    proxy.shutdown().await;
}

/// The route of `proxy`'s file rewritten to admit only the origin https://a.example (requests
/// without an Origin are then refused), and reloaded.
async fn reload_with_a_stricter_origin(proxy: &TestProxy, backend: &str) {
    let strict = format!(
        "  - name: echo\n    match:\n      path: /echo\n    backend: {backend}\n    auth:\n      provider: test\n    origins:\n      allow: [https://a.example]\n"
    );
    let start = proxy.yaml.find("routes:\n").expect("routes") + "routes:\n".len();
    std::fs::write(
        &proxy.config_path,
        format!("{}{strict}", &proxy.yaml[..start]),
    )
    .expect("write");
    let (code, answer) = admin(proxy, "POST", "/admin/reload", "").await;
    assert_eq!(code, 200, "{answer}");
}

#[tokio::test]
async fn a_request_is_judged_by_the_file_in_force_when_it_arrives() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    // TLS is done before the reload; the upgrade request comes after it.
    let mut tls = proxy.tls().await;
    reload_with_a_stricter_origin(&proxy, &backend.url()).await;
    let answer = exchange(&mut tls, &upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(backend.seen().is_empty(), "the backend was contacted");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_admitted_just_before_a_reload_is_checked_against_the_new_file() {
    use tokio::io::AsyncReadExt;
    // A backend that holds its 101 until the test has reloaded.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let (arrived, mut on_arrival) = tokio::sync::mpsc::channel::<()>(1);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let gate = tokio::spawn(async move {
        let (mut tcp, key) = read_upgrade(&listener).await;
        arrived.send(()).await.expect("arrived");
        released.await.expect("release");
        answer_upgrade(&mut tcp, &key).await;
        // Hold the connection until the proxy ends it.
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let proxy = start(&route("echo", "/echo", &url)).await;
    let request = upgrade_request("/echo", &proxy.bearer());
    let client = async {
        let (head, mut session) = proxy.raw_session(&request).await;
        assert_eq!(status(&head), 101, "{head}");
        session.close_code().await
    };
    let reload = async {
        within(on_arrival.recv())
            .await
            .expect("the request reached the backend");
        reload_with_a_stricter_origin(&proxy, &url).await;
        release.send(()).expect("release");
    };
    let (code, ()) = within(async { tokio::join!(client, reload) }).await;
    assert_eq!(code, 4003, "the new file no longer admits the session");
    within(gate).await.expect("backend");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_is_revoked_by_its_listed_id_or_that_id_in_a_string() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = start(&route("echo", "/echo", &backend.url())).await;
    let mut alice = open(&proxy, "/echo", &bearer("alice", "a-1")).await;
    let mut bob = open(&proxy, "/echo", &bearer("bob", "b-1")).await;
    let (_, list) = admin(&proxy, "GET", "/admin/sessions", "").await;
    let id_of = |sub: &str| {
        list.as_array()
            .expect("a list")
            .iter()
            .find(|s| s["sub"] == sub)
            .map(|s| s["id"].clone())
            .expect("listed")
    };
    // The id exactly as listed.
    let body = serde_json::json!({ "session": id_of("alice") }).to_string();
    let (code, answer) = admin(&proxy, "POST", "/admin/revoke", &body).await;
    assert_eq!(
        (code, answer["closed"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    assert_eq!(close_code(&mut alice).await, Some(4003));
    // A string holding it (17 -> "17").
    let body = serde_json::json!({ "session": id_of("bob").to_string() }).to_string();
    let (code, answer) = admin(&proxy, "POST", "/admin/revoke", &body).await;
    assert_eq!(
        (code, answer["closed"].as_u64()),
        (200, Some(1)),
        "{body}: {answer}"
    );
    assert_eq!(close_code(&mut bob).await, Some(4003));
    // Anything else is no session id.
    for bad in [
        r#"{"session": "x1"}"#,
        r#"{"session": -1}"#,
        r#"{"session": 1.5}"#,
    ] {
        assert_eq!(
            admin(&proxy, "POST", "/admin/revoke", bad).await.0,
            400,
            "{bad}"
        );
    }
    proxy.shutdown().await;
}
