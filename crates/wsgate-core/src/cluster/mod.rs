//! Fleet state over Redis (DESIGN.md section 10): with a `cluster`, the instances that share
//! one Redis behave as one proxy. Built only when `cluster` is configured; without it nothing
//! here runs and the registry keeps its local behaviour.
//!
//! What stays local: every handshake still checks the local revocation set (a mirror of the
//! fleet's, fed by pub/sub) and the local limits; the relay never touches Redis. What goes to
//! Redis, at most one script call per handshake (bounded by [`CALL_TIMEOUT`]): the address's
//! fleet-wide handshake rate and the subject's fleet-wide session count.
//!
//! - `scripts`: the Lua scripts and the key layout.
//! - `events`: revocations, lifts and kicks on the event channel; the fleet-wide listing.
//! - `supervisor`: connect, load and seed the revocations, renew the lease, publish the
//!   session listing, listen to the event channel; reconnect with backoff.

mod events;
mod scripts;
mod supervisor;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::scripts::Scripts;
use crate::config::{Cluster, OnUnavailable, Route};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Every Redis call is bounded by this: a Redis that stops answering delays a handshake by
/// at most this much once, then the instance works without it until it answers again.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// The bound on the supervisor's bulk calls (see [`Fleet::call_within`]).
const BULK_TIMEOUT: Duration = Duration::from_secs(5);
/// A subject's slot hash outlives its last acquire by this (its dead slots are pruned by the
/// next acquire; this bounds what a subject never seen again leaves behind).
const SUBJECT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an admission needs from the fleet.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted; the subject's slot (if it has a `sub`) frees when this drops.
    Admitted(Option<Hold>),
    /// The address is over the route's handshake rate across the fleet; wait this long.
    RateLimited(Duration),
    /// The subject holds `max_connections_per_subject` sessions on live instances.
    SubjectFull,
    /// Redis does not answer and `on_unavailable` is `refuse`.
    Unavailable,
}

/// The fleet this instance belongs to.
pub(crate) struct Fleet {
    config: Cluster,
    client: redis::Client,
    scripts: Scripts,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// The connection while Redis answers; taken away by the first failed call.
    connection: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// The first attempt to load the fleet's revocations is over (loaded, or Redis away).
    settled: AtomicBool,
    /// Wakes the supervisor: a call failed, or slots were released.
    wake: Notify,
    /// Subject slots this instance holds: slot -> subject key (re-registered on reconnect).
    held: Mutex<HashMap<String, String>>,
    /// Slots freed but not yet removed from Redis: (subject key, slot).
    released: Mutex<Vec<(String, String)>>,
    next_slot: AtomicU64,
    pub(crate) stop: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A subject's place among the fleet's sessions; freed (asynchronously) when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    fleet: Arc<Fleet>,
    slot: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.fleet.release(&self.slot);
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("redis", &self.config.redis)
            .field("instance", &self.config.instance)
            .finish()
    }
}

impl Fleet {
    /// The fleet of `config`; nothing connects until [`Fleet::start`].
    pub(crate) fn new(
        config: Cluster,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Fleet>, redis::RedisError> {
        let client = redis::Client::open(config.redis.expose())?;
        Ok(Arc::new(Fleet {
            config,
            client,
            scripts: Scripts::new(),
            registry,
            metrics,
            connection: Mutex::new(None),
            up: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            wake: Notify::new(),
            held: Mutex::default(),
            released: Mutex::default(),
            next_slot: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }))
    }

    /// Starts the supervisor: connects, loads the revocations, and keeps at it.
    pub(crate) fn start(self: &Arc<Self>) {
        tokio::spawn(supervisor::run(self.clone()));
    }

    pub(crate) fn instance(&self) -> &str {
        &self.config.instance
    }

    /// `/readyz`: the fleet's revocations are loaded (or, with `local`, the first attempt is
    /// over); with `refuse`, Redis also answers now.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        let up = self.up.load(Ordering::Relaxed);
        if !self.settled.load(Ordering::Relaxed) {
            Some("fleet revocations not loaded yet")
        } else if !up && self.config.on_unavailable == OnUnavailable::Refuse {
            Some("fleet state (Redis) unavailable")
        } else {
            None
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.config.key_prefix)
    }

    fn channel(&self) -> String {
        self.key("events")
    }

