//! The admission pipeline: every check between the upgrade request and the 101, in the order
//! of docs/contract.md section 1 (cheap checks first, the backend last), as one function,
//! [`admit`]. Nothing reaches the backend before every check has passed, and what reaches it
//! carries no trace of the token.

use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use tokio::time::Instant;

use super::Client;
use super::backend::{self, Answer, Outgoing};
use super::handshake::{self, Refusal};
use crate::auth::{self, Principal, token};
use crate::cluster::{Fleet, Hold, Verdict};
use crate::config::{Auth, OnExpiry};
use crate::ratelimit::{Limit, SubjectSlot};
use crate::router::{self, backend_target};
use crate::shared::Shared;
use crate::state::{RouteEntry, State};
use crate::{origin, peer};

/// A request that passed every check, and the backend's answer to it.
pub(super) struct Admitted {
    pub(super) entry: Arc<RouteEntry>,
    pub(super) answer: Answer,
    /// The client's `Sec-WebSocket-Key`, for the 101.
    pub(super) key: HeaderValue,
    pub(super) principal: Arc<Principal>,
    pub(super) subject: Option<Place>,
    /// When the session must close (`None` with `on_expiry: ignore`).
    pub(super) expires: Option<Instant>,
    /// The Origin it was admitted with, re-checked by reloads.
    pub(super) origin: Option<String>,
    /// The client offered the subprotocol marker (the token travelled that way).
    pub(super) marker_offered: bool,
}

/// A subject's place among its route's sessions, here and (with a `cluster`) in the fleet;
/// both free when it drops.
pub(super) struct Place {
    _local: SubjectSlot,
    _fleet: Option<Hold>,
}

/// A refusal, with the route the request had matched (for its metrics), if it got that far.
pub(super) struct Refused {
    pub(super) entry: Option<Arc<RouteEntry>>,
    pub(super) refusal: Refusal,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            entry: None,
            refusal,
        }
    }
}

/// Runs the whole pipeline on one upgrade request.
pub(super) async fn admit(
    shared: &Shared,
    state: &State,
    request: &Request<Incoming>,
    client: &Client,
) -> Result<Admitted, Refused> {
    // Before any route: the global cap and the drain, the request's form, Host against SNI.
    if client.over_cap {
        return Err(Refusal::Overloaded.into());
    }
    if shared.draining.is_cancelled() {
        return Err(Refusal::Draining.into());
    }
    let upgrade = handshake::validate(request)?;
    // A connection set up for one host must not be used to reach another (RFC 9110 7.4).
    if !handshake::matches_server_name(client.server_name.as_deref(), &upgrade.host) {
        return Err(Refusal::Misdirected.into());
    }
    let entry = route(state, &upgrade.host, request.uri().path())?;
    let on_route = |refusal| Refused {
        entry: Some(entry.clone()),
        refusal,
    };
    let headers = request.headers();
    let auth = &entry.route.auth;
    // Every handshake counts against its address, failed authentications included.
    let seen = peer::Client::of(client.peer.ip(), headers, &state.config.trusted_proxies);
    let address = peer::key(seen.ip, state.config.listen.ipv6_prefix);
    entry.per_ip.check(address).map_err(|wait| {
        on_route(Refusal::RateLimited {
            kind: Limit::Handshake,
            retry_after: wait.as_secs_f64().ceil() as u64,
        })
    })?;
    origin::check(&entry.route.origins, headers).map_err(|why| on_route(Refusal::Origin(why)))?;
    let token = token::extract(auth, headers, request.uri().query(), &upgrade.protocols)
        .and_then(|token| token.ok_or(auth::Error::Missing))
        .map_err(|error| on_route(Refusal::Auth(error)))?;
    let principal = authenticate(shared, state, auth, &token)
        .await
        .map_err(|error| on_route(Refusal::Auth(error)))?;
    let identity = if auth.forward_claims.is_empty() {
        Vec::new()
    } else {
        auth::forward_headers(auth, &principal.claims.map())
            .map_err(|error| on_route(Refusal::Auth(error)))?
    };
    // Tokens without `sub` are not capped per subject (there is nothing to count them by).
    let subject = match &principal.sub {
        Some(sub) => Some(entry.subjects.acquire(sub).ok_or_else(|| {
            on_route(Refusal::RateLimited {
                kind: Limit::Subject,
                retry_after: 1,
            })
        })?),
        None => None,
    };
    // With a `cluster`: the address's rate and the subject's sessions across the fleet, in
    // one Redis call, after the local checks (which never refuse what the fleet would admit).
    let fleet = match &shared.fleet {
        Some(fleet) => fleet_admit(fleet, &entry, address, principal.sub.as_deref())
            .await
            .map_err(on_route)?,
        None => None,
    };
    let subject = subject.map(|local| Place {
        _local: local,
        _fleet: fleet,
    });
    let (outgoing, marker_offered) =
        outgoing(request, &seen, &entry, identity, &token, upgrade.protocols)
            .map_err(|error| on_route(Refusal::Auth(error)))?;
    let answer = backend::open(&entry.route, outgoing)
        .await
        .map_err(on_route)?;
    Ok(Admitted {
        expires: expires(state, auth, &principal),
        origin: headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned),
        entry: entry.clone(),
        answer,
        key: upgrade.key,
        principal,
        subject,
        marker_offered,
    })
}

