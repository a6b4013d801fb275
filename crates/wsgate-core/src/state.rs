//! What a configuration becomes at run time (routes with their limiters and metric handles,
//! providers with their keys, the TLS acceptor), and hot reload: a new file is validated
//! completely, built into a new [`State`] and swapped in atomically (arc-swap), so handshakes
//! never lock. Live sessions keep running, except exactly those the change concerns: a removed
//! route closes its sessions with 1001, and a route whose policy would now refuse a session
//! (its Origin, its claims, or its provider changed) closes it with 4003. Providers whose
//! settings did not change keep their keys and their refresh task; routes whose limits did
//! not change keep their limiter state; live sessions on a route with message rules judge
//! their next messages by the reloaded rules.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::jwks::KeyStore;
use crate::auth::{self, Authenticator};
use crate::config::{Config, Route};
use crate::messages::Rules;
use crate::metrics::{Metrics, RouteMetrics};
use crate::ratelimit::{PerIp, Subjects};
use crate::registry::{Kick, Registry, Session};
use crate::router::Router;
use crate::{origin, tls};

/// Why a configuration could not be put to work (it was valid, but something it names failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("provider {provider}: {source}")]
    Provider {
        provider: String,
        source: auth::jwks::Error,
    },
}

/// A route with what it needs at run time, built once per configuration.
#[derive(Debug)]
pub struct RouteEntry {
    pub route: Route,
    pub metrics: RouteMetrics,
    pub per_ip: Arc<PerIp>,
    pub subjects: Arc<Subjects>,
    /// The route's message rules in force, shared with its live sessions and kept across
    /// reloads: a reload stores the newly compiled rules here once it is swapped in, so the
    /// next message of every session on the route is judged by them.
    pub rules: Arc<ArcSwapOption<Rules>>,
}

impl AsRef<Route> for RouteEntry {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// One configuration, ready to serve.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) router: Router<RouteEntry>,
    pub(crate) unrouted: RouteMetrics,
    pub(crate) tls: crate::tls::Acceptor,
    pub(crate) auth: Authenticator,
    /// One per provider: stops its background refresh when a reload drops it.
    refreshers: Vec<CancellationToken>,
}

impl State {
    /// Builds the run-time state, reusing what `previous` already has for unchanged parts.
    /// Spawns the refresh task of every provider that is new.
    pub(crate) fn build(
        config: Config,
        metrics: &Arc<Metrics>,
        previous: Option<&State>,
        stopping: &CancellationToken,
    ) -> Result<State, Error> {
        let tls = crate::tls::Acceptor::from(config.listen.tls.server_config()?);
        if let Some(expiry) = config.listen.tls.chain.first().and_then(tls::not_after) {
            metrics.set_cert_expiry(expiry);
        }
        let mut stores = Vec::new();
        let mut refreshers = Vec::new();
        let mut started = Vec::new();
        for provider in &config.providers {
            let reused = previous.and_then(|old| {
                old.auth
                    .stores
                    .iter()
                    .zip(&old.refreshers)
                    .find(|(store, _)| store.config == *provider)
            });
            let (store, refresher) = match reused {
                Some((store, refresher)) => (store.clone(), refresher.clone()),
                None => {
                    let store = KeyStore::new(provider.clone(), metrics.provider(&provider.name))
                        .map_err(|source| Error::Provider {
                        provider: provider.name.clone(),
                        source,
                    })?;
                    let store = Arc::new(store);
                    let refresher = stopping.child_token();
                    started.push((store.clone(), refresher.clone()));
                    (store, refresher)
                }
            };
            stores.push(store);
            refreshers.push(refresher);
        }
        // Keys are fetched in the background once every provider is built (a later one failing
        // leaves nothing running): until a provider has them, its routes answer 503 and /readyz
        // says not ready.
        for (store, refresher) in started {
            tokio::spawn(store.run(refresher));
        }
        let router = Router::new(config.routes.iter().map(|route| {
            // Limiter state survives a reload: the per-IP buckets while their rate and burst
            // are unchanged, the per-subject counts always (live sessions hold their slots).
            let old = previous.and_then(|old| old.router.get(&route.name));
            let limits = &route.limits;
            let rate = (limits.handshake_rate_per_ip, limits.handshake_burst_per_ip);
            let route_metrics = metrics.route(&route.name);
            if route.messages.is_some() {
                route_metrics.show_rejections();
            }
            RouteEntry {
                metrics: route_metrics,
                per_ip: old
                    .filter(|old| {
                        let was = &old.route.limits;
                        (was.handshake_rate_per_ip, was.handshake_burst_per_ip) == rate
                    })
                    .map_or_else(
                        || Arc::new(PerIp::new(rate.0, rate.1)),
                        |old| old.per_ip.clone(),
                    ),
                subjects: old.map_or_else(
                    || Subjects::new(limits.max_connections_per_subject),
                    |old| {
                        old.subjects.set_max(limits.max_connections_per_subject);
                        old.subjects.clone()
                    },
                ),
                // The old rules stay in force until this state is (see `Current::apply`).
                rules: old.map_or_else(
                    || Arc::new(ArcSwapOption::new(route.messages.clone())),
                    |old| old.rules.clone(),
                ),
                route: route.clone(),
            }
        }));
        Ok(State {
            router,
            unrouted: metrics.route(""),
            tls,
            auth: Authenticator::new(stores),
            refreshers,
            config,
        })
    }

