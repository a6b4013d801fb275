//! The table of live sessions: one entry per relaying session, listed by the admin API,
//! checked by reloads, and closed from outside the relay by a [`Kick`].
//!
//! A session registers once after its 101 and unregisters when its [`Registration`] drops;
//! both take a short lock, per connection, never per message. Whoever closes a session gives
//! its entry a [`Kick`], which wakes the session's relay.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::revocations::Kind;
use super::{Registry, lock, unix};
use crate::auth::Principal;

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

/// How a session is closed from outside: the latest kick, and the wake-up of its relay. (This
/// was a `watch` channel, ~370 bytes a session, most of them its sharded list of waiters, for
/// one waiter.)
#[derive(Debug, Default)]
struct Kicked {
    kick: Mutex<Option<Kick>>,
    wake: Notify,
}

/// What the registry knows of a live session.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub route: String,
    /// The token the session runs on: the one it was admitted with, or the latest in-band
    /// refresh (same `sub`; `jti`, `exp` and claims may differ).
    principal: ArcSwap<Principal>,
    pub peer: SocketAddr,
    /// The `Origin` the session was admitted with, to re-check it after a reload.
    pub origin: Option<String>,
    pub since: SystemTime,
    /// The instance's name with a `cluster`: ids are then `<instance>:<id>` fleet-wide.
    pub instance: Option<Arc<str>>,
    kicked: Kicked,
}

impl Session {
    pub fn to_json(&self) -> serde_json::Value {
        let principal = self.principal.load();
        let mut json = serde_json::json!({
            "id": self.id,
            "route": self.route,
            "sub": principal.sub,
            "jti": principal.jti,
            "peer": self.peer.to_string(),
            "since": unix(self.since),
            "expires": principal.exp,
        });
        if let Some(instance) = &self.instance {
            json["id"] = format!("{instance}:{}", self.id).into();
            json["instance"] = instance.to_string().into();
        }
        json
    }

    /// The token the session runs on now.
    pub fn principal(&self) -> Arc<Principal> {
        self.principal.load_full()
    }

    /// The session runs on `principal` from now on (an in-band refresh was accepted).
    pub(crate) fn replace_principal(&self, principal: Arc<Principal>) {
        self.principal.store(principal);
    }

    /// Closes the session with `kick` (a later kick replaces one its relay has not seen yet).
    pub(crate) fn kick(&self, kick: Kick) {
        *lock(&self.kicked.kick) = Some(kick);
        self.kicked.wake.notify_waiters();
    }

    /// The kick the session was given, if any.
    pub fn kicked_now(&self) -> Option<Kick> {
        *lock(&self.kicked.kick)
    }

    /// Completes when the session is kicked (at once if it was already).
    pub async fn kicked(&self) -> Kick {
        loop {
            let woken = self.kicked.wake.notified();
            let mut woken = std::pin::pin!(woken);
            // Registered as a waiter before looking, so a kick between the look and the wait
            // still wakes it.
            woken.as_mut().enable();
            if let Some(kick) = self.kicked_now() {
                return kick;
            }
            woken.await;
        }
    }

    /// True when the session's token carries `value` as its `kind` claim.
    fn carries(&self, kind: Kind, value: &str) -> bool {
        kind.of(&self.principal.load()) == Some(value)
    }
}

/// A registered session; dropping it unregisters.
pub struct Registration {
    pub(super) registry: Arc<Registry>,
    pub session: Arc<Session>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.sessions.remove(self.session.id);
    }
}

/// Live sessions by id.
#[derive(Debug, Default)]
pub struct Sessions {
    next_id: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Session>>>,
    /// Set with a `cluster`: the name that prefixes every id.
    instance: Option<Arc<str>>,
    /// With a `cluster`: ids inserted, refreshed or removed since the fleet last published
    /// them, and the wake-up of its publisher. Touched once per session start and end.
    dirty: Mutex<HashSet<u64>>,
    changed: Notify,
}

impl Sessions {
    /// A table whose ids are `<instance>:<n>`, unique across a fleet.
    pub fn for_instance(instance: &str) -> Sessions {
        Sessions {
            instance: Some(Arc::from(instance)),
            ..Sessions::default()
        }
    }

    /// Session `id`'s listing changed (inserted, removed, or its token refreshed): with a
    /// `cluster`, the fleet's publisher is told.
    pub(crate) fn touch(&self, id: u64) {
        if self.instance.is_some() {
            lock(&self.dirty).insert(id);
            self.changed.notify_waiters();
        }
    }

    /// The ids touched since the last call.
    pub(crate) fn take_dirty(&self) -> HashSet<u64> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// Notified when an id is touched.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// The live session `id`, if it is.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Session>> {
        lock(&self.table).get(&id).cloned()
    }

    /// Adds a session with a fresh id.
    pub(super) fn insert(
        &self,
        route: &str,
        principal: Arc<Principal>,
        peer: SocketAddr,
        origin: Option<String>,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            route: route.to_owned(),
            principal: ArcSwap::new(principal),
            peer,
            origin,
            since: SystemTime::now(),
            instance: self.instance.clone(),
            kicked: Kicked::default(),
        });
        lock(&self.table).insert(session.id, session.clone());
        self.touch(session.id);
        session
    }

    fn remove(&self, id: u64) {
        lock(&self.table).remove(&id);
        self.touch(id);
    }

    /// Live sessions, optionally only those of `sub` and/or on `route`, oldest first.
    pub fn list(&self, sub: Option<&str>, route: Option<&str>) -> Vec<Arc<Session>> {
        let mut sessions: Vec<Arc<Session>> = lock(&self.table)
            .values()
            .filter(|s| sub.is_none_or(|sub| s.principal.load().sub.as_deref() == Some(sub)))
            .filter(|s| route.is_none_or(|route| s.route == route))
            .cloned()
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// Closes the session `id` with `kick`; returns how many (0 or 1).
    pub fn kick_id(&self, id: u64, kick: Kick) -> usize {
        let session = lock(&self.table).get(&id).cloned();
        session.map_or(0, |session| {
            session.kick(kick);
            1
        })
    }

    /// Closes every session whose token carries `kind` `value` with `kick`; returns how many.
    pub fn kick_carrying(&self, kind: Kind, value: &str, kick: Kick) -> usize {
        let chosen: Vec<Arc<Session>> = lock(&self.table)
            .values()
            .filter(|s| s.carries(kind, value))
            .cloned()
            .collect();
        for session in &chosen {
            session.kick(kick);
        }
        chosen.len()
    }

    /// The latest `exp` plus `leeway` among live sessions carrying `kind` `value`: until then
    /// their tokens are accepted.
    pub fn latest_expiry(&self, kind: Kind, value: &str, leeway: Duration) -> Option<SystemTime> {
        lock(&self.table)
            .values()
            .filter(|s| s.carries(kind, value))
            .map(|s| SystemTime::now() + s.principal.load().remaining(leeway))
            .max()
    }
}
