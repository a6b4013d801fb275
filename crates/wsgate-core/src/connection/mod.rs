//! One connection, from TLS to its end: the task [`run`] takes the upgrade request through
//! hyper, hands it to [`admit`] (the ordered checks of docs/contract.md section 1), answers with
//! [`respond`], and then relays the [`session`] or closes the refused connection. Everything it
//! logs is inside the connection's [`span`] (peer, then route, session id and subject once
//! known); the [`access_log`] writes one line per refusal and per closed session.

mod access_log;
mod admit;
pub(crate) mod backend;
pub(crate) mod handshake;
mod refresh;
mod respond;
mod session;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};
use tracing::{Instrument, Span, debug, field};

use crate::auth::Principal;
use crate::ratelimit::PreUpgradeSlot;
use crate::shared::Shared;
use crate::state::{RouteEntry, State};

/// Cap on the upgrade request's head (request line and headers): larger gets 431.
const MAX_REQUEST_HEAD: usize = 32 * 1024;
const MAX_REQUEST_HEADERS: usize = 100;

/// The connection's permit, taken at accept and held until the connection ends.
pub(crate) enum Admission {
    Admitted(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Over `listen.max_connections`: answered with 503 and closed.
    OverCap(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// The connection's tracing span: the peer from the start; the route, the session id and the
/// subject are recorded as they become known.
fn span(peer: SocketAddr) -> Span {
    tracing::info_span!(
        "connection",
        %peer,
        route = field::Empty,
        session = field::Empty,
        sub = field::Empty
    )
}

/// Records in `span` what admitting the request made known: the route and the subject.
fn record_admitted(span: &Span, route: &str, sub: Option<&str>) {
    span.record("route", route);
    if let Some(sub) = sub.filter(|_| !span.is_disabled()) {
        // A subject is the issuer's text: written like a path, so no token-shaped text gets out.
        span.record("sub", access_log::logged_path(sub));
    }
}

/// The connection's span for a session's last line, made again: the handshake's span is let
/// go when the session starts, since a span lives as its formatted fields, an entry in the
/// subscriber's slab and a map of extensions (about 0.5 KiB an idle session kept, issue 18).
fn session_span(peer: SocketAddr, route: &str, sub: Option<&str>, session: u64) -> Span {
    let span = span(peer);
    record_admitted(&span, route, sub);
    span.record("session", session);
    span
}

/// Where the service that answered the request leaves what the connection does next (hyper
/// calls the service inside `serve_connection`, which returns only when the connection is
/// done with HTTP).
#[derive(Clone, Default)]
struct Handoff(Arc<Mutex<Option<After>>>);

impl Handoff {
    fn set(&self, after: After) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(after);
        }
    }

    fn take(&self) -> Option<After> {
        self.0
            .lock()
            .map(|mut slot| slot.take())
            .unwrap_or_default()
    }
}

/// What the connection does once hyper is done with the request: the service that answered
/// it leaves this in the connection's [`Handoff`].
// One value per connection, moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum After {
    /// A 101 was sent: relay the session.
    Session(Pending),
    /// An upgrade request was refused. hyper hands the socket of every upgrade request over
    /// as "upgraded", whatever the answer, and drops it unless someone takes it: taken, it
    /// can end with a TLS close_notify instead of a bare TCP close (which TLS clients see as
    /// a truncated answer).
    Close(OnUpgrade),
}

/// How long a refused client gets to take the close_notify before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A session whose 101 is on its way: what the relay needs once hyper hands over the socket.
struct Pending {
    entry: Arc<RouteEntry>,
    principal: Arc<Principal>,
    subject: Option<admit::Place>,
    expires: Option<Instant>,
    origin: Option<String>,
    client: OnUpgrade,
    backend: TokioIo<Upgraded>,
    started: Instant,
    /// `listen.busy_poll` of the configuration the request was judged by.
    busy_poll: Duration,
    /// The configuration the request was judged by: a reload that lands before the session
    /// is registered is checked against it at registration.
    judged: Arc<State>,
}

/// The connection's task: TLS under the handshake deadline, the upgrade request through hyper,
/// then the session or the refused connection's close.
///
/// The handshake runs inside the connection's span; the relay does not (entering a span on
/// every wake-up cost about 550 instructions per 64 B round trip, a twentieth of the relay's
/// work), and the session lets it go once relaying and makes it again for its last line.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    pre_upgrade: Option<PreUpgradeSlot>,
) {
    let span = span(peer);
    let after = handshake(&shared, tcp, peer, &admission, pre_upgrade)
        .instrument(span.clone())
        .await;
    match after {
        Some(After::Session(pending)) => session::run(&shared, pending, peer, span).await,
        Some(After::Close(upgrade)) => close_refused(upgrade).await,
        None => {}
    }
    drop(admission);
}

/// TLS and the upgrade request; what the connection does next.
async fn handshake(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    admission: &Admission,
    pre_upgrade: Option<PreUpgradeSlot>,
) -> Option<After> {
    // The configuration in force when the connection arrived serves its TLS handshake.
    let state = shared.state();
    let deadline = Instant::now() + state.config.listen.handshake_timeout;
    let _ = tcp.set_nodelay(true);
    let tls = match timeout_at(deadline, state.tls.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            return None;
        }
    };
    let over_cap = matches!(admission, Admission::OverCap(_));
    // The host the client asked for in the TLS handshake, if it sent one (IP literals have none).
    let server_name: Option<Arc<str>> = tls.server_name().map(Arc::from);
    let handoff = Handoff::default();
    // Freed when the 101 is decided, or when the connection ends.
    let pre_upgrade = Arc::new(Mutex::new(pre_upgrade));
    let service = {
        let (shared, handoff) = (shared.clone(), handoff.clone());
        let pre_upgrade = pre_upgrade.clone();
        service_fn(move |request| {
            // The request is judged by the configuration in force when its head arrived, not
            // the one its TLS handshake started under: a reload in between applies to it.
            let (state, handoff) = (shared.state(), handoff.clone());
            let shared = shared.clone();
            let client = Client {
                peer,
                server_name: server_name.clone(),
                over_cap,
                pre_upgrade: pre_upgrade.clone(),
            };
            async move {
                let answer = respond::answer(&shared, &state, request, &client, &handoff).await;
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(Instant::now()))
        .max_header_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_REQUEST_HEADERS)
        // Keep-alive stays on so the 101 is not marked `Connection: close`; every refusal
        // carries `Connection: close` instead, so one connection serves one request and
        // nothing can be smuggled behind a refused upgrade.
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        debug!(%error, "HTTP connection ended with an error");
    }
    // A session takes what it needs of the configuration with it (its route entry, metric
    // handles, limits, the principal): the generation itself (router, per-IP maps, TLS
    // configuration, token cache) is let go here, so reloads during long sessions do not pile
    // up.
    drop(state);
    handoff.take()
}

/// Ends the TLS session of a refused upgrade request with a close_notify. Anything the client
/// sent after the request (a pipelined request) is discarded unread.
async fn close_refused(upgrade: OnUpgrade) {
    let Ok(Ok(io)) = tokio::time::timeout(CLOSE_GRACE, upgrade).await else {
        return;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, TokioIo::new(io).shutdown()).await;
}

/// What the connection knows of its client before the request.
struct Client {
    peer: SocketAddr,
    /// The TLS server name (SNI) the client sent.
    server_name: Option<Arc<str>>,
    /// Admitted over `listen.max_connections`: every request gets 503.
    over_cap: bool,
    /// The address's place among connections not upgraded yet.
    pre_upgrade: Arc<Mutex<Option<PreUpgradeSlot>>>,
}
