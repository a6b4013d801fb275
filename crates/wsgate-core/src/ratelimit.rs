//! Admission limits, all on governor's GCRA (memory per key is one atomic word):
//!
//! - [`PerIp`]: a route's handshake rate per client IP. Every handshake counts, failed
//!   authentications included, so nobody can make the proxy do unbounded signature work. The
//!   caller keys IPv6 clients by prefix (`peer::key`, `listen.ipv6_prefix`). The keyed state
//!   is pruned periodically, so a spray of addresses cannot grow memory without bound.
//! - [`Subjects`]: concurrent sessions per JWT `sub` on a route; a [`SubjectSlot`] frees its
//!   place when dropped, whatever ended the session.
//! - [`MessageLimits`]: a connection's client-to-backend message and byte rates.
//! - [`PreUpgrade`]: connections per client address that have not upgraded yet; a
//!   [`PreUpgradeSlot`] frees its place when dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Limits, OnLimit, Rate};

/// A GCRA quota: `rate`, with up to `burst` at once.
pub fn quota(rate: Rate, burst: u32) -> Quota {
    let count = u32::try_from(rate.count).unwrap_or(u32::MAX).max(1);
    let period = (rate.per / count).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .expect("the period is at least a nanosecond")
        .allow_burst(burst)
}

type Keyed<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Handshakes per client IP for one route.
pub struct PerIp<C: Clock = DefaultClock> {
    limiter: Keyed<C>,
    clock: C,
}

impl PerIp {
    pub fn new(rate: Rate, burst: u32) -> PerIp {
        PerIp::with_clock(rate, burst, CLOCK.clone())
    }
}

impl<C: Clock + Clone> PerIp<C> {
    pub fn with_clock(rate: Rate, burst: u32, clock: C) -> PerIp<C> {
        let limiter = RateLimiter::new(
            quota(rate, burst),
            DefaultKeyedStateStore::default(),
            clock.clone(),
        );
        PerIp { limiter, clock }
    }

    /// `Err(wait)` when `ip` must wait before its next handshake.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose state has returned to full burst capacity.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

impl<C: Clock> std::fmt::Debug for PerIp<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerIp")
            .field("addresses", &self.limiter.len())
            .finish()
    }
}

/// Holders per key under a cap: what the per-subject session cap and the per-address cap on
/// connections not upgraded yet have in common. The lock is held for one hash-map update when
/// a slot is taken and one when it is freed, never per message.
#[derive(Debug)]
pub struct Counts<K: Eq + Hash> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash> Default for Counts<K> {
    fn default() -> Counts<K> {
        Counts {
            counts: Mutex::default(),
        }
    }
}

/// A holder's place among its key's; freed on drop.
pub struct Slot<K: Eq + Hash> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Eq + Hash> Counts<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Counts<K> {
    /// A slot for `key`, or `None` when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }

    /// Keys holding a slot now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Live sessions per subject on one route.
#[derive(Debug)]
pub struct Subjects {
    /// Changed in place by a reload, so the counts of live sessions carry over.
    max: AtomicUsize,
    counts: Arc<Counts<String>>,
}

/// A subject's place among its route's sessions; freed on drop.
pub type SubjectSlot = Slot<String>;

impl Subjects {
    pub fn new(max: usize) -> Arc<Subjects> {
        Arc::new(Subjects {
            max: AtomicUsize::new(max),
            counts: Arc::default(),
        })
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A slot for `sub`, or `None` when it already has `max` sessions.
    pub fn acquire(&self, sub: &str) -> Option<SubjectSlot> {
        self.counts
            .acquire(sub.to_owned(), self.max.load(Ordering::Relaxed))
    }
}

/// Connections per client key (see `peer::key`) between accept and the upgrade: TLS and the
/// request head still to come. Taken at accept, before any TLS work.
pub type PreUpgrade = Counts<IpAddr>;

/// A connection's place among its address's connections before the upgrade; freed on drop.
pub type PreUpgradeSlot = Slot<IpAddr>;

/// Why a client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Messages,
    Bytes,
}

impl Exceeded {
    /// The limit that was crossed.
    pub fn kind(self) -> Limit {
        match self {
            Exceeded::Messages => Limit::Messages,
            Exceeded::Bytes => Limit::Bytes,
        }
    }
}

/// Every limit that can refuse a handshake or end a session: one `rate_limited_total{kind}`
/// value each. A new limit kind is a new variant here, and the compiler finds every place it
/// has to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The route's per-address handshake rate (429).
    Handshake,
    /// The route's per-subject session cap (429).
    Subject,
    /// Connections per address not yet upgraded (`listen.max_pending_per_ip`; closed at
    /// accept, before any route is known).
    Pending,
    /// The session's message rate (1008 or a dropped message).
    Messages,
    /// The session's byte rate (1008 or a dropped message).
    Bytes,
}

impl Limit {
    /// The limits of a route, shown at zero for every route from the start.
    pub const PER_ROUTE: [Limit; 4] = [
        Limit::Handshake,
        Limit::Subject,
        Limit::Messages,
        Limit::Bytes,
    ];

    /// How many kinds there are (for per-kind arrays, indexed by `self as usize`).
    pub const COUNT: usize = 5;