    /// The gauge, and one log line per change of state (with what failed, going down).
    fn set_up(&self, up: bool, why: &dyn std::fmt::Display) {
        self.metrics.set_cluster_up(up);
        if self.up.swap(up, Ordering::Relaxed) != up {
            let (redis, instance) = (self.config.redis.display(), &self.config.instance);
            if up {
                info!(%redis, %instance, "fleet state: Redis answers");
            } else {
                let on_unavailable = match self.config.on_unavailable {
                    OnUnavailable::Local => "admitting on local state",
                    OnUnavailable::Refuse => "refusing new sessions",
                };
                warn!(%redis, %instance, %why, "fleet state: Redis unavailable; {on_unavailable}");
            }
        }
    }

    /// A call failed: stop using the connection and let the supervisor reconnect.
    fn trouble(&self, op: &'static str, why: &dyn std::fmt::Display) {
        self.metrics.cluster_error(op);
        lock(&self.connection).take();
        self.set_up(false, &format_args!("{op}: {why}"));
        self.wake.notify_waiters();
    }

    /// Runs one Redis call on the current connection, bounded by [`CALL_TIMEOUT`]; `None`
    /// when there is no connection or the call failed (recorded under `op`).
    async fn call<T, F>(
        &self,
        op: &'static str,
        call: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(op, CALL_TIMEOUT, call).await
    }

    /// [`Fleet::call`] with another bound: the supervisor's bulk writes (a whole listing, every
    /// held slot after a reconnect) may take longer than one handshake's script, and no
    /// handshake waits on them.
    async fn call_within<T, F>(
        &self,
        op: &'static str,
        bound: Duration,
        call: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let connection = lock(&self.connection).clone()?;
        match tokio::time::timeout(bound, call(connection)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.trouble(op, &error);
                None
            }
            Err(_) => {
                self.trouble(op, &format_args!("no answer within {bound:?}"));
                None
            }
        }
    }

    /// The fleet's part of admitting a handshake on `route` from `ip` (keyed as per-IP limits
    /// are) for `sub`: one script call.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        route: &Route,
        ip: IpAddr,
        sub: Option<&str>,
    ) -> Verdict {
        let limits = &route.limits;
        let count = limits.handshake_rate_per_ip.count.max(1) as f64;
        let period = limits.handshake_rate_per_ip.per.as_secs_f64() * 1000.0 / count;
        let subject = sub.map(|sub| self.key(&format!("subject:{}:{sub}", route.name)));
        let slot = format!(
            "{}#{}",
            self.config.instance,
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(self.key(&format!("rate:{}:{ip}", route.name)))
            .key(self.key("instances"));
        if let Some(subject) = &subject {
            invocation.key(subject);
        }
        invocation
            .arg(period.max(0.001))
            .arg(limits.handshake_burst_per_ip.max(1))
            .arg(limits.max_connections_per_subject)
            .arg(&slot)
            .arg(&self.config.instance)
            .arg(ms(self.config.lease))
            .arg(ms(SUBJECT_HORIZON));
        let answer: Option<(u8, u64)> = if self.up.load(Ordering::Relaxed) {
            self.call("admit", |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await
        } else {
            None
        };
        match answer {
            Some((1, wait)) => Verdict::RateLimited(Duration::from_millis(wait)),
            Some((2, _)) => Verdict::SubjectFull,
            Some(_) => Verdict::Admitted(subject.map(|key| self.hold(slot, key))),
            None if self.config.on_unavailable == OnUnavailable::Refuse => Verdict::Unavailable,
            // Admitted on local state; the slot is registered when Redis is back.
            None => Verdict::Admitted(subject.map(|key| self.hold(slot, key))),
        }
    }

    fn hold(self: &Arc<Self>, slot: String, key: String) -> Hold {
        lock(&self.held).insert(slot.clone(), key);
        Hold {
            fleet: self.clone(),
            slot,
        }
    }

    fn release(&self, slot: &str) {
        if let Some(key) = lock(&self.held).remove(slot) {
            lock(&self.released).push((key, slot.to_owned()));
            self.wake.notify_waiters();
        }
    }

    /// A clean shutdown: this instance leaves the listing and its slots free at once (a
    /// killed one's stop counting when its lease ends).
    pub(crate) async fn leave(&self) {
        supervisor::flush_released(self).await;
        let (instances, sessions) = (
            self.key("instances"),
            self.key(&format!("sessions:{}", self.config.instance)),
        );
        let instance = self.config.instance.clone();
        let mut pipe = redis::pipe();
        pipe.zrem(instances, instance)
            .ignore()
            .del(sessions)
            .ignore();
        self.call("leave", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await;
        self.stop.cancel();
    }
}
