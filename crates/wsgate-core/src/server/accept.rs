//! Admission at accept, before any TLS work: the address's place among connections not
//! upgraded yet, then a global connection permit (or one of the few 503 answers over the cap).
//! Then the connection's task is spawned.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::debug;

use crate::connection::{self, Admission};
use crate::peer;
use crate::ratelimit::Limit;
use crate::shared::Shared;

/// Takes the address's pre-upgrade place and a connection permit before any TLS work, then
/// spawns the connection's task.
pub(super) fn admit(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let pre_upgrade = {
        let state = shared.current.peek();
        let (listen, ip) = (&state.config.listen, peer::normal(peer.ip()));
        // A trusted proxy carries many clients: only `listen.max_connections` bounds it.
        if peer::trusted(ip, &state.config.trusted_proxies) {
            None
        } else {
            let key = peer::key(ip, listen.ipv6_prefix);
            match shared.pre_upgrade.acquire(key, listen.max_pending_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    state.unrouted.rate_limited(Limit::Pending);
                    return debug!(%peer, "over listen.max_pending_per_ip; closed unanswered");
                }
            }
        }
    };
    let permit = match shared.connections.clone().try_acquire_owned() {
        Ok(permit) => Admission::Admitted(permit),
        Err(_) => match shared.refusing.clone().try_acquire_owned() {
            Ok(permit) => Admission::OverCap(permit),
            Err(_) => {
                debug!(%peer, "over the connection cap; closed unanswered");
                return;
            }
        },
    };
    let shared = shared.clone();
    shared
        .tracker
        .clone()
        .spawn(connection::run(shared, tcp, peer, permit, pre_upgrade));
}
