//! `cluster`: the Redis URL (never echoed: it may hold a password), the key prefix, this
//! instance's name, the lease and what to do while Redis is away.

use serde_saphyr::Spanned;

use super::Validator;
use crate::config::cluster::{
    Cluster, DEFAULT_KEY_PREFIX, DEFAULT_LEASE, MAX_LEASE, MIN_LEASE, OnUnavailable, RedisUrl,
    default_instance,
};
use crate::config::{raw, units};

impl Validator<'_> {
    pub(super) fn cluster(&mut self, cluster: &Spanned<raw::Cluster>) -> Option<Cluster> {
        let at = &cluster.referenced;
        let c = &cluster.value;
        let redis = match &c.redis {
            None => {
                self.fail("cluster.redis", at, "is required");
                None
            }
            Some(scalar) => {
                let text = self.text("cluster.redis", scalar)?;
                match redis_url(&text) {
                    Ok(url) => Some(url),
                    Err(message) => {
                        self.fail("cluster.redis", &scalar.referenced, message);
                        None
                    }
                }
            }
        };
        let key_prefix = self.optional(
            "cluster.key_prefix",
            &c.key_prefix,
            DEFAULT_KEY_PREFIX.to_owned(),
            |text| name(text, "a key prefix"),
        );
        let instance = match &c.instance {
            Some(scalar) if !scalar.value.is_empty() => {
                self.value("cluster.instance", scalar, |text| {
                    name(text, "an instance name")
                })
            }
            _ => Some(default_instance()),
        };
        let lease = self.optional("cluster.lease", &c.lease, DEFAULT_LEASE, lease);
        let on_unavailable = self.optional(
            "cluster.on_unavailable",
            &c.on_unavailable,
            OnUnavailable::Local,
            on_unavailable,
        );
        Some(Cluster {
            redis: redis?,
            key_prefix,
            instance: instance?,
            lease,
            on_unavailable,
        })
    }
}

/// A URL the Redis client accepts, with scheme `redis` or `rediss`.
fn redis_url(text: &str) -> Result<RedisUrl, String> {
    const EXPECTED: &str = "expected a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0 \
                            (the value is not shown: it may hold a password)";
    let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
    if !scheme_ok || redis::IntoConnectionInfo::into_connection_info(text).is_err() {
        return Err(EXPECTED.to_owned());
    }
    Ok(RedisUrl::new(text.to_owned()))
}

/// 1 to 64 printable characters without spaces: it becomes part of Redis keys and ids.
fn name(text: &str, what: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '{' && c != '}');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected {what}: 1 to 64 printable ASCII characters, no spaces or braces"
        ))
    }
}

fn lease(text: &str) -> Result<std::time::Duration, String> {
    match units::duration(text)? {
        lease if (MIN_LEASE..=MAX_LEASE).contains(&lease) => Ok(lease),
        _ => Err("must be from 1s to 1h".to_owned()),
    }
}

fn on_unavailable(text: &str) -> Result<OnUnavailable, String> {
    match text {
        "local" => Ok(OnUnavailable::Local),
        "refuse" => Ok(OnUnavailable::Refuse),
        _ => Err("expected local or refuse".to_owned()),
    }
}
