//! The process: binding the listeners, the accept loop, the admin listener, the file watch,
//! and graceful shutdown. Each accepted connection becomes one task ([`crate::connection`]).
//!
//! - [`accept`]: the per-address and global caps, taken before any TLS work.
//! - `admin`: `/metrics`, `/healthz`, `/readyz` and the `/admin/*` API.
//! - `watch`: reloads when the configuration or certificate files change.

mod accept;
mod admin;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cluster::Fleet;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::PreUpgrade;
use crate::registry::Registry;
use crate::relay::busy;
use crate::shared::Shared;
use crate::state::{self, Current, State};

/// Connections over `listen.max_connections` still get a 503 while this few are being
/// refused at once; past that they are closed unanswered so refusing stays cheap.
const MAX_REFUSING: usize = 64;
/// Pause after a failed accept (such as EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest a stopping server waits to leave the fleet.
const FLEET_GOODBYE: Duration = Duration::from_secs(1);
/// How often per-IP limiter state is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the {what} listener on {address}: {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::Error),
    #[error("cluster.redis: {0}")]
    Cluster(redis::RedisError),
}

pub use crate::state::RouteEntry;

/// Reloads the configuration of a running server (SIGHUP, the admin API).
#[derive(Clone)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Re-reads the configuration file; on error the running configuration stays and every
    /// problem is returned.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        self.0.current.reload().map(drop)
    }

    /// The configuration generation in force now, without keeping it alive (for tests that
    /// check what a reload lets go of).
    #[doc(hidden)]
    pub fn generation(&self) -> Generation {
        Generation(Arc::downgrade(&self.0.state()))
    }
}

/// A configuration generation, observed without being held: see [`Reloader::generation`].
#[doc(hidden)]
pub struct Generation(std::sync::Weak<State>);

impl Generation {
    /// Something (a connection, a session) still holds this generation.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The proxy, bound and ready to run.
pub struct Server {
    shared: Arc<Shared>,
    /// Reload when the configuration or certificate files change.
    watch: bool,
    listener: TcpListener,
    admin: TcpListener,
}

/// Connections the kernel may queue before they are accepted: a reconnect storm after a
/// restart or a burst while descriptors run out waits here instead of retrying SYNs
/// (the standard library's 128 is small for a proxy; Linux caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Binds the public and admin listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let bind = |what, address| {
            listen(address).map_err(|source| Error::Bind {
                what,
                address,
                source,
            })
        };
        let listener = bind("public", config.listen.address)?;
        let admin = bind("admin", config.admin.address)?;
        let cluster = config.cluster.clone();
        let metrics = Arc::new(match cluster {
            Some(_) => Metrics::with_cluster(),
            None => Metrics::new(),
        });
        let draining = CancellationToken::new();
        let connections = Arc::new(Semaphore::new(config.listen.max_connections));
        let state = State::build(config, &metrics, None, &draining)?;
        let instance = cluster.as_ref().map(|c| c.instance.as_str());
        let registry = Arc::new(Registry::new(instance));
        let fleet = match cluster {
            Some(cluster) => Some(
                Fleet::new(cluster, registry.clone(), metrics.clone()).map_err(Error::Cluster)?,
            ),
            None => None,
        };
        let shared = Shared {
            current: Current::new(state, metrics.clone(), registry.clone(), draining.clone()),
            connections,
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            pre_upgrade: Arc::<PreUpgrade>::default(),
            metrics,
            draining,
            tracker: TaskTracker::new(),
            registry,
            // The runtime the server is bound on is the one it runs on.
            relaying: busy::Relaying::new(
                tokio::runtime::Handle::current().metrics().num_workers(),
            ),
            fleet,
        };
        Ok(Server {
            shared: Arc::new(shared),
            watch: false,
            listener,
            admin,
        })
    }

    /// Remembers the file the configuration came from, so it can be reloaded.
    pub fn with_source(mut self, path: PathBuf) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.current.set_source(path);
        }
        self
    }

    /// Also reload when the configuration file or the certificate files change.
    pub fn watching(mut self) -> Server {
        self.watch = true;
        self
    }

    /// The metrics this server records (what `/metrics` exposes).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader(self.shared.clone())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` completes, then drains: new upgrades get 503, sessions are
    /// closed with 1001, and the wait is bounded by `listen.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Server {
            shared,
            watch,
            listener,
            admin,
        } = self;
        if watch {
            tokio::spawn(watch::run(shared.clone()));
        }
        info!(
            address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            admin = %admin.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            routes = shared.state().config.routes.len(),
            "wsgate listening"
        );
        // The fleet's renewals stop with this future, cleanly or not: a server dropped without
        // its shutdown stops counting for the fleet when its lease ends, as a killed one does.
        let _fleet_stops = shared.fleet.as_ref().map(|fleet| {
            fleet.start();
            fleet.stop.clone().drop_guard()
        });
        let admin_task = tokio::spawn(admin::serve(admin, shared.clone()));
        tokio::spawn(prune(shared.clone()));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => accept::admit(&shared, tcp, peer),
                    Err(error) => {
                        warn!(%error, "accept failed; backing off");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        shared.draining.cancel();
        shared.tracker.close();
        let grace = shared.state().config.listen.shutdown_grace;
        info!(connections = shared.tracker.len(), ?grace, "draining");
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                connections = shared.tracker.len(),
                "shutdown grace ran out; closing the rest"
            );
        }
        // Saying goodbye to the fleet is a courtesy: a Redis that hangs must not hold the exit
        // (the lease ends the instance's count anyway).
        if let Some(fleet) = &shared.fleet
            && tokio::time::timeout(FLEET_GOODBYE, fleet.leave())
                .await
                .is_err()
        {
            warn!("fleet state: Redis did not take the goodbye in time; the lease will end it");
        }
        admin_task.abort();
    }
}

/// Forgets per-IP limiter state that has recovered, so memory stays bounded by the
/// addresses active within the last burst window.
async fn prune(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shared.draining.cancelled() => return,
        }
        for entry in shared.state().router.iter() {
            entry.per_ip.prune();
        }
    }
}
