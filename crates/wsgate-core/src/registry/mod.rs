//! Every live session, and the revocations that refuse tokens and subjects: two small parts
//! behind one facade.
//!
//! - [`sessions`]: the live-session table (register, list, kick).
//! - [`revocations`]: subjects and token ids refused until a time.
//!
//! The facade keeps the one rule that ties them: a session that registers just after a
//! revocation of its token is closed at once, whichever of the two landed first.

mod revocations;
mod sessions;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::Principal;

pub use revocations::{Kind, Revocations};
pub use sessions::{Kick, Registration, Session, Sessions};

/// Revocations of a subject without a `ttl` last this long.
pub const DEFAULT_REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
pub struct Registry {
    pub sessions: Sessions,
    pub revocations: Revocations,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Registry {
    /// A registry whose session ids carry `instance` (with a `cluster`), or plain numbers.
    pub fn new(instance: Option<&str>) -> Registry {
        Registry {
            sessions: instance.map(Sessions::for_instance).unwrap_or_default(),
            revocations: Revocations::default(),
        }
    }

    /// Applies a revocation another instance made: refused here too, its sessions closed.
    pub fn mirror(&self, kind: Kind, value: &str, until: SystemTime) -> usize {
        self.revocations.merge(kind, value, until);
        self.sessions.kick_carrying(kind, value, Kick::REVOKED)
    }

    /// Registers a session that has just been upgraded; it leaves when the registration drops.
    pub fn register(
        self: &Arc<Self>,
        route: &str,
        principal: Arc<Principal>,
        peer: SocketAddr,
        origin: Option<String>,
    ) -> Registration {
        let session = self.sessions.insert(route, principal, peer, origin);
        // A revocation made between the handshake's check and this insert kicked only the
        // sessions registered then: look again now that this one is visible to `revoke`.
        if self.revocations.contains(&session.principal()) {
            session.kick(Kick::REVOKED);
        }
        Registration {
            registry: self.clone(),
            session,
        }
    }

    /// Refuses `kind` `value` until `until`, and closes its live sessions; returns how many.
    pub fn revoke(&self, kind: Kind, value: &str, until: SystemTime) -> usize {
        self.revocations.insert(kind, value, until);
        self.sessions.kick_carrying(kind, value, Kick::REVOKED)
    }

    /// True when the principal's subject or token id is revoked (checked on every handshake).
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        self.revocations.contains(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_registered_after_its_revocation_is_kicked_at_once() {
        // The handshake checked `is_revoked` before the admin's revoke landed; the revoke then
        // kicked the sessions registered at that moment, not this one.
        let registry = Arc::new(Registry::default());
        let principal = Arc::new(Principal {
            sub: Some("alice".into()),
            jti: Some("t-1".into()),
            exp: u64::MAX,
            iat: None,
            claims: Default::default(),
            kid: None,
        });
        let until = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(
            registry.revoke(Kind::TokenId, "t-1", until),
            0,
            "nothing live yet"
        );
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let late = registry.register("echo", principal.clone(), peer, None);
        assert_eq!(late.session.kicked_now(), Some(Kick::REVOKED));
        let other = Arc::new(Principal {
            sub: Some("bob".into()),
            jti: Some("t-2".into()),
            exp: u64::MAX,
            iat: None,
            claims: Default::default(),
            kid: None,
        });
        let fine = registry.register("echo", other, peer, None);
        assert_eq!(fine.session.kicked_now(), None);
    }
}
