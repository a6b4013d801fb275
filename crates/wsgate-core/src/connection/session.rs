//! The live session, from the upgraded sockets to the access log line: register it, relay it,
//! and wrap it up (registry, subject slot, metrics, the access log).

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::{Span, debug, trace};

use std::sync::Arc;

use super::{Pending, access_log, refresh};
use crate::ratelimit::MessageLimits;
use crate::relay;
use crate::shared::Shared;

/// `span` is the connection's: the session logs its start inside it and lets it go; the relay
/// runs outside it, and the closing line is logged inside [`super::session_span`].
pub(super) async fn run(shared: &Arc<Shared>, pending: Pending, peer: SocketAddr, span: Span) {
    let Pending {
        entry,
        principal,
        subject,
        expires,
        origin,
        client,
        backend,
        started,
        busy_poll,
        judged,
    } = pending;
    let route = entry.route.name.as_str();
    let client = match client.await {
        Ok(client) => client,
        Err(error) => return span.in_scope(|| debug!(%error, "client upgrade failed")),
    };
    span.in_scope(|| trace!("relaying"));
    let (client, client_early) = bare::<crate::tls::Stream>(client);
    let (backend, backend_early) = bare::<TcpStream>(backend.into_inner());
    entry.metrics.active.inc();
    let registration = shared
        .registry
        .register(route, principal.clone(), peer, origin);
    let id = registration.session.id;
    drop(span);
    // A reload that swapped the configuration after the request was judged listed the live
    // sessions before this one was among them: apply its verdict here.
    shared.current.recheck(&judged, &registration.session);
    drop(judged);
    let policy = relay::Policy {
        limits: MessageLimits::new(&entry.route.limits),
        timeouts: entry.route.timeouts,
        max_message_size: entry.route.limits.max_message_size,
        expires,
        registered: registration.session.clone(),
        busy_poll,
        refresh: refresh::for_session(shared, &entry, &registration.session, peer),
        // Only a route with rules now pays for looking them up at each wake-up.
        rules: entry.route.messages.is_some().then(|| entry.rules.clone()),
    };
    let outcome = relay::run(
        (client, client_early),
        (backend, backend_early),
        &entry.metrics,
        &shared.draining,
        &policy,
        &shared.relaying,
    )
    .await;
    // The session leaves the registry, and its subject slot is free, before it stops
    // counting as active.
    drop(registration);
    drop(subject);
    entry.metrics.active.dec();
    let lasted = started.elapsed();
    entry.metrics.closed(outcome.code, lasted);
    // A subject is the issuer's text: written like a path, so no token-shaped text gets out.
    let sub = access_log::logged_path(principal.sub.as_deref().unwrap_or(""));
    super::session_span(peer, route, principal.sub.as_deref(), id)
        .in_scope(|| access_log::closed(peer, route, &sub, &outcome, lasted));
}

/// The socket under hyper's upgrade wrapper (hyper hands back the type it was given), so the
/// relay reads and writes it directly, and the bytes hyper had already read past the head.
fn bare<T>(upgraded: Upgraded) -> (Either<T, TokioIo<Upgraded>>, Bytes)
where
    TokioIo<T>: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    match upgraded.downcast::<TokioIo<T>>() {
        Ok(parts) => (Either::Left(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
    }
}