    /// The `kind` label of `rate_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Handshake => "handshake",
            Limit::Subject => "subject",
            Limit::Pending => "pending",
            Limit::Messages => "message",
            Limit::Bytes => "bytes",
        }
    }
}

/// The clock of every session's rate limiters. Making a clock calibrates it (CPUID, which
/// traps to the hypervisor in a VM): once per process, not twice per session (3.4 % of a
/// handshake's CPU, perf).
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// One connection's client-to-backend rates.
pub struct MessageLimits {
    messages: DefaultDirectRateLimiter,
    bytes: Option<DefaultDirectRateLimiter>,
    pub on_limit: OnLimit,
}

impl MessageLimits {
    pub fn new(limits: &Limits) -> MessageLimits {
        // A whole second of bytes may arrive at once, and always at least one largest message.
        let byte_burst = |rate: Rate| {
            let burst = rate.count.max(limits.max_message_size as u64);
            u32::try_from(burst).unwrap_or(u32::MAX)
        };
        MessageLimits {
            messages: RateLimiter::direct_with_clock(
                quota(limits.message_rate, limits.message_burst),
                CLOCK.clone(),
            ),
            bytes: limits.byte_rate.map(|rate| {
                RateLimiter::direct_with_clock(quota(rate, byte_burst(rate)), CLOCK.clone())
            }),
            on_limit: limits.on_limit,
        }
    }

    /// Takes one message, whose first frame carries `len` bytes, from the budget.
    pub fn admit(&self, len: u64) -> Result<(), Exceeded> {
        self.messages.check().map_err(|_| Exceeded::Messages)?;
        self.admit_bytes(len)
    }

    /// Takes `len` more bytes (a further fragment of an admitted message) from the budget.
    pub fn admit_bytes(&self, len: u64) -> Result<(), Exceeded> {
        if let (Some(bytes), Some(len)) = (
            &self.bytes,
            NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)),
        ) {
            match bytes.check_n(len) {
                Ok(Ok(())) => {}
                _ => return Err(Exceeded::Bytes),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::net::Ipv6Addr;

    fn per_second(count: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
        }
    }

    #[test]
    fn per_ip_allows_the_burst_then_refuses_with_a_wait() {
        let clock = FakeRelativeClock::default();
        let limiter = PerIp::with_clock(per_second(2), 3, clock.clone());
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(limiter.check(ip), Ok(()));
        }
        let wait = limiter.check(ip).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another address has its own budget.
        assert_eq!(limiter.check("192.0.2.8".parse().expect("ip")), Ok(()));
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(ip), Ok(()));
    }

    #[test]
    fn an_address_spray_is_pruned_back_to_nothing() {
        let clock = FakeRelativeClock::default();
        let limiter = PerIp::with_clock(per_second(20), 40, clock.clone());
        for i in 0..10_000u128 {
            let ip = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i));
            assert_eq!(limiter.check(ip), Ok(()));
        }
        assert_eq!(limiter.len(), 10_000);
        // Pruning keeps addresses that still owe capacity...
        limiter.prune();
        assert_eq!(limiter.len(), 10_000);
        // ...and forgets them once their bucket would be full again.
        clock.advance(Duration::from_secs(3));
        limiter.prune();
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn subject_slots_are_released_on_drop() {
        let subjects = Subjects::new(2);
        let first = subjects.acquire("alice").expect("first");
        let _second = subjects.acquire("alice").expect("second");
        assert!(subjects.acquire("alice").is_none(), "third over the cap");
        assert!(subjects.acquire("bob").is_some(), "caps are per subject");
        drop(first);
        assert!(subjects.acquire("alice").is_some(), "a slot came back");
    }

    #[test]
    fn pre_upgrade_slots_are_capped_per_key_and_released_on_drop() {
        let pre_upgrade = Arc::new(PreUpgrade::default());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = pre_upgrade.acquire(a, 2).expect("first");
        let second = pre_upgrade.acquire(a, 2).expect("second");
        assert!(pre_upgrade.acquire(a, 2).is_none(), "third over the cap");
        assert!(pre_upgrade.acquire(b, 2).is_some(), "caps are per key");
        drop(first);
        let third = pre_upgrade.acquire(a, 2).expect("a place came back");
        drop((second, third));
        assert!(pre_upgrade.is_empty(), "nothing is kept for idle addresses");
    }

    #[test]
    fn message_and_byte_budgets() {
        let limits = Limits {
            message_rate: Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            message_burst: 3,
            byte_rate: Some(Rate {
                count: 1000,
                per: Duration::from_secs(60),
            }),
            max_message_size: 1000,
            ..Limits::default()
        };
        let budget = MessageLimits::new(&limits);
        assert_eq!(budget.admit(600), Ok(()));
        assert_eq!(budget.admit(400), Ok(()));
        assert_eq!(budget.admit(100), Err(Exceeded::Bytes));
        let messages = MessageLimits::new(&Limits {
            byte_rate: None,
            ..limits
        });
        for _ in 0..3 {
            assert_eq!(messages.admit(10), Ok(()));
        }
        assert_eq!(messages.admit(10), Err(Exceeded::Messages));
    }
}
