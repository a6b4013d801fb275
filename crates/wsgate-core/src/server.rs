//! Binding, the accept loop, the per-connection task and graceful shutdown.
//!
//! One task per connection runs the lifecycle top to bottom: admission (the per-IP cap on
//! connections not upgraded yet, then the global cap) -> TLS
//! under the handshake deadline -> the upgrade request (header deadline, size cap) -> route ->
//! backend handshake -> 101 -> relay -> access log and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, trace, warn};

use crate::auth::{self, Principal, token};
use crate::backend::{self, Answer, Outgoing};
use crate::config::{Config, OnExpiry};
use crate::handshake::{self, Refusal};
use crate::metrics::Metrics;
use crate::ratelimit::{Limit, MessageLimits, PreUpgrade, PreUpgradeSlot, SubjectSlot};
use crate::registry::Registry;
use crate::router::backend_target;
use crate::state::State;
use crate::{admin, busy, origin, peer, relay, tls};

/// Cap on the upgrade request's head (request line and headers): larger gets 431.
const MAX_REQUEST_HEAD: usize = 32 * 1024;
const MAX_REQUEST_HEADERS: usize = 100;
/// Connections over `listen.max_connections` still get a 503 while this few are being
/// refused at once; past that they are closed unanswered so refusing stays cheap.
const MAX_REFUSING: usize = 64;
/// Pause after a failed accept (such as EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often per-IP limiter state is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the {what} listener on {address}: {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("provider {provider}: {source}")]
    Provider {
        provider: String,
        source: auth::jwks::Error,
    },
}

pub use crate::state::RouteEntry;

/// State shared by every connection task.
pub(crate) struct Shared {
    /// The running configuration; a reload swaps it whole.
    pub(crate) state: ArcSwap<State>,
    pub(crate) metrics: Arc<Metrics>,
    /// Sized from `listen.max_connections` at start (a reload does not resize it).
    connections: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    /// Connections per client address not upgraded yet (`listen.max_pending_per_ip`); the
    /// counts carry over reloads.
    pre_upgrade: Arc<PreUpgrade>,
    /// Cancelled when the drain starts.
    pub(crate) draining: CancellationToken,
    tracker: TaskTracker,
    pub(crate) registry: Arc<Registry>,
    /// The configuration file, for reloads.
    pub(crate) source: Option<PathBuf>,
    /// Reloads (SIGHUP, the file watch, the admin API) run one at a time: two built from the
    /// same old state would both start key stores for a new provider, and one would never stop.
    pub(crate) reloading: Mutex<()>,
    /// The sessions relaying now (busy polling is for a nearly idle proxy).
    relaying: busy::Relaying,
}

impl Shared {
    pub(crate) fn state(&self) -> Arc<State> {
        self.state.load_full()
    }
}

/// Reloads the configuration of a running server (SIGHUP, the admin API).
#[derive(Clone)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Re-reads the configuration file; on error the running configuration stays and every
    /// problem is returned.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        self.0.reload().map(drop)
    }

    /// The configuration generation in force now, without keeping it alive (for tests that
    /// check what a reload lets go of).
    #[doc(hidden)]
    pub fn generation(&self) -> Generation {
        Generation(Arc::downgrade(&self.0.state()))
    }
}

/// A configuration generation, observed without being held: see [`Reloader::generation`].
#[doc(hidden)]
pub struct Generation(std::sync::Weak<State>);

