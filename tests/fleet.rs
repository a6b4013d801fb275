//! Fleet state over Redis (DESIGN.md section 10): several proxies in this process share one
//! real `redis-server` and behave as one proxy: revocations, per-subject caps, per-address
//! handshake rates and the session listing span the fleet, and a Redis outage loses nothing.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A proxy named `instance` in the fleet on `redis`, with one route `echo` to `backend`
/// (`limits` indented under it) and extra `cluster` keys. The lease is 2s unless they set
/// one: long enough that a busy test machine never lets a live instance's lease lapse.
async fn member(
    redis: &str,
    instance: &str,
    backend: &EchoBackend,
    limits: &str,
    cluster_extra: &str,
) -> TestProxy {
    let lease = if cluster_extra.contains("lease:") {
        ""
    } else {
        "  lease: 2s\n"
    };
    TestProxy::start_full(Setup {
        top_extra: format!(
            "cluster:\n  redis: {redis}\n  instance: {instance}\n{lease}{cluster_extra}"
        ),
        admin_extra: format!("  token: {ADMIN_TOKEN}\n"),
        routes: format!("{}{limits}", route("echo", "/echo", &backend.url())),
        ..Setup::default()
    })
    .await
}

fn bearer(sub: &str) -> String {
    format!("Bearer {}", sign(&keys()[0], &claims(sub)))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn open(proxy: &TestProxy, sub: &str) -> Result<Ws, u16> {
    match proxy
        .connect_with("/echo", &[("authorization", &bearer(sub))])
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

async fn admin(proxy: &TestProxy, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, text) = admin_call(proxy.admin, method, path, Some(ADMIN_TOKEN), body).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The session still relays.
async fn echoes(ws: &mut Ws) {
    within(ws.send(Message::text("still here")))
        .await
        .expect("send");
    assert_eq!(next(ws).await, Message::text("still here"));
}

/// Polls `check` until it holds (or [`WAIT`] runs out).
async fn eventually<F: Future<Output = bool>>(mut check: impl FnMut() -> F) {
    within(async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_revocation_on_one_instance_closes_and_refuses_on_every_instance() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let a = member(&redis.url(), "a", &backend, "", "").await;
    let b = member(&redis.url(), "b", &backend, "", "").await;
    let mut on_b = open(&b, "alice").await.expect("alice on b");
    let (code, _) = admin(&a, "POST", "/admin/revoke", r#"{"sub": "alice"}"#).await;
    assert_eq!(code, 200);
    let started = Instant::now();
    assert_eq!(close_code(&mut on_b).await, Some(4003));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(open(&b, "alice").await.err(), Some(401));
    // An instance started after the revocation learns it before it is ready.
    let c = member(&redis.url(), "c", &backend, "", "").await;
    assert_eq!(open(&c, "alice").await.err(), Some(401));
    assert!(open(&c, "bob").await.is_ok());
    let metrics = c.metrics().await;
    assert_eq!(sample(&metrics, "wsgate_cluster_up"), 1.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "wsgate_cluster_instances"),
        3.0,
        "{metrics}"
    );
    // Lifted on one instance, lifted on all.
    let (code, _) = admin(&c, "DELETE", "/admin/revocations?sub=alice", "").await;
    assert_eq!(code, 200);
    eventually(|| async { open(&b, "alice").await.is_ok() }).await;
    for proxy in [a, b, c] {
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_subject_cap_counts_sessions_on_every_instance() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let limits = "    limits:\n      max_connections_per_subject: 2\n";
    let a = member(&redis.url(), "a", &backend, limits, "").await;
    let b = member(&redis.url(), "b", &backend, limits, "").await;
    let first = open(&a, "alice").await.expect("first");
    let _second = open(&b, "alice").await.expect("second");
    assert_eq!(open(&a, "alice").await.err(), Some(429));
    assert_eq!(open(&b, "alice").await.err(), Some(429));
    assert!(
        open(&a, "bob").await.is_ok(),
        "other subjects are not capped"
    );
    drop(first);
    // The slot frees in Redis shortly after the session ends (never on the relay path).
    eventually(|| async { open(&b, "alice").await.is_ok() }).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_killed_instance_stops_counting_after_its_lease() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let limits = "    limits:\n      max_connections_per_subject: 1\n";
    let mut a = member(&redis.url(), "a", &backend, limits, "").await;
    let b = member(&redis.url(), "b", &backend, limits, "").await;
    let _held = open(&a, "alice").await.expect("on a");
    assert_eq!(open(&b, "alice").await.err(), Some(429));
    // No drain and no goodbye: a stops renewing its lease, as a SIGKILLed process would.
    a.abort();
    let started = Instant::now();
    eventually(|| async { open(&b, "alice").await.is_ok() }).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_clean_shutdown_frees_its_slots_at_once() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let limits = "    limits:\n      max_connections_per_subject: 1\n";
    let a = member(&redis.url(), "a", &backend, limits, "").await;
    let b = member(&redis.url(), "b", &backend, limits, "").await;
    let mut held = open(&a, "alice").await.expect("on a");
    assert_eq!(open(&b, "alice").await.err(), Some(429));
    a.shutdown().await;
    assert_eq!(close_code(&mut held).await, Some(1001));
    // No lease to wait for: a said goodbye.
    assert!(open(&b, "alice").await.is_ok());
    b.shutdown().await;
}

#[tokio::test]
async fn the_handshake_rate_counts_every_instance() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let limits = "    limits:\n      handshake_rate_per_ip: 1/m\n      handshake_burst_per_ip: 3\n";
    let a = member(&redis.url(), "a", &backend, limits, "").await;
    let b = member(&redis.url(), "b", &backend, limits, "").await;
    let mut sessions = Vec::new();
    for (proxy, sub) in [(&a, "u1"), (&b, "u2"), (&a, "u3")] {
        sessions.push(open(proxy, sub).await.expect("within the burst"));
    }
    // b has seen one handshake from this address, the fleet three.
    assert_eq!(open(&b, "u4").await.err(), Some(429));
    let metrics = b.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"wsgate_rate_limited_total{route="echo",kind="handshake"}"#
        ),
        1.0
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_across_the_fleet() {
    let redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let a = member(&redis.url(), "a", &backend, "", "").await;
    let b = member(&redis.url(), "b", &backend, "", "").await;
    let _alice = open(&a, "alice").await.expect("alice");
    let mut bob = open(&b, "bob").await.expect("bob");
    let listed = |proxy: &TestProxy| {
        let admin = proxy.admin;
        async move {
            let (_, text) =
                admin_call(admin, "GET", "/admin/sessions", Some(ADMIN_TOKEN), "").await;
            serde_json::from_str::<Vec<Value>>(&text).unwrap_or_default()
        }
    };
    // b writes its sessions to Redis as they start, off the handshake.
    eventually(|| async { listed(&a).await.len() == 2 }).await;
    let sessions = listed(&a).await;
    let ids: Vec<(&str, &str)> = sessions
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or(""),
                s["instance"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(ids.contains(&("a:1", "a")), "{sessions:?}");
    assert!(ids.contains(&("b:1", "b")), "{sessions:?}");
    let (code, answer) = admin(&a, "GET", "/admin/sessions?sub=bob", "").await;
    assert_eq!((code, answer.as_array().map(Vec::len)), (200, Some(1)));
    // A session of b revoked through a, by the id the listing gives.
    let (code, answer) = admin(&a, "POST", "/admin/revoke", r#"{"session": "b:1"}"#).await;
    assert_eq!((code, &answer["closed"]), (200, &Value::from(1)));
    assert_eq!(close_code(&mut bob).await, Some(4003));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn sessions_survive_a_redis_outage_and_its_revocations_reach_the_fleet_after() {
    let mut redis = RedisServer::start().await;
    let backend = EchoBackend::start(&[]).await;
    let a = member(&redis.url(), "a", &backend, "", "").await;
    let b = member(&redis.url(), "b", &backend, "", "").await;
    let mut alice = open(&a, "alice").await.expect("alice");
    let mut bob = open(&b, "bob").await.expect("bob");
    let mut bob_on_a = open(&a, "bob").await.expect("bob on a");
    redis.kill();
    for proxy in [&a, &b] {
        wait_for_sample(proxy, "wsgate_cluster_up", 0.0).await;
    }
    echoes(&mut alice).await;
    echoes(&mut bob).await;
    // `local`: new handshakes go on, and a revocation is answered and applied here at once.
    let mut carol = open(&b, "carol").await.expect("admitted on local state");
    let (code, _) = admin(&a, "POST", "/admin/revoke", r#"{"sub": "bob"}"#).await;
    assert_eq!(code, 200);
    assert_eq!(close_code(&mut bob_on_a).await, Some(4003));
    assert_eq!(http_get(a.admin, "/readyz").await.0, 200);
    // Redis comes back empty; a hands its revocation over and b closes bob's session.
    redis.restart().await;
    assert_eq!(close_code(&mut bob).await, Some(4003));
    echoes(&mut alice).await;
    echoes(&mut carol).await;
    wait_for_sample(&b, "wsgate_cluster_up", 1.0).await;
    let metrics = b.metrics().await;
    let errors: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("wsgate_cluster_errors_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "{metrics}");
    // A later instance learns it from the refilled Redis.
    let c = member(&redis.url(), "c", &backend, "", "").await;
    assert_eq!(open(&c, "bob").await.err(), Some(401));
    for proxy in [a, b, c] {
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn refuse_mode_answers_503_and_is_not_ready_until_redis_answers() {
    // A port nothing listens on yet; the Redis started on it later is the fleet's.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_full(Setup {
        top_extra: format!(
            "cluster:\n  redis: redis://127.0.0.1:{port}/0\n  instance: r\n  lease: 1s\n  on_unavailable: refuse\n"
        ),
        routes: route("echo", "/echo", &backend.url()),
        ready: false,
        ..Setup::default()
    })
    .await;
    eventually(|| async {
        let (code, body) = http_get(proxy.admin, "/readyz").await;
        code == 503 && body.contains("unavailable")
    })
    .await;
    assert_eq!(open(&proxy, "alice").await.err(), Some(503));
    let mut redis = RedisServer::start_on(port).await;
    proxy.wait_ready().await;
    let mut live = open(&proxy, "alice").await.expect("admitted with Redis up");
    // Redis goes away while in use: live sessions go on, new ones get 503, not ready.
    redis.kill();
    eventually(|| async { http_get(proxy.admin, "/readyz").await.0 == 503 }).await;
    assert_eq!(open(&proxy, "bob").await.err(), Some(503));
    echoes(&mut live).await;
    redis.restart().await;
    proxy.wait_ready().await;
    assert!(open(&proxy, "bob").await.is_ok());
    proxy.shutdown().await;
}

/// The 250 ms bound on a Redis call, plus a debug build's handshake on a busy machine.
const BOUND: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn a_redis_that_never_answers_delays_a_handshake_by_at_most_the_bound() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let backend = EchoBackend::start(&[]).await;
    let proxy = member(&format!("redis://{silent_addr}/0"), "s", &backend, "", "").await;
    let started = Instant::now();
    assert!(open(&proxy, "alice").await.is_ok());
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    proxy.shutdown().await;
    hold.abort();

    // A Redis that freezes while in use costs one handshake the bound, once.
    let redis = RedisServer::start().await;
    let proxy = member(&redis.url(), "f", &backend, "", "").await;
    redis.signal("-STOP");
    for _ in 0..3 {
        let started = Instant::now();
        assert!(open(&proxy, "alice").await.is_ok());
        assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    }
    wait_for_sample(&proxy, "wsgate_cluster_up", 0.0).await;
    redis.signal("-CONT");
    wait_for_sample(&proxy, "wsgate_cluster_up", 1.0).await;
    proxy.shutdown().await;
}
