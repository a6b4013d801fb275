//! The revocation set: subjects and token ids refused until a time. Checked on every
//! handshake (two look-ups of a borrowed `&str`, no allocation), written by the admin API.
//!
//! This is the part of the registry a fleet shares: a shared implementation keeps this same
//! interface (insert, contains, list, lift) and mirrors what other instances revoke into it,
//! so the handshake's check stays a local look-up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::auth::Principal;

use super::{lock, unix};

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A token's `sub`: every token of that subject.
    Subject,
    /// A token's `jti`: that one token.
    TokenId,
}

impl Kind {
    /// The kind a claim name names (`sub`, `jti`).
    pub fn from_claim(claim: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.claim() == claim)
    }

    /// Both kinds, in listing order.
    pub const ALL: [Kind; 2] = [Kind::Subject, Kind::TokenId];

    /// The claim's name, as the admin API and logs write it.
    pub fn claim(self) -> &'static str {
        match self {
            Kind::Subject => "sub",
            Kind::TokenId => "jti",
        }
    }

    /// The value of this claim in `principal`, if it carries one.
    pub fn of(self, principal: &Principal) -> Option<&str> {
        match self {
            Kind::Subject => principal.sub.as_deref(),
            Kind::TokenId => principal.jti.as_deref(),
        }
    }
}

/// A revoked subject or token id, refused until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: Kind,
    pub value: String,
    pub until: SystemTime,
}

impl Revocation {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.claim(),
            "value": self.value,
            "until": unix(self.until),
        })
    }
}

/// Revoked values -> refused until, one map per kind.
#[derive(Debug, Default)]
pub struct Revocations {
    maps: Mutex<[HashMap<String, SystemTime>; 2]>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Subject => 0,
        Kind::TokenId => 1,
    }
}

impl Revocations {
    /// Refuses `kind` `value` until `until` (a later revocation of it replaces this one).
    pub fn insert(&self, kind: Kind, value: &str, until: SystemTime) {
        let mut maps = lock(&self.maps);
        prune(&mut maps, SystemTime::now());
        maps[slot(kind)].insert(value.to_owned(), until);
    }

    /// Refuses `kind` `value` until `until` unless it is already refused longer (what another
    /// instance of a fleet says); true when this changed anything.
    pub fn merge(&self, kind: Kind, value: &str, until: SystemTime) -> bool {
        let mut maps = lock(&self.maps);
        let map = &mut maps[slot(kind)];
        if map.get(value).is_some_and(|known| *known >= until) {
            return false;
        }
        map.insert(value.to_owned(), until);
        true
    }

    /// True when the principal's subject or token id is refused now.
    pub fn contains(&self, principal: &Principal) -> bool {
        let now = SystemTime::now();
        let maps = lock(&self.maps);
        Kind::ALL.into_iter().any(|kind| {
            kind.of(principal)
                .and_then(|value| maps[slot(kind)].get(value))
                .is_some_and(|until| *until > now)
        })
    }

    /// Every revocation in force, by kind then value.
    pub fn list(&self) -> Vec<Revocation> {
        let mut maps = lock(&self.maps);
        prune(&mut maps, SystemTime::now());
        let mut list: Vec<Revocation> = Kind::ALL
            .into_iter()
            .flat_map(|kind| {
                maps[slot(kind)]
                    .iter()
                    .map(move |(value, until)| Revocation {
                        kind,
                        value: value.clone(),
                        until: *until,
                    })
            })
            .collect();
        list.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        list
    }

    /// Lifts a revocation; true when there was one.
    pub fn lift(&self, kind: Kind, value: &str) -> bool {
        lock(&self.maps)[slot(kind)].remove(value).is_some()
    }
}

fn prune(maps: &mut [HashMap<String, SystemTime>; 2], now: SystemTime) {
    for map in maps {
        map.retain(|_, until| *until > now);
    }
}