async fn fleet_admit(
    fleet: &Arc<Fleet>,
    entry: &RouteEntry,
    address: std::net::IpAddr,
    sub: Option<&str>,
) -> Result<Option<Hold>, Refusal> {
    match fleet.admit(&entry.route, address, sub).await {
        Verdict::Admitted(hold) => Ok(hold),
        Verdict::RateLimited(wait) => Err(Refusal::RateLimited {
            kind: Limit::Handshake,
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
        }),
        Verdict::SubjectFull => Err(Refusal::RateLimited {
            kind: Limit::Subject,
            retry_after: 1,
        }),
        Verdict::Unavailable => Err(Refusal::FleetUnavailable),
    }
}

/// The route for the request's host and path.
fn route(state: &State, host: &str, path: &str) -> Result<Arc<RouteEntry>, Refusal> {
    match state.router.find(host, path) {
        Ok(Some(entry)) => Ok(entry.clone()),
        Ok(None) => Err(Refusal::NoRoute),
        Err(router::Ambiguous) => Err(Refusal::Malformed(
            "the path names another route once ';parameters' or letter case are ignored",
        )),
    }
}

/// The token's signature and claims, then the revocations (checked on every handshake, cached
/// verification or not), then the route's ceiling on token lifetimes and its claim rules.
pub(super) async fn authenticate(
    shared: &Shared,
    state: &State,
    auth: &Auth,
    token: &str,
) -> Result<Arc<Principal>, auth::Error> {
    let principal = state.auth.verify(auth.provider, token).await?;
    if shared.registry.is_revoked(&principal) {
        return Err(auth::Error::InvalidToken("revoked"));
    }
    auth::check_policy(auth, &principal)?;
    Ok(principal)
}

/// The backend's upgrade request: the client's end-to-end headers without any copy of the
/// token, the `identity` headers (`forward_claims`), the target without the query token. Also whether the client
/// offered the subprotocol marker. Refused if the token is still anywhere in it.
fn outgoing(
    request: &Request<Incoming>,
    client: &peer::Client,
    entry: &RouteEntry,
    identity: Vec<(header::HeaderName, HeaderValue)>,
    token: &str,
    mut protocols: Vec<String>,
) -> Result<(Outgoing, bool), auth::Error> {
    let auth = &entry.route.auth;
    let headers = request.headers();
    let mut forwarded = backend::end_to_end(headers);
    token::strip_headers(auth, token, &mut forwarded);
    forwarded.extend(
        identity
            .into_iter()
            .map(|(name, value)| (Some(name), value)),
    );
    let marker_offered = token::strip_protocols(auth, token, &mut protocols);
    let query = token::strip_query(auth, token, request.uri().query());
    let outgoing = Outgoing {
        target: backend_target(&entry.route, request.uri().path(), query.as_deref()),
        headers: forwarded,
        protocols,
        client_host: headers.get(header::HOST).cloned(),
        forwarded_for: client.forwarded_for(),
    };
    // Each transport strips its own copies; whatever else still carries the token (the path,
    // another header, a quoted cookie) must not reach the backend either.
    if outgoing.carries(token) {
        return Err(auth::Error::InvalidRequest(
            "the token appears elsewhere in the request",
        ));
    }
    Ok((outgoing, marker_offered))
}

/// When the session must close: the token's `exp` plus its provider's leeway.
pub(super) fn expires(state: &State, auth: &Auth, principal: &Principal) -> Option<Instant> {
    match auth.on_expiry {
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
    }
}
