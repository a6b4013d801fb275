//! The admin listener (docs/contract.md section 5). `/metrics`, `/healthz` and `/readyz` are open to
//! whoever can reach it, which is why it binds loopback by default; every `/admin/*` call needs
//! `Authorization: Bearer <admin.token>` (compared in constant time), and without a configured
//! token every one of them is refused.
//!
//! - `GET /admin/sessions[?sub=&route=]`: live sessions as JSON.
//! - `POST /admin/revoke` with `{"session": id}` (the number `/admin/sessions` lists, or a
//!   string holding it), `{"sub": s[, "ttl": "1h"]}` or
//!   `{"jti": j}`: closes matching sessions with 4003 and (for sub and jti) refuses new
//!   handshakes until the revocation expires; answers how many sessions were closed.
//! - `GET /admin/revocations`, `DELETE /admin/revocations?sub=|jti=`: list and lift.
//! - `POST /admin/reload`: the same as SIGHUP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::auth::token;
use crate::config::units;
use crate::connection::handshake::plain;
use crate::exposition;
use crate::registry::{DEFAULT_REVOCATION_TTL, Kick, Kind};
use crate::shared::Shared;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin request bodies are small JSON objects.
const MAX_BODY: usize = 4096;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(error) = served {
                debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if let Some(admin) = path.strip_prefix("/admin/") {
        if !authorized(shared, &request) {
            let mut response = plain(StatusCode::UNAUTHORIZED, "admin token required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="wsgate-admin""#),
            );
            return response;
        }
        return admin_api(shared, admin.to_owned(), request).await;
    }
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match path.as_str() {
        "/metrics" => {
            let state = shared.state();
            for store in &state.auth.stores {
                let age = store.current().map(|keys| keys.fetched.elapsed());
                store.metrics.set_age(age);
            }
            let open_metrics = request
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .any(|value| value.to_str().is_ok_and(exposition::wants_open_metrics));
            let (text, content_type) = match shared.metrics.encode() {
                text if open_metrics => (text, exposition::OPEN_METRICS),
                text => (exposition::classic(&text), exposition::CLASSIC),
            };
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" if shared.draining.is_cancelled() => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        "/readyz" if !shared.state().auth.ready() => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "provider keys not loaded")
        }
        "/readyz" => match shared.fleet.as_ref().and_then(|fleet| fleet.not_ready()) {
            Some(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
            None => plain(StatusCode::OK, "ready"),
        },
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn authorized<B>(shared: &Shared, request: &Request<B>) -> bool {
    let Some(token) = &shared.state().config.admin.token else {
        return false;
    };
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && token.matches(credentials.trim().as_bytes())
}

async fn admin_api(
    shared: &Shared,
    path: String,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or("").to_owned();
    // Decoded as the token transport decodes it: `?sub=auth0%7C123` names `auth0|123`.
    let param = |name: &str| token::query_param(&query, name);
    match (method, path.as_str()) {
        (Method::GET, "sessions") => {
            let (sub, route) = (param("sub"), param("route"));
            let sessions = listing(shared, sub.as_deref(), route.as_deref()).await;
            json_response(StatusCode::OK, &Value::Array(sessions))
        }
        (Method::POST, "revoke") => match read_json(request).await {
            Ok(body) => revoke(shared, &body).await,
            Err(response) => response,
        },
        (Method::GET, "revocations") => {
            let list = shared.registry.revocations.list();
            json_response(
                StatusCode::OK,
                &Value::Array(list.iter().map(|r| r.to_json()).collect()),
            )
        }
        (Method::DELETE, "revocations") => {
            let target = Kind::ALL
                .into_iter()
                .find_map(|kind| param(kind.claim()).map(|value| (kind, value)));
            match target {
                Some((kind, value)) => {
                    let lifted = shared.registry.revocations.lift(kind, &value);
                    if let Some(fleet) = &shared.fleet {
                        fleet.lifted(kind, &value).await;
                    }
                    info!(kind = kind.claim(), ?value, lifted, "revocation lifted");
                    json_response(StatusCode::OK, &json!({ "lifted": lifted }))
                }
                None => json_error(StatusCode::BAD_REQUEST, "name ?sub= or ?jti="),
            }
        }
        (Method::POST, "reload") => match shared.current.reload() {
            Ok(summary) => json_response(StatusCode::OK, &summary),
            Err(problems) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "error": problems }),
            ),
        },
        _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Live sessions, filtered: with a `cluster`, those every live instance published (each with
/// its `instance`); this instance's own sessions are always listed as they are now.
async fn listing(shared: &Shared, sub: Option<&str>, route: Option<&str>) -> Vec<Value> {
    let own = shared.registry.sessions.list(sub, route);
    let mut listed: Vec<Value> = own.iter().map(|s| s.to_json()).collect();
    let Some(fleet) = &shared.fleet else {
        return listed;
    };
    let others = fleet.sessions().await.unwrap_or_default();
    let field = |s: &Value, key: &str| s.get(key).and_then(Value::as_str).map(str::to_owned);
    listed.extend(others.into_iter().filter(|s| {
        field(s, "instance").as_deref() != Some(fleet.instance())
            && sub.is_none_or(|sub| field(s, "sub").as_deref() == Some(sub))
            && route.is_none_or(|route| field(s, "route").as_deref() == Some(route))
    }));
    listed
}

/// `{"session": id}`: the id as `/admin/sessions` lists it (a number, or with a `cluster`
/// `"<instance>:<n>"`), or a string holding it. A session of another instance is closed by
/// that instance.
async fn revoke_session(shared: &Shared, session: &Value) -> Response<Full<Bytes>> {
    let (instance, id) = match session {
        Value::Number(id) => (None, id.as_u64()),
        Value::String(id) => match id.rsplit_once(':') {
            Some((instance, id)) if shared.fleet.is_some() => (Some(instance), id.parse().ok()),
            _ => (None, id.parse::<u64>().ok()),
        },
        _ => (None, None),
    };
    let Some(id) = id else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "session: the id as /admin/sessions lists it (17 or \"17\")",
        );
    };
    let closed = match (instance, &shared.fleet) {
        (Some(instance), Some(fleet)) if instance != fleet.instance() => {
            fleet.kick(instance, id).await
        }
        _ => shared.registry.sessions.kick_id(id, Kick::REVOKED),
    };
    info!(session = id, instance, closed, "session revoked");
    json_response(StatusCode::OK, &json!({ "closed": closed }))
}

async fn revoke(shared: &Shared, body: &Value) -> Response<Full<Bytes>> {
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(session) = body.get("session") {
        return revoke_session(shared, session).await;
    }
    let (kind, value) = match (text("sub"), text("jti")) {
        (Some(sub), None) => (Kind::Subject, sub),
        (None, Some(jti)) => (Kind::TokenId, jti),
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                r#"expected {"session": id}, {"sub": s} or {"jti": j}"#,
            );
        }
    };
    // Refused until the longest token that could carry it has expired: the live sessions'
    // tokens, the given ttl, or a day when nothing says otherwise.
    let ttl = match body.get("ttl") {
        None => None,
        Some(Value::Number(secs)) => secs
            .as_u64()
            .map(Duration::from_secs)
            .filter(|ttl| *ttl <= units::MAX_DURATION),
        Some(Value::String(text)) => units::duration(text).ok(),
        Some(_) => None,
    };
    if body.get("ttl").is_some() && ttl.is_none() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ttl: seconds, or a duration such as 1h (at most 87600h)",
        );
    }
    let now = SystemTime::now();
    // A token is accepted until its exp plus its provider's leeway; the longest leeway covers
    // every provider that could have issued it.
    let leeway = shared
        .state()
        .config
        .providers
        .iter()
        .map(|p| p.leeway)
        .max()
        .unwrap_or_default();
    let live = shared.registry.sessions.latest_expiry(kind, value, leeway);
    // Bounded above, so none of these sums can overflow the clock.
    let until = match (ttl, kind) {
        (Some(ttl), _) => now + ttl,
        // A token id lives as long as its token.
        (None, Kind::TokenId) => live.unwrap_or(now + DEFAULT_REVOCATION_TTL),
        // A subject may hold other tokens: a day, or longer if a live token lives longer.
        (None, _) => live.map_or(now + DEFAULT_REVOCATION_TTL, |exp| {
            exp.max(now + DEFAULT_REVOCATION_TTL)
        }),
    };
    let closed = shared.registry.revoke(kind, value, until);
    info!(kind = kind.claim(), ?value, closed, "revoked");
    // Applied here at once; the fleet is told (or, while Redis is away, told on reconnect).
    if let Some(fleet) = &shared.fleet {
        fleet.revoked(kind, value, until).await;
    }
    json_response(StatusCode::OK, &json!({ "closed": closed }))
}

async fn read_json(request: Request<Incoming>) -> Result<Value, Response<Full<Bytes>>> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body must be a small JSON object",
            )
        })?
        .to_bytes();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| json_error(StatusCode::BAD_REQUEST, "the body must be a JSON object"))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}