impl Generation {
    /// Something (a connection, a session) still holds this generation.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The proxy, bound and ready to run.
pub struct Server {
    shared: Arc<Shared>,
    /// Reload when the configuration or certificate files change.
    watch: bool,
    listener: TcpListener,
    admin: TcpListener,
}

/// Connections the kernel may queue before they are accepted: a reconnect storm after a
/// restart or a burst while descriptors run out waits here instead of retrying SYNs
/// (the standard library's 128 is small for a proxy; Linux caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Binds the public and admin listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let bind = |what, address| {
            listen(address).map_err(|source| Error::Bind {
                what,
                address,
                source,
            })
        };
        let listener = bind("public", config.listen.address)?;
        let admin = bind("admin", config.admin.address)?;
        let metrics = Arc::new(Metrics::new());
        let draining = CancellationToken::new();
        let connections = Arc::new(Semaphore::new(config.listen.max_connections));
        let state = State::build(config, &metrics, None, &draining)?;
        let shared = Shared {
            state: ArcSwap::from_pointee(state),
            connections,
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            pre_upgrade: Arc::default(),
            metrics,
            draining,
            tracker: TaskTracker::new(),
            registry: Arc::default(),
            source: None,
            reloading: Mutex::default(),
            // The runtime the server is bound on is the one it runs on.
            relaying: busy::Relaying::new(
                tokio::runtime::Handle::current().metrics().num_workers(),
            ),
        };
        Ok(Server {
            shared: Arc::new(shared),
            watch: false,
            listener,
            admin,
        })
    }

    /// Remembers the file the configuration came from, so it can be reloaded.
    pub fn with_source(mut self, path: PathBuf) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.source = Some(path);
        }
        self
    }

    /// Also reload when the configuration file or the certificate files change.
    pub fn watching(mut self) -> Server {
        self.watch = true;
        self
    }

    /// The metrics this server records (what `/metrics` exposes).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader(self.shared.clone())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` completes, then drains: new upgrades get 503, sessions are
    /// closed with 1001, and the wait is bounded by `listen.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Server {
            shared,
            watch,
            listener,
            admin,
        } = self;
        if watch {
            tokio::spawn(crate::watch::run(shared.clone()));
        }
        info!(
            address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            admin = %admin.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            routes = shared.state().config.routes.len(),
            "wsgate listening"
        );
        let admin_task = tokio::spawn(admin::serve(admin, shared.clone()));
        tokio::spawn(prune(shared.clone()));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => admit(&shared, tcp, peer),
                    Err(error) => {
                        warn!(%error, "accept failed; backing off");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        shared.draining.cancel();
        shared.tracker.close();
        let grace = shared.state().config.listen.shutdown_grace;
        info!(connections = shared.tracker.len(), ?grace, "draining");
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                connections = shared.tracker.len(),
                "shutdown grace ran out; closing the rest"
            );
        }
        admin_task.abort();
    }
}

/// Forgets per-IP limiter state that has recovered, so memory stays bounded by the
/// addresses active within the last burst window.
async fn prune(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shared.draining.cancelled() => return,
        }
        for entry in shared.state().router.iter() {
            entry.per_ip.prune();
        }
    }
}

/// Takes the address's pre-upgrade place and a connection permit before any TLS work, then
/// spawns the connection's task.
fn admit(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let pre_upgrade = {
        let state = shared.state.load();
        let (listen, ip) = (&state.config.listen, peer::normal(peer.ip()));
        // A trusted proxy carries many clients: only `listen.max_connections` bounds it.
        if peer::trusted(ip, &state.config.trusted_proxies) {
            None
        } else {
            let key = peer::key(ip, listen.ipv6_prefix);
            match shared.pre_upgrade.acquire(key, listen.max_pending_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    state.unrouted.rate_limited(Limit::Pending);
                    return debug!(%peer, "over listen.max_pending_per_ip; closed unanswered");
                }
            }
        }
    };
    let permit = match shared.connections.clone().try_acquire_owned() {
        Ok(permit) => Admission::Admitted(permit),
        Err(_) => match shared.refusing.clone().try_acquire_owned() {
            Ok(permit) => Admission::OverCap(permit),
            Err(_) => {
                debug!(%peer, "over the connection cap; closed unanswered");
                return;
            }
        },
    };
    let shared = shared.clone();
    shared
        .tracker
        .clone()
        .spawn(connection(shared, tcp, peer, permit, pre_upgrade));
}

