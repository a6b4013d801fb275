//! The client side of `soak.sh` (issue 7: soak and faults): `cycles` (connect + upgrade +
//! close loops, counted or timed), `hold` (many idle sessions held until told to close) and
//! `bounce` (echo loops that survive the backend being restarted). Each prints JSON lines on
//! stdout that the script reads with `jq`:
//!
//! - `{"event":"ready", ...}` once its sessions are open (`hold`, `bounce`): the script then
//!   reads the proxy's figures and sends SIGUSR1 (or `--max-hold` runs out);
//! - `{"event":"done", ...}` with the final [`Tally`] before exiting.

pub mod bounce;
pub mod cycles;
pub mod hold;
pub mod raw;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::net::OpenError;

/// What happened to the connections of one command (summed over its loops).
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    /// Upgrades that ended in a session.
    pub opened: u64,
    /// Upgrades answered with an HTTP status instead of 101, by status.
    pub refused: BTreeMap<String, u64>,
    /// Upgrades that got no HTTP answer (connect, TLS, timeout).
    pub failed: u64,
    /// Sessions the proxy closed during the load, by close code (`none`: no close frame).
    pub closes: BTreeMap<String, u64>,
    /// Echo round trips completed.
    pub round_trips: u64,
    /// Loops that completed a round trip on a new session after their session got 1014.
    pub recovered: u64,
    /// Sessions that ended while they were held, before the script said so (by close code).
    pub ended_early: BTreeMap<String, u64>,
    /// Sessions closed (politely) at the end, as told.
    pub closed: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

impl Tally {
    pub fn open_failed(&mut self, error: &OpenError) {
        match error {
            OpenError::Refused(status) => bump(&mut self.refused, status.to_string()),
            OpenError::Failed(_) => self.failed += 1,
        }
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.opened += other.opened;
        self.failed += other.failed;
        self.round_trips += other.round_trips;
        self.recovered += other.recovered;
        self.closed += other.closed;
        for (into, from) in [
            (&mut self.refused, other.refused),
            (&mut self.closes, other.closes),
            (&mut self.ended_early, other.ended_early),
        ] {
            for (key, count) in from {
                *into.entry(key).or_default() += count;
            }
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
}

/// A close code as a map key; `none` for a stream that ended without a close frame.
pub fn code_key(code: Option<u16>) -> String {
    code.map_or_else(|| "none".to_owned(), |c| c.to_string())
}

/// Prints one JSON event line on stdout (what the script waits for).
pub fn emit(event: &str, tally: &Tally, extra: serde_json::Value) {
    let mut line = serde_json::json!({ "event": event, "tally": tally });
    if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    println!("{line}");
}

/// SIGUSR1 from the script: "close your sessions now". Installed before anything is opened,
/// so an early signal cannot kill the process.
pub struct Go(Signal);

impl Go {
    pub fn install() -> anyhow::Result<Go> {
        Ok(Go(signal(SignalKind::user_defined1())?))
    }

    /// Waits for the signal, at most `bound`.
    pub async fn wait(&mut self, bound: Duration) {
        drop(tokio::time::timeout(bound, self.0.recv()).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_by_key() {
        let mut total = Tally::default();
        let mut one = Tally {
            opened: 2,
            ..Tally::default()
        };
        bump(&mut one.closes, code_key(Some(1014)));
        one.open_failed(&OpenError::Refused(502));
        let mut two = Tally::default();
        bump(&mut two.closes, code_key(Some(1014)));
        bump(&mut two.closes, code_key(None));
        two.open_failed(&OpenError::Failed("timed out".into()));
        total.merge(one);
        total.merge(two);
        assert_eq!(total.opened, 2);
        assert_eq!(total.failed, 1);
        assert_eq!(total.refused.get("502"), Some(&1));
        assert_eq!(total.closes.get("1014"), Some(&2));
        assert_eq!(total.closes.get("none"), Some(&1));
        assert_eq!(total.first_error.as_deref(), Some("refused with HTTP 502"));
    }
}
