//! Every live session, and the revocations that refuse tokens and subjects.
//!
//! A session registers once after its 101 and unregisters when its [`Registration`] drops;
//! both take a short lock, per connection, never per message. Each session holds the
//! receiving end of a `watch` channel: the admin API and reloads close it by sending a
//! [`Kick`], which the relay sees as one more branch of its `select!`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::auth::Principal;

/// Revocations of a subject without a `ttl` last this long.
pub const DEFAULT_REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the proxy ends a session from outside the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

impl Kick {
    pub const REVOKED: Kick = Kick {
        code: 4003,
        reason: "revoked",
    };
    pub const GOING_AWAY: Kick = Kick {
        code: 1001,
        reason: "going away",
    };
}

/// What the registry knows of a live session.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub route: String,
    pub principal: Arc<Principal>,
    pub peer: SocketAddr,
    /// The `Origin` the session was admitted with, to re-check it after a reload.
    pub origin: Option<String>,
    pub since: SystemTime,
    kick: watch::Sender<Option<Kick>>,
}

impl Session {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "route": self.route,
            "sub": self.principal.sub,
            "jti": self.principal.jti,
            "peer": self.peer.to_string(),
            "since": unix(self.since),
            "expires": self.principal.exp,
        })
    }

    pub(crate) fn kick(&self, kick: Kick) {
        self.kick.send_replace(Some(kick));
    }
}

/// A revoked subject or token id, refused until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: &'static str,
    pub value: String,
    pub until: SystemTime,
}

#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    revoked: Mutex<Revoked>,
}

/// Revoked subjects and token ids -> refused until. Two maps so that the per-handshake
/// check looks up a `&str` without allocating.
#[derive(Debug, Default)]
struct Revoked {
    sub: HashMap<String, SystemTime>,
    jti: HashMap<String, SystemTime>,
}

impl Revoked {
    fn kind(&mut self, kind: &str) -> Option<&mut HashMap<String, SystemTime>> {
        match kind {
            "sub" => Some(&mut self.sub),
            "jti" => Some(&mut self.jti),
            _ => None,
        }
    }

    fn prune(&mut self, now: SystemTime) {
        self.sub.retain(|_, until| *until > now);
        self.jti.retain(|_, until| *until > now);
    }
}

/// A registered session; dropping it unregisters.
pub struct Registration {
    registry: Arc<Registry>,
    pub session: Arc<Session>,
    pub kicked: watch::Receiver<Option<Kick>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.session.id);
    }
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
    pub fn register(
        self: &Arc<Self>,
        route: &str,
        principal: Arc<Principal>,
        peer: SocketAddr,
        origin: Option<String>,
    ) -> Registration {
        let (kick, kicked) = watch::channel(None);
        let session = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            route: route.to_owned(),
            principal,
            peer,
            origin,
            since: SystemTime::now(),
            kick,
        });
        lock(&self.sessions).insert(session.id, session.clone());
        // A revocation made between the handshake's check and this insert kicked only the
        // sessions registered then: look again now that this one is visible to `revoke`.
        if self.is_revoked(&session.principal) {
            session.kick(Kick::REVOKED);
        }
        Registration {
            registry: self.clone(),
            session,
            kicked,
        }
    }

    /// Live sessions, optionally only those of `sub` and/or on `route`, oldest first.
    pub fn list(&self, sub: Option<&str>, route: Option<&str>) -> Vec<Arc<Session>> {
        let mut sessions: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| sub.is_none_or(|sub| s.principal.sub.as_deref() == Some(sub)))
            .filter(|s| route.is_none_or(|route| s.route == route))
            .cloned()
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// Closes the session `id` with `kick`; returns how many (0 or 1).
    pub fn kick_id(&self, id: u64, kick: Kick) -> usize {
        let session = lock(&self.sessions).get(&id).cloned();
        session.map_or(0, |session| {
            session.kick(kick);
            1
        })
    }

    /// Closes every session `select` picks with `kick`; returns how many.
    pub fn kick(&self, select: impl Fn(&Session) -> bool, kick: Kick) -> usize {
        let chosen: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| select(s))
            .cloned()
            .collect();
        for session in &chosen {
            session.kick(kick);
        }
        chosen.len()
    }

    /// Refuses `kind` (`sub` or `jti`) `value` until `until`, and closes its live sessions.
    pub fn revoke(&self, kind: &'static str, value: &str, until: SystemTime) -> usize {
        {
            let mut revoked = lock(&self.revoked);
            revoked.prune(SystemTime::now());
            if let Some(map) = revoked.kind(kind) {
                map.insert(value.to_owned(), until);
            }
        }
        self.kick(|s| matches(s, kind, value), Kick::REVOKED)
    }

    /// The latest `exp` plus `leeway` among live sessions carrying `kind` `value`: until then
    /// their tokens are accepted.
    pub fn latest_expiry(
        &self,
        kind: &'static str,
        value: &str,
        leeway: Duration,
    ) -> Option<SystemTime> {
        lock(&self.sessions)
            .values()
            .filter(|s| matches(s, kind, value))
            .map(|s| SystemTime::now() + s.principal.remaining(leeway))
            .max()
    }

    /// True when the principal's subject or token id is revoked (checked on every handshake:
    /// two look-ups, no allocation, no pruning).
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        let now = SystemTime::now();
        let revoked = lock(&self.revoked);
        let hit = |map: &HashMap<String, SystemTime>, value: &Option<String>| {
            value
                .as_deref()
                .and_then(|v| map.get(v))
                .is_some_and(|until| *until > now)
        };
        hit(&revoked.sub, &principal.sub) || hit(&revoked.jti, &principal.jti)
    }

    pub fn revocations(&self) -> Vec<Revocation> {
        let mut revoked = lock(&self.revoked);
        revoked.prune(SystemTime::now());
        let entries = |kind: &'static str, map: &HashMap<String, SystemTime>| {
            map.iter()
                .map(|(value, until)| Revocation {
                    kind,
                    value: value.clone(),
                    until: *until,
                })
                .collect::<Vec<_>>()
        };
        let mut list = entries("sub", &revoked.sub);
        list.extend(entries("jti", &revoked.jti));
        list.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        list
    }

    /// Lifts a revocation; true when there was one.
    pub fn lift(&self, kind: &'static str, value: &str) -> bool {
        lock(&self.revoked)
            .kind(kind)
            .is_some_and(|map| map.remove(value).is_some())
    }

    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn matches(session: &Session, kind: &str, value: &str) -> bool {
    let field = match kind {
        "sub" => &session.principal.sub,
        "jti" => &session.principal.jti,
        _ => return false,
    };
    field.as_deref() == Some(value)
}

impl Revocation {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"kind": self.kind, "value": self.value, "until": unix(self.until)})
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
            claims: Default::default(),
            kid: None,
        });
        let until = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(registry.revoke("jti", "t-1", until), 0, "nothing live yet");
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let late = registry.register("echo", principal.clone(), peer, None);
        assert_eq!(*late.kicked.borrow(), Some(Kick::REVOKED));
        let other = Arc::new(Principal {
            sub: Some("bob".into()),
            jti: Some("t-2".into()),
            exp: u64::MAX,
            claims: Default::default(),
            kid: None,
        });
        let fine = registry.register("echo", other, peer, None);
        assert_eq!(*fine.kicked.borrow(), None);
    }
}