enum Admission {
    Admitted(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Over `listen.max_connections`: answered with 503 and closed.
    OverCap(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// What the connection does once hyper is done with the request.
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
    subject: Option<SubjectSlot>,
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

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    pre_upgrade: Option<PreUpgradeSlot>,
) {
    // The configuration in force when the connection arrived serves its TLS handshake.
    let state = shared.state();
    let deadline = Instant::now() + state.config.listen.handshake_timeout;
    let _ = tcp.set_nodelay(true);
    let tls = match timeout_at(deadline, state.tls.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    let over_cap = matches!(admission, Admission::OverCap(_));
    // The host the client asked for in the TLS handshake, if it sent one (IP literals have none).
    let server_name: Option<Arc<str>> = tls.get_ref().1.server_name().map(Arc::from);
    let slot: Arc<Mutex<Option<After>>> = Arc::default();
    // Freed when the 101 is decided, or when the connection ends.
    let pre_upgrade = Arc::new(Mutex::new(pre_upgrade));
    let service = {
        let (shared, slot) = (shared.clone(), slot.clone());
        let pre_upgrade = pre_upgrade.clone();
        service_fn(move |request| {
            // The request is judged by the configuration in force when its head arrived, not
            // the one its TLS handshake started under: a reload in between applies to it.
            let (state, slot) = (shared.state(), slot.clone());
            let shared = shared.clone();
            let client = Client {
                peer,
                server_name: server_name.clone(),
                over_cap,
                pre_upgrade: pre_upgrade.clone(),
            };
            async move {
                let answer = handle(&shared, &state, request, &client, &slot).await;
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
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
    let after = slot.lock().map(|mut slot| slot.take()).unwrap_or_default();
    // A session takes what it needs of the configuration with it (its route entry, metric
    // handles, limits, the principal): the generation itself (router, per-IP maps, TLS
    // configuration, token cache) is let go, so reloads during long sessions do not pile up.
    drop(state);
    match after {
        Some(After::Session(pending)) => session(&shared, pending, peer).await,
        Some(After::Close(upgrade)) => close_refused(upgrade).await,
        None => {}
    }
    drop(admission);
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

/// Answers the upgrade request: a refusal, the backend's own refusal, or a 101.
async fn handle(
    shared: &Shared,
    state: &Arc<State>,
    mut request: Request<Incoming>,
    client: &Client,
    slot: &Mutex<Option<After>>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let peer = client.peer;
    let path = logged_path(request.uri().path());
    let (response, metrics, result) = match route_and_open(shared, state, &request, client).await {
        Opened::Refused(entry, refusal) => {
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
            info!(target: "wsgate::access", %peer, route, ?path, status = refusal.status().as_u16(),
                result = refusal.result(), reason = refusal.reason(), "refused");
            (refusal.response(), metrics, refusal.result())
        }
        Opened::Answered(Admitted {
            entry,
            answer: Answer::Refused(response),
            ..
        }) => {
            entry.metrics.backend_error("backend_status");
            info!(target: "wsgate::access", %peer, route = entry.route.name, ?path,
                status = response.status().as_u16(), result = "backend_status",
                reason = "backend refused the upgrade", "refused");
            (response, entry.metrics.clone(), "backend_status")
        }
        Opened::Answered(Admitted {
            entry,
            answer: Answer::Upgraded { io, protocol },
            key,
            principal,
            subject,
            expires,
            origin,
            marker_offered,
        }) => {
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
            let client = hyper::upgrade::on(&mut request);
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(After::Session(Pending {
                    entry,
                    principal,
                    subject,
                    expires,
                    origin,
                    client,
                    backend: io,
                    started,
                    busy_poll: state.config.listen.busy_poll,
                    judged: state.clone(),
                }));
            }
            (response, metrics, "ok")
        }
    };
    if result != "ok"
        && let Ok(mut slot) = slot.lock()
    {
        *slot = Some(After::Close(hyper::upgrade::on(&mut request)));
    }
    metrics.handshake(result, started.elapsed());
    response
}

// One value per handshake, moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Opened {
    /// Refused by the proxy, with the route if one had matched.
    Refused(Option<Arc<RouteEntry>>, Refusal),
    /// Authenticated, and the backend answered.
    Answered(Admitted),
}

struct Admitted {
    entry: Arc<RouteEntry>,
    answer: Answer,
    /// The client's `Sec-WebSocket-Key`, for the 101.
    key: HeaderValue,
    principal: Arc<Principal>,
    subject: Option<SubjectSlot>,
    /// When the session must close (`None` with `on_expiry: ignore`).
    expires: Option<Instant>,
    /// The Origin it was admitted with, re-checked by reloads.
    origin: Option<String>,
    /// The client offered the subprotocol marker (the token travelled that way).
    marker_offered: bool,
}

/// Cheap checks first, then the backend.
async fn route_and_open(
    shared: &Shared,
    state: &State,
    request: &Request<Incoming>,
    client: &Client,
) -> Opened {
    if client.over_cap {
        return Opened::Refused(None, Refusal::Overloaded);
    }
    if shared.draining.is_cancelled() {
        return Opened::Refused(None, Refusal::Draining);
    }
    let upgrade = match handshake::validate(request) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return Opened::Refused(None, refusal),
    };
    // A connection set up for one host must not be used to reach another (RFC 9110 7.4).
    if !handshake::matches_server_name(client.server_name.as_deref(), &upgrade.host) {
        return Opened::Refused(None, Refusal::Misdirected);
    }
    let path = request.uri().path();
    let entry = match state.router.find(&upgrade.host, path) {
        Ok(Some(entry)) => entry,
        Ok(None) => return Opened::Refused(None, Refusal::NoRoute),
        Err(crate::router::Ambiguous) => {
            return Opened::Refused(
                None,
                Refusal::Malformed(
                    "the path names another route once ';parameters' or letter case are ignored",
                ),
            );
        }
    };
    match admit_and_open(shared, state, request, client.peer, entry, upgrade).await {
        Ok(admitted) => Opened::Answered(admitted),
        Err(refusal) => Opened::Refused(Some(entry.clone()), refusal),
    }
}

/// Origin -> token -> claims -> the backend, with every trace of the token removed.
async fn admit_and_open(
    shared: &Shared,
    state: &State,
    request: &Request<Incoming>,
    peer: SocketAddr,
    entry: &Arc<RouteEntry>,
    upgrade: handshake::Upgrade,
) -> Result<Admitted, Refusal> {
    let route = &entry.route;
    let auth = &route.auth;
    let headers = request.headers();
    let trusted = &state.config.trusted_proxies;
    // Every handshake counts against its address, failed authentications included.
    let client = peer::client_ip(peer.ip(), headers, trusted);
    entry
        .per_ip
        .check(peer::key(client, state.config.listen.ipv6_prefix))
        .map_err(|wait| Refusal::RateLimited {
            kind: Limit::Handshake,
            retry_after: wait.as_secs_f64().ceil() as u64,
        })?;
    origin::check(&route.origins, headers).map_err(Refusal::Origin)?;
    let query = request.uri().query();
    let token = token::extract(auth, headers, query, &upgrade.protocols)
        .and_then(|token| token.ok_or(auth::Error::Missing))
        .map_err(Refusal::Auth)?;
    let principal = state
        .auth
        .verify(auth.provider, &token)
        .await
        .map_err(Refusal::Auth)?;
    // Checked on every handshake, cached verification or not.
    if shared.registry.is_revoked(&principal) {
        return Err(Refusal::Auth(auth::Error::InvalidToken("revoked")));
    }
    auth::check_claims(auth, &principal.claims).map_err(Refusal::Auth)?;
    let identity = auth::forward_headers(auth, &principal.claims).map_err(Refusal::Auth)?;
    // Tokens without `sub` are not capped per subject (there is nothing to count them by).
    let subject = match &principal.sub {
        Some(sub) => Some(entry.subjects.acquire(sub).ok_or(Refusal::RateLimited {
            kind: Limit::Subject,
            retry_after: 1,
        })?),
        None => None,
    };

    let mut forwarded = backend::end_to_end(headers);
    token::strip_headers(auth, &token, &mut forwarded);
    forwarded.extend(
        identity
            .into_iter()
            .map(|(name, value)| (Some(name), value)),
    );
    let mut protocols = upgrade.protocols;
    let marker_offered = token::strip_protocols(auth, &token, &mut protocols);
    let query = token::strip_query(auth, &token, query);
    let outgoing = Outgoing {
        target: backend_target(route, request.uri().path(), query.as_deref()),
        headers: forwarded,
        protocols,
        client_host: headers.get(header::HOST).cloned(),
        forwarded_for: peer::forwarded_for(peer.ip(), headers, trusted),
    };
    // Each transport strips its own copies; whatever else still carries the token (the path,
    // another header, a quoted cookie) must not reach the backend either.
    if outgoing.carries(&token) {
        return Err(Refusal::Auth(auth::Error::InvalidRequest(
            "the token appears elsewhere in the request",
        )));
    }
    let answer = backend::open(route, outgoing).await?;
    Ok(Admitted {
        entry: entry.clone(),
        answer,
        key: upgrade.key,
        expires: match auth.on_expiry {
            OnExpiry::Close => {
                let leeway = state
                    .auth
                    .stores
                    .get(auth.provider)
                    .map(|s| s.config.leeway)
                    .unwrap_or_default();
                Some(principal.expires_at(leeway))
            }
            OnExpiry::Ignore => None,
        },
        origin: headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned),
        principal,
        subject,
        marker_offered,
    })
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

/// Text from the request as the access log shows it: a client may put its token anywhere in
/// the path (it is then refused), so any JWT-shaped run (two base64url parts of 8 or more
/// characters and a third, joined by dots) is written as `[jwt]`, with its surroundings
/// (`t=[jwt]`, `[jwt];v=1`). Percent-escapes are read as the characters they encode, so
/// `%2E` dots or a token escaped character by character are found too.
fn logged_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    // (where the character starts in `path`, where it ends, the byte it stands for)
    let mut chars = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let escaped = (b == b'%')
            .then(|| Some(hex(*bytes.get(at + 1)?)? << 4 | hex(*bytes.get(at + 2)?)?))
            .flatten();
        match escaped {
            Some(decoded) => {
                chars.push((at, at + 3, decoded));
                at += 3;
            }
            None => {
                chars.push((at, at + 1, b));
                at += 1;
            }
        }
    }
    let in_token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let jwt = |run: &[u8]| {
        let parts: Vec<&[u8]> = run.split(|b| *b == b'.').collect();
        parts
            .windows(3)
            .any(|three| three[0].len() >= 8 && three[1].len() >= 8)
    };
    let (mut logged, mut copied, mut i) = (String::with_capacity(path.len()), 0, 0);
    while i < chars.len() {
        if !in_token(chars[i].2) {
            i += 1;
            continue;
        }
        let first = i;
        while i < chars.len() && in_token(chars[i].2) {
            i += 1;
        }
        let run: Vec<u8> = chars[first..i].iter().map(|c| c.2).collect();
        if jwt(&run) {
            logged.push_str(&path[copied..chars[first].0]);
            logged.push_str("[jwt]");
            copied = chars[i - 1].1;
        }
    }
    logged.push_str(&path[copied..]);
    logged
}

/// The live session, from the upgraded sockets to the access log line.
async fn session(shared: &Shared, pending: Pending, peer: SocketAddr) {
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
        Err(error) => return debug!(%peer, route, %error, "client upgrade failed"),
    };
    trace!(%peer, route, "relaying");
    let (client, client_early) = bare::<TlsStream<TcpStream>>(client);
    let (backend, backend_early) = bare::<TcpStream>(backend.into_inner());
    entry.metrics.active.inc();
    let registration = shared
        .registry
        .register(route, principal.clone(), peer, origin);
    // A reload that swapped the configuration after the request was judged listed the live
    // sessions before this one was among them: apply its verdict here.
    shared.recheck(&judged, &registration.session);
    drop(judged);
    let policy = relay::Policy {
        limits: MessageLimits::new(&entry.route.limits),
        timeouts: entry.route.timeouts,
        max_message_size: entry.route.limits.max_message_size,
        expires,
        kicked: registration.kicked.clone(),
        busy_poll,
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
    let sub = logged_path(principal.sub.as_deref().unwrap_or(""));
    info!(target: "wsgate::access", %peer, route, ?sub, code = outcome.code, by = outcome.by,
        reason = outcome.reason, duration_ms = lasted.as_millis() as u64,
        messages_in = outcome.up.messages, bytes_in = outcome.up.bytes,
        messages_out = outcome.down.messages, bytes_out = outcome.down.bytes,
        dropped = outcome.dropped, "session closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[test]
    fn a_jwt_anywhere_in_the_logged_path_is_redacted() {
        let dots = JWT.replace('.', "%2E");
        let all: String = JWT.bytes().map(|b| format!("%{b:02x}")).collect();
        for (path, logged) in [
            (format!("/chat/{JWT}"), "/chat/[jwt]".to_owned()),
            (format!("/chat/t={JWT}"), "/chat/t=[jwt]".to_owned()),
            (format!("/chat/{JWT};v=1"), "/chat/[jwt];v=1".to_owned()),
            (format!("/chat/a{JWT}b/c"), "/chat/[jwt]/c".to_owned()),
            (format!("/chat/t={dots}/x"), "/chat/t=[jwt]/x".to_owned()),
            (format!("/chat/{all}"), "/chat/[jwt]".to_owned()),
            // Unsigned (empty signature) tokens too.
            (
                "/c/eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".to_owned(),
                "/c/[jwt]".to_owned(),
            ),
        ] {
            assert_eq!(logged_path(&path), logged, "{path}");
        }
        for path in [
            "/chat/room.v1.json",
            "/chat/a.b.c",
            "/%zz/x%2",
            "/chat/ünï.cödé",
        ] {
            assert_eq!(logged_path(path), path);
        }
    }
}
