//! `cluster`: the Redis that a fleet of instances shares (DESIGN.md section 10). Absent, every
//! instance keeps its own state and no Redis code runs.

use std::fmt;
use std::time::Duration;

pub const DEFAULT_KEY_PREFIX: &str = "wsgate";
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// A shorter lease would be renewed more often than a Redis call's time bound allows for.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Past this an instance's dead sessions would count for too long to be useful.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// `cluster`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub redis: RedisUrl,
    /// Every key starts with `<key_prefix>:`.
    pub key_prefix: String,
    /// This instance's name in listings, session ids and logs.
    pub instance: String,
    /// An instance that stops renewing its lease stops counting this long after.
    pub lease: Duration,
    pub on_unavailable: OnUnavailable,
}

/// What an instance does while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Admit on its own counts and the revocations it knows.
    Local,
    /// Answer new handshakes 503, and `/readyz` not ready.
    Refuse,
}

/// A `redis://` or `rediss://` URL; it may carry a password, so `Debug` shows only its host.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub(super) fn new(url: String) -> RedisUrl {
        RedisUrl(url)
    }

    /// The URL as written (with its credentials): for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme, host and port without credentials or path, for logs.
    pub fn display(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("redis", &self.0));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        format!("{scheme}://{host}")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.display())
    }
}

/// `<hostname>-<pid>`: unique among instances on one host, readable in listings.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wsgate".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_without_credentials() {
        let url = RedisUrl::new("rediss://user:s3cret@redis.internal:6380/2".into());
        assert_eq!(url.display(), "rediss://redis.internal:6380");
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
