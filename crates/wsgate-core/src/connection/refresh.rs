//! In-band token refresh (`auth.refresh: message`): what the relay calls with a refresh's
//! token. The token goes through the upgrade's checks (provider, signature, `exp`, issuer,
//! audience, revocations, `max_token_lifetime`, claim rules), against the configuration in
//! force when the refresh arrives, and must speak for the session's subject. Accepted, the
//! session runs on it: the registry lists its `jti` and `exp`, and revoking its `jti` closes
//! the session.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{access_log, admit};
use crate::auth;
use crate::metrics::RouteMetrics;
use crate::registry::{self, Kick};
use crate::relay::{self, Gather, Renewed};
use crate::shared::Shared;
use crate::state::RouteEntry;

/// The relay's side of refresh for a session on `entry`, if the route has it.
pub(super) fn for_session(
    shared: &Arc<Shared>,
    entry: &RouteEntry,
    session: &Arc<registry::Session>,
    peer: SocketAddr,
) -> Option<relay::Refresh> {
    let prefix = entry.route.auth.refresh_prefix.as_ref()?;
    let (shared, session) = (shared.clone(), session.clone());
    let metrics = entry.metrics.clone();
    let check = move |token: String| -> relay::Checking {
        let (shared, session, metrics) = (shared.clone(), session.clone(), metrics.clone());
        Box::pin(async move {
            let verdict = check(&shared, &session, &token).await;
            drop(token);
            answered(&metrics, &session, peer, verdict);
            verdict
        })
    };
    Some(relay::Refresh {
        gather: Gather {
            prefix: prefix.as_bytes().into(),
            limit: auth::MAX_TOKEN_LEN,
        },
        check: Box::new(check),
    })
}

/// Judges `token` for `session`; accepted, the session runs on it from now on.
async fn check(
    shared: &Shared,
    session: &registry::Session,
    token: &str,
) -> Result<Renewed, &'static str> {
    let state = shared.state();
    // A route a reload removed is closing its sessions: nothing is renewed on it.
    let entry = state.router.get(&session.route).ok_or("invalid_token")?;
    let auth = &entry.route.auth;
    let principal = admit::authenticate(shared, &state, auth, token)
        .await
        .map_err(|error| match error {
            auth::Error::InvalidToken("revoked") => "revoked",
            auth::Error::InsufficientScope => "insufficient_scope",
            _ => "invalid_token",
        })?;
    // A token without `sub` speaks for nobody in particular: it cannot take over a session.
    if principal.sub.is_none() || principal.sub != session.principal().sub {
        return Err("subject_mismatch");
    }
    session.replace_principal(principal.clone());
    // The listing shows the token a session runs on (a fleet republishes it on change).
    shared.registry.sessions.touch(session.id);
    // A revocation of the new token made since the check above kicked only the sessions that
    // carried it then: look again now that this one does.
    if shared.registry.is_revoked(&principal) {
        session.kick(Kick::REVOKED);
    }
    Ok(Renewed {
        exp: principal.exp,
        expires: admit::expires(&state, auth, &principal),
    })
}

/// Counts the refresh, and logs it when refused (never the token).
fn answered(
    metrics: &RouteMetrics,
    session: &registry::Session,
    peer: SocketAddr,
    verdict: Result<Renewed, &'static str>,
) {
    match verdict {
        Ok(_) => metrics.token_refresh("ok"),
        Err(reason) => {
            metrics.token_refresh(reason);
            access_log::refresh_refused(peer, &session.route, session.id, reason);
        }
    }
}