    /// Closes `session` (admitted under `previous`) if this state no longer admits it: 1001
    /// when its route is gone, 4003 when its policy refuses it. Returns the kick sent.
    fn verdict(&self, previous: &State, session: &Session) -> Option<Kick> {
        let kick = match self.admits(previous, session) {
            None => Kick::GOING_AWAY,
            Some(false) => Kick::REVOKED,
            Some(true) => return None,
        };
        session.kick(kick);
        Some(kick)
    }

    /// Would this state still admit `session`? (Same provider settings, Origin allowed,
    /// token lifetime and claims within the route's policy.)
    fn admits(&self, previous: &State, session: &Session) -> Option<bool> {
        let entry = self.router.get(&session.route)?;
        let old = previous.router.get(&session.route);
        let provider =
            |state: &State, route: &Route| state.config.providers.get(route.auth.provider).cloned();
        let same_provider =
            old.is_some_and(|old| provider(previous, &old.route) == provider(self, &entry.route));
        let mut headers = HeaderMap::new();
        if let Some(origin) = session
            .origin
            .as_deref()
            .and_then(|o| HeaderValue::from_str(o).ok())
        {
            headers.insert(header::ORIGIN, origin);
        }
        let origin_ok = origin::check(&entry.route.origins, &headers).is_ok();
        let policy_ok = auth::check_policy(&entry.route.auth, &session.principal()).is_ok();
        Some(same_provider && origin_ok && policy_ok)
    }
}

/// The configuration in force, and how it is replaced: reloads run here one at a time.
pub(crate) struct Current {
    state: ArcSwap<State>,
    /// The configuration file, for reloads.
    source: Option<PathBuf>,
    /// Reloads (SIGHUP, the file watch, the admin API) run one at a time: two built from the
    /// same old state would both start key stores for a new provider, and one would never stop.
    reloading: Mutex<()>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    draining: CancellationToken,
}

impl Current {
    pub(crate) fn new(
        state: State,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        draining: CancellationToken,
    ) -> Current {
        Current {
            state: ArcSwap::from_pointee(state),
            source: None,
            reloading: Mutex::default(),
            metrics,
            registry,
            draining,
        }
    }

    /// Remembers the file the configuration came from, so it can be reloaded.
    pub(crate) fn set_source(&mut self, path: PathBuf) {
        self.source = Some(path);
    }

    pub(crate) fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The state in force now.
    pub(crate) fn load(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// The state in force now, for a short look (no reference count is taken).
    pub(crate) fn peek(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// Re-reads the configuration file and applies it; on any problem the running
    /// configuration stays untouched.
    pub(crate) fn reload(&self) -> Result<Value, Vec<String>> {
        let Some(path) = &self.source else {
            return Err(vec![
                "wsgate was started without a configuration file".to_owned(),
            ]);
        };
        let result = crate::config::Config::load(path)
            .map_err(|error| match error {
                crate::config::Error::Invalid(problems) => {
                    problems.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            })
            .and_then(|config| self.apply(config).map_err(|e| vec![e.to_string()]));
        match &result {
            Ok(summary) => {
                self.metrics.config_reload("ok");
                info!(%summary, "configuration reloaded");
            }
            Err(problems) => {
                self.metrics.config_reload("error");
                for problem in problems {
                    error!(file = %path.display(), %problem, "reload refused; the running configuration stays");
                }
            }
        }
        result
    }

    /// Checks a session registered after a request judged by `judged` against the
    /// configuration in force now, if a reload replaced it meanwhile.
    pub(crate) fn recheck(&self, judged: &Arc<State>, session: &Session) {
        let now = self.load();
        if !Arc::ptr_eq(&now, judged) {
            now.verdict(judged, session);
        }
    }

    /// Swaps in `config` and closes the sessions it no longer admits.
    pub(crate) fn apply(&self, config: Config) -> Result<Value, Error> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.load();
        if config.listen.address != old.config.listen.address
            || config.admin.address != old.config.admin.address
        {
            warn!("listen.address and admin.address changes take effect only after a restart");
        }
        if config.cluster != old.config.cluster {
            warn!("cluster changes take effect only after a restart");
        }
        let new = Arc::new(State::build(
            config,
            &self.metrics,
            Some(&old),
            &self.draining,
        )?);
        self.state.store(new.clone());
        // Live sessions judge their next messages by the rules just compiled.
        for entry in new.router.iter() {
            entry.rules.store(entry.route.messages.clone());
        }
        // Providers the new state does not use stop refreshing.
        for (store, refresher) in old.auth.stores.iter().zip(&old.refreshers) {
            if !new.auth.stores.iter().any(|kept| Arc::ptr_eq(kept, store)) {
                refresher.cancel();
            }
        }
        let (mut removed, mut revoked) = (0, 0);
        for session in self.registry.sessions.list(None, None) {
            match new.verdict(&old, &session) {
                Some(Kick::GOING_AWAY) => removed += 1,
                Some(_) => revoked += 1,
                None => continue,
            }
        }
        Ok(json!({
            "routes": new.config.routes.len(),
            "providers": new.config.providers.len(),
            "closed_route_removed": removed,
            "closed_policy_changed": revoked,
        }))
    }
}
