//! The answer to the upgrade request: the proxy's refusal, the backend's own refusal relayed
//! as it is, or the 101 that hands the session over. Counts the handshake and writes the
//! refusal's access-log line.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::Span;

use super::admit::{self, Admitted, Refused};
use super::backend::Answer;
use super::handshake::Refusal;
use super::{After, Client, Handoff, Pending, access_log};
use crate::shared::Shared;
use crate::state::State;

/// Answers one upgrade request, and leaves in `handoff` what the connection does next.
pub(super) async fn answer(
    shared: &Shared,
    state: &Arc<State>,
    mut request: Request<Incoming>,
    client: &Client,
    handoff: &Handoff,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let peer = client.peer;
    let (response, metrics, result) = match admit::admit(shared, state, &request, client).await {
        Err(Refused { entry, refusal }) => {
            let metrics = entry
                .as_ref()
                .map_or(&state.unrouted, |e| &e.metrics)
                .clone();
            let route = entry.as_ref().map_or("", |e| e.route.name.as_str());
            match refusal {
                Refusal::BackendRefused | Refusal::BackendTimeout | Refusal::BackendInvalid(_) => {
                    metrics.backend_error(refusal.result());
                }
                Refusal::Auth(error) => metrics.auth_failure(error.reason()),
                Refusal::RateLimited { kind, .. } => metrics.rate_limited(kind),
                Refusal::Origin(_) => metrics.auth_failure("origin"),
                _ => {}
            }
            let status = refusal.status().as_u16();
            access_log::refused(
                peer,
                route,
                // Only refusals write the path.
                &access_log::logged_path(request.uri().path()),
                status,
                refusal.result(),
                refusal.reason(),
            );
            (refusal.response(), metrics, refusal.result())
        }
        Ok(Admitted {
            entry,
            answer: Answer::Refused(response),
            ..
        }) => {
            entry.metrics.backend_error("backend_status");
            let status = response.status().as_u16();
            access_log::refused(
                peer,
                &entry.route.name,
                // Only refusals write the path.
                &access_log::logged_path(request.uri().path()),
                status,
                "backend_status",
                "backend refused the upgrade",
            );
            (response, entry.metrics.clone(), "backend_status")
        }
        Ok(Admitted {
            entry,
            answer: Answer::Upgraded { io, protocol },
            key,
            principal,
            subject,
            expires,
            origin,
            marker_offered,
        }) => {
            super::record_admitted(
                &Span::current(),
                &entry.route.name,
                principal.sub.as_deref(),
            );
            // A browser that offered the marker needs a subprotocol in the 101; the token
            // entry is never echoed.
            let protocol = protocol.or_else(|| {
                marker_offered
                    .then(|| HeaderValue::from_str(&entry.route.auth.subprotocol_marker).ok())
                    .flatten()
            });
            let response = switching_protocols(&key, protocol);
            // Upgraded: the connection no longer counts against its address's pre-upgrade cap
            // (freed before the 101 is written, so the client sees it freed).
            drop(client.pre_upgrade.lock().map(|mut slot| slot.take()));
            let metrics = entry.metrics.clone();
            handoff.set(After::Session(Pending {
                entry,
                principal,
                subject,
                expires,
                origin,
                client: hyper::upgrade::on(&mut request),
                backend: io,
                started,
                busy_poll: state.config.listen.busy_poll,
                judged: state.clone(),
            }));
            (response, metrics, "ok")
        }
    };
    if result != "ok" {
        handoff.set(After::Close(hyper::upgrade::on(&mut request)));
    }
    metrics.handshake(result, started.elapsed());
    response
}

fn switching_protocols(
    client_key: &HeaderValue,
    protocol: Option<HeaderValue>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(client_key.as_bytes());
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}
