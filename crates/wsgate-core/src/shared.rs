//! What every task of the process shares: the configuration in force, the metrics, the live
//! sessions and revocations, the drain signal, and the accept path's permits. Built once by
//! [`crate::server::Server::bind`]; the accept loop, each connection, the admin listener and
//! the file watch hold it.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Fleet;
use crate::metrics::Metrics;
use crate::ratelimit::PreUpgrade;
use crate::registry::Registry;
use crate::relay::busy;
use crate::state::{Current, State};

pub(crate) struct Shared {
    /// The configuration in force, and its reload.
    pub(crate) current: Current,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Registry>,
    /// Cancelled when the drain starts.
    pub(crate) draining: CancellationToken,
    /// Every connection task, so the drain can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Sized from `listen.max_connections` at start (a reload does not resize it).
    pub(crate) connections: Arc<Semaphore>,
    /// Connections over the cap still answered with 503 (a few at a time).
    pub(crate) refusing: Arc<Semaphore>,
    /// Connections per client address not upgraded yet (`listen.max_pending_per_ip`); the
    /// counts carry over reloads.
    pub(crate) pre_upgrade: Arc<PreUpgrade>,
    /// The sessions relaying now (busy polling is for a nearly idle proxy).
    pub(crate) relaying: busy::Relaying,
    /// The fleet this instance shares state with (`cluster`); `None`: local state only.
    pub(crate) fleet: Option<Arc<Fleet>>,
}

impl Shared {
    /// The configuration in force now.
    pub(crate) fn state(&self) -> Arc<State> {
        self.current.load()
    }
}
