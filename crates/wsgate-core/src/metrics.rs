//! Prometheus metrics (docs/contract.md section 6), registered once at start-up. Each route gets a
//! [`RouteMetrics`] of handles resolved once, so relaying a message is an atomic add, never a
//! label look-up. Labels carry route names, results and codes only: nothing per user.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::messages::Rejection;
use crate::ratelimit::Limit;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    route: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    route: Arc<str>,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    route: Arc<str>,
    code: &'static str,
}

/// The `closes_total{code}` label: the codes RFC 6455 and its registry define (1000-1015) and
/// the proxy's own (4001 token expired, 4003 revoked) by number; any other code, which a
/// client or backend may pick freely, is `other`, so nobody can mint series at will.
fn code_label(code: u16) -> &'static str {
    const DEFINED: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => DEFINED[usize::from(code - 1000)],
        4001 => "4001",
        4003 => "4003",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    provider: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// The Redis operations `cluster_errors_total{op}` counts, shown at zero from the start.
const CLUSTER_OPS: [&str; 13] = [
    "connect",
    "subscribe",
    "load",
    "sync",
    "admit",
    "revoke",
    "lift",
    "kick",
    "sessions",
    "release",
    "renew",
    "publish",
    "leave",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    route: Arc<str>,
    kind: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn session_histogram() -> Histogram {
    // 100 ms .. ~1.8 days
    Histogram::new(exponential_buckets(0.1, 4.0, 12))
}

fn handshake_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The process's metric families and their registry.
pub struct Metrics {
    registry: Registry,
    connections_active: Family<RouteLabel, Gauge>,
    handshakes: Family<ResultLabels, Counter>,
    messages: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    closes: Family<CodeLabels, Counter>,
    backend_errors: Family<KindLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<KindLabels, Counter>,
    config_reloads: Family<OutcomeLabel, Counter>,
    tls_cert_expiry: Gauge<f64, AtomicU64>,
    cert_expiry: std::sync::Mutex<Option<std::time::SystemTime>>,
    jwks_refresh: Family<RefreshLabels, Counter>,
    jwks_keys: Family<ProviderLabel, Gauge>,
    jwks_age: Family<ProviderLabel, Gauge<f64, AtomicU64>>,
    session_duration: HistogramFamily,
    handshake_duration: HistogramFamily,
    token_refreshes: Family<ResultLabels, Counter>,
    messages_rejected: Family<ReasonLabels, Counter>,
    cluster_up: Gauge,
    cluster_instances: Gauge,
    cluster_errors: Family<OpLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wsgate");
        let metrics = Metrics {
            connections_active: Family::default(),
            handshakes: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            closes: Family::default(),
            backend_errors: Family::default(),
            auth_failures: Family::default(),
            rate_limited: Family::default(),
            config_reloads: Family::default(),
            tls_cert_expiry: Gauge::default(),
            cert_expiry: std::sync::Mutex::new(None),
            jwks_refresh: Family::default(),
            jwks_keys: Family::default(),
            jwks_age: Family::default(),
            session_duration: Family::new_with_constructor(session_histogram),
            handshake_duration: Family::new_with_constructor(handshake_histogram),
            token_refreshes: Family::default(),
            messages_rejected: Family::default(),
            cluster_up: Gauge::default(),
            cluster_instances: Gauge::default(),
            cluster_errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections_active",
            "Live WebSocket sessions",
            metrics.connections_active.clone(),
        );
        registry.register(
            "handshakes",
            "Upgrade requests by outcome",
            metrics.handshakes.clone(),
        );
        registry.register(
            "messages",
            "Relayed data messages",
            metrics.messages.clone(),
        );
        registry.register("bytes", "Relayed payload bytes", metrics.bytes.clone());
        registry.register(
            "closes",
            "Closed sessions by the close code the client saw (codes outside 1000-1015, 4001 and 4003 are `other`)",
            metrics.closes.clone(),
        );
        registry.register(
            "backend_errors",
            "Failures reaching or talking to a backend",
            metrics.backend_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "tls_cert_expiry_seconds",
            "Seconds until the serving certificate expires",
            metrics.tls_cert_expiry.clone(),
        );
        registry.register(
            "rate_limited",
            "Refusals and closes by a rate limit or cap",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused authentications by reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "jwks_refresh",
            "JWKS fetches by outcome",
            metrics.jwks_refresh.clone(),
        );
        registry.register(
            "jwks_keys",
            "Usable keys in the current JWKS",
            metrics.jwks_keys.clone(),
        );
        registry.register(
            "jwks_age_seconds",
            "Age of the keys in use (since their successful fetch)",
            metrics.jwks_age.clone(),
        );
        registry.register(
            "session_duration_seconds",
            "How long sessions lasted",
            metrics.session_duration.clone(),
        );
        registry.register(
            "handshake_duration_seconds",
            "Time from the upgrade request to the 101 or the refusal",
            metrics.handshake_duration.clone(),
        );
        registry.register(
            "token_refreshes",
            "In-band token refreshes by result (ok or the refusal's reason)",
            metrics.token_refreshes.clone(),
        );
        registry.register(
            "messages_rejected",
            "Client messages refused by the route's message rules, by reason",
            metrics.messages_rejected.clone(),
        );
        registry.register(
            "build",
            "wsgate version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Counters that start at zero are visible before their first event, so dashboards and
        // alerts (`increase(...) > 0`) see that event instead of a series appearing at 1.
        for result in ["ok", "error"] {
            metrics
                .config_reloads
                .get_or_create_owned(&OutcomeLabel { result });
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The metrics of a server with a `cluster` (DESIGN.md section 10): the usual ones and
    /// `cluster_up`, `cluster_instances`, `cluster_errors_total{op}`.
    pub fn with_cluster() -> Metrics {
        let mut metrics = Metrics::new();
        let registry = &mut metrics.registry;
        registry.register(
            "cluster_up",
            "1 while the fleet's Redis answers, else 0",
            metrics.cluster_up.clone(),
        );
        registry.register(
            "cluster_instances",
            "Live instances of the fleet (as of the last lease renewal)",
            metrics.cluster_instances.clone(),
        );
        registry.register(
            "cluster_errors",
            "Failed or timed-out Redis calls by operation",
            metrics.cluster_errors.clone(),
        );
        for op in CLUSTER_OPS {
            metrics.cluster_errors.get_or_create_owned(&OpLabel { op });
        }
        metrics
    }

    pub(crate) fn set_cluster_up(&self, up: bool) {
        self.cluster_up.set(i64::from(up));
    }

    pub(crate) fn set_cluster_instances(&self, instances: i64) {
        self.cluster_instances.set(instances);
    }

    pub(crate) fn cluster_error(&self, op: &'static str) {
        self.cluster_errors.get_or_create(&OpLabel { op }).inc();
    }

    /// Handles for one route, or with `""` for requests refused before a route was chosen
    /// (bad requests, no route, overload, draining, the pre-upgrade cap). Those never become
    /// sessions, so `route=""` has only handshake and rate-limit series: its session, message
    /// and byte handles are registered nowhere.
    pub fn route(self: &Arc<Self>, name: &str) -> RouteMetrics {
        let route: Arc<str> = Arc::from(name);
        let unrouted = name.is_empty();
        let direction = |family: &Family<DirectionLabels, Counter>, direction| {
            if unrouted {
                return Counter::default();
            }
            family.get_or_create_owned(&DirectionLabels {
                route: route.clone(),
                direction,
            })
        };
        let label = RouteLabel {
            route: route.clone(),
        };
        let mut rate_limited: [Option<Counter>; Limit::COUNT] = Default::default();
        let mut limited = |limit: Limit| {
            rate_limited[limit as usize] =
                Some(self.rate_limited.get_or_create_owned(&KindLabels {
                    route: route.clone(),
                    kind: limit.label(),
                }));
        };
        if name.is_empty() {
            // Connections closed at accept over `listen.max_pending_per_ip` (no route yet).
            limited(Limit::Pending);
        } else {
            for limit in Limit::PER_ROUTE {
                limited(limit);
            }
            for kind in BACKEND_ERROR_KINDS {
                let labels = KindLabels {
                    route: route.clone(),
                    kind,
                };
                self.backend_errors.get_or_create_owned(&labels);
            }
        }
        let (active, session_duration) = if unrouted {
            (Gauge::default(), session_histogram())
        } else {
            (
                self.connections_active.get_or_create_owned(&label),
                self.session_duration.get_or_create_owned(&label),
            )
        };
        RouteMetrics {
            active,
            messages_up: direction(&self.messages, UP),
            messages_down: direction(&self.messages, DOWN),
            bytes_up: direction(&self.bytes, UP),
            bytes_down: direction(&self.bytes, DOWN),
            session_duration,
            handshake_duration: self.handshake_duration.get_or_create_owned(&label),
            rate_limited,
            metrics: self.clone(),
            route,
        }
    }

    /// Counts a reload (`ok` or `error`).
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&OutcomeLabel { result })
            .inc();
    }

    /// Records when the serving certificate expires; the gauge shows the seconds left at
    /// scrape time.
    pub fn set_cert_expiry(&self, expiry: std::time::SystemTime) {
        if let Ok(mut at) = self.cert_expiry.lock() {
            *at = Some(expiry);
        }
    }

    /// Handles for one provider.
    pub fn provider(&self, name: &str) -> ProviderMetrics {
        let provider: Arc<str> = Arc::from(name);
        let label = ProviderLabel {
            provider: provider.clone(),
        };
        ProviderMetrics {
            keys: self.jwks_keys.get_or_create_owned(&label),
            age: self.jwks_age.get_or_create_owned(&label),
            refresh: self.jwks_refresh.clone(),
            provider,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        if let Some(expiry) = self.cert_expiry.lock().ok().and_then(|at| *at) {
            let left = match expiry.duration_since(std::time::SystemTime::now()) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            self.tls_cert_expiry.set(left);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// `backend_errors_total{kind}` values, shown at zero for every route from the start: the
/// backend refusals (`handshake::Refusal::result`) and a backend's non-101 answer.
const BACKEND_ERROR_KINDS: [&str; 4] = [
    "backend_refused",
    "backend_timeout",
    "backend_invalid",
    "backend_status",
];

const UP: &str = "client_to_backend";
const DOWN: &str = "backend_to_client";

/// Pre-resolved handles for one route.
#[derive(Clone)]
pub struct RouteMetrics {
    pub active: Gauge,
    pub messages_up: Counter,
    pub messages_down: Counter,
    pub bytes_up: Counter,
    pub bytes_down: Counter,
    session_duration: Histogram,
    handshake_duration: Histogram,
    /// `rate_limited_total` of this route, by `Limit as usize`: the kinds created with the
    /// route, so counting one is an atomic add (the relay counts every refused message).
    rate_limited: [Option<Counter>; Limit::COUNT],
    metrics: Arc<Metrics>,
    route: Arc<str>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

impl RouteMetrics {
    /// Counts a finished handshake (`result` is `ok` or a refusal's label).
    pub fn handshake(&self, result: &'static str, took: Duration) {
        self.metrics
            .handshakes
            .get_or_create(&ResultLabels {
                route: self.route.clone(),
                result,
            })
            .inc();
        self.handshake_duration.observe(took.as_secs_f64());
    }

    pub fn backend_error(&self, kind: &'static str) {
        self.metrics
            .backend_errors
            .get_or_create(&KindLabels {
                route: self.route.clone(),
                kind,
            })
            .inc();
    }

    pub fn rate_limited(&self, limit: Limit) {
        // Any kind not created with the route (or added later) goes through the family.
        match self
            .rate_limited
            .get(limit as usize)
            .and_then(Option::as_ref)
        {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.metrics
                    .rate_limited
                    .get_or_create(&KindLabels {
                        route: self.route.clone(),
                        kind: limit.label(),
                    })
                    .inc();
            }
        }
    }

    /// Counts an in-band refresh: `ok`, or the reason the client was given.
    pub fn token_refresh(&self, result: &'static str) {
        self.metrics
            .token_refreshes
            .get_or_create(&ResultLabels {
                route: self.route.clone(),
                result,
            })
            .inc();
    }

    /// Shows this route's `messages_rejected_total` series at zero (a route with message
    /// rules), so dashboards and alerts see the first refusal as an increase.
    pub fn show_rejections(&self) {
        for rejection in Rejection::ALL {
            self.metrics
                .messages_rejected
                .get_or_create_owned(&ReasonLabels {
                    route: self.route.clone(),
                    reason: rejection.label(),
                });
        }
    }

    /// Counts a client message refused by the route's message rules (closed or dropped).
    pub fn message_rejected(&self, rejection: Rejection) {
        self.metrics
            .messages_rejected
            .get_or_create(&ReasonLabels {
                route: self.route.clone(),
                reason: rejection.label(),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.metrics
            .auth_failures
            .get_or_create(&ReasonLabels {
                route: self.route.clone(),
                reason,
            })
            .inc();
    }

    pub fn closed(&self, code: u16, lasted: Duration) {
        self.metrics
            .closes
            .get_or_create(&CodeLabels {
                route: self.route.clone(),
                code: code_label(code),
            })
            .inc();
        self.session_duration.observe(lasted.as_secs_f64());
    }
}

/// Handles for one JWKS provider.
#[derive(Clone)]
pub struct ProviderMetrics {
    keys: Gauge,
    age: Gauge<f64, AtomicU64>,
    refresh: Family<RefreshLabels, Counter>,
    provider: Arc<str>,
}

impl ProviderMetrics {
    /// Counts a fetch; `keys` is the new key count after a successful one.
    pub fn refreshed(&self, result: &'static str, keys: Option<usize>) {
        self.refresh
            .get_or_create(&RefreshLabels {
                provider: self.provider.clone(),
                result,
            })
            .inc();
        if let Some(keys) = keys {
            self.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
        }
    }

    /// Sets the age of the keys in use (called when metrics are scraped).
    pub fn set_age(&self, age: Option<Duration>) {
        // Never loaded: infinitely old, so "age above N" alerts fire.
        self.age.set(age.map_or(f64::INFINITY, |a| a.as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_outside_the_known_set_fold_into_other() {
        for code in [1000, 1008, 1014, 1015, 4001, 4003] {
            assert_eq!(code_label(code), code.to_string());
        }
        for code in [
            0, 999, 1016, 2999, 3000, 3999, 4000, 4002, 4567, 4999, 65535,
        ] {
            assert_eq!(code_label(code), "other", "{code}");
        }
    }
}
