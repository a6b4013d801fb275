//! What travels on the event channel (`<key_prefix>:events`): revocations, lifts and kicks of
//! one session, as small JSON objects, and the fleet-wide listing. An instance applies what it
//! receives to its own registry; what it sends it has already applied itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Fleet, millis};
use crate::registry::{Kick, Kind};

impl Fleet {
    /// An operator's revocation, already applied here: tell the fleet (always announced).
    /// While Redis is away it waits in the local set and is handed over on reconnect.
    pub(crate) async fn revoked(&self, kind: Kind, value: &str, until: SystemTime) {
        if !self.push_revocation(kind, value, until, true).await {
            info!(
                kind = kind.claim(),
                "fleet state: revocation kept locally until Redis answers"
            );
        }
    }

    /// Writes one revocation to Redis (and publishes it if new, or if `force`); true when
    /// Redis took it.
    pub(super) async fn push_revocation(
        &self,
        kind: Kind,
        value: &str,
        until: SystemTime,
        force: bool,
    ) -> bool {
        let event = json!({
            "from": self.config.instance,
            "op": "revoke",
            "kind": kind.claim(),
            "value": value,
            "until": millis(until),
        })
        .to_string();
        let mut invocation = self.scripts.revoke.prepare_invoke();
        invocation
            .key(self.key("revocations"))
            .arg(format!("{}:{value}", kind.claim()))
            .arg(millis(until))
            .arg(self.channel())
            .arg(event)
            .arg(if force { "1" } else { "0" });
        self.call("revoke", |mut c| async move {
            invocation.invoke_async::<u8>(&mut c).await
        })
        .await
        .is_some()
    }

    /// An operator lifted a revocation here: lift it fleet-wide.
    pub(crate) async fn lifted(&self, kind: Kind, value: &str) {
        let event = json!({
            "from": self.config.instance, "op": "lift", "kind": kind.claim(), "value": value,
        })
        .to_string();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(self.key("revocations"), format!("{}:{value}", kind.claim()))
            .ignore()
            .publish(self.channel(), event)
            .ignore();
        self.call("lift", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await;
    }

    /// Closes session `id` of another instance with 4003; returns 1 when a live instance
    /// lists it (and it was told), else 0.
    pub(crate) async fn kick(&self, instance: &str, id: u64) -> usize {
        let wanted = format!("{instance}:{id}");
        let listed = self
            .sessions()
            .await
            .unwrap_or_default()
            .iter()
            .any(|s| s.get("id").and_then(Value::as_str) == Some(wanted.as_str()));
        if !listed {
            return 0;
        }
        let event = json!({
            "from": self.config.instance, "op": "kick", "instance": instance, "session": id,
        })
        .to_string();
        let channel = self.channel();
        self.call("kick", |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(event)
                .query_async::<u64>(&mut c)
                .await
        })
        .await
        .map_or(0, |_| 1)
    }

    /// The sessions of every live instance as they published them; `None` while Redis is
    /// away (the caller lists its own).
    pub(crate) async fn sessions(&self) -> Option<Vec<Value>> {
        let invocation = {
            let mut invocation = self.scripts.sessions.prepare_invoke();
            invocation
                .key(self.key("instances"))
                .arg(self.key("sessions:"));
            invocation
        };
        let listed: Vec<String> = self
            .call_within("sessions", super::BULK_TIMEOUT, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Some(
            listed
                .iter()
                .filter_map(|s| serde_json::from_str::<Value>(s).ok())
                .collect(),
        )
    }

    /// Applies one event from the channel.
    pub(super) fn apply(&self, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(payload) else {
            warn!("fleet state: unreadable event ignored");
            return;
        };
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        let kind = text("kind").and_then(Kind::from_claim);
        match (text("op"), kind, text("value")) {
            (Some("revoke"), Some(kind), Some(value)) => {
                let until = event.get("until").and_then(Value::as_u64).unwrap_or(0);
                let until = UNIX_EPOCH + Duration::from_millis(until);
                let closed = self.registry.mirror(kind, value, until);
                if closed > 0 {
                    info!(
                        kind = kind.claim(),
                        closed,
                        from = text("from"),
                        "fleet revocation closed sessions"
                    );
                }
            }
            (Some("lift"), Some(kind), Some(value)) => {
                self.registry.revocations.lift(kind, value);
            }
            (Some("kick"), _, _) if text("instance") == Some(self.config.instance.as_str()) => {
                if let Some(id) = event.get("session").and_then(Value::as_u64) {
                    self.registry.sessions.kick_id(id, Kick::REVOKED);
                }
            }
            _ => {}
        }
    }
}
