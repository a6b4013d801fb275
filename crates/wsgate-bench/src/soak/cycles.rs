//! `cycles`: parallel loops of connect + TLS + upgrade (fresh token) + polite close, either
//! exactly `--count` attempts or for `--duration`; every outcome is counted (the handshake
//! benchmark only keeps timings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Tally;
use crate::client::{self, Client};

/// After a failed attempt a loop waits this long, so a refusing proxy is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How many attempts: a fixed count (shared by the loops) or until a deadline.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    Count(u64),
    Until(Instant),
}

pub async fn run(client: Arc<Client>, parallel: usize, amount: Amount) -> anyhow::Result<Tally> {
    let started = Arc::new(AtomicU64::new(0));
    let loops = (0..parallel.max(1)).map(|_| {
        let (client, started) = (client.clone(), started.clone());
        tokio::spawn(cycle_loop(client, started, amount))
    });
    let mut tally = Tally::default();
    for result in futures_util::future::join_all(loops).await {
        tally.merge(result?);
    }
    Ok(tally)
}

async fn cycle_loop(client: Arc<Client>, started: Arc<AtomicU64>, amount: Amount) -> Tally {
    let mut tally = Tally::default();
    loop {
        let more = match amount {
            Amount::Count(count) => started.fetch_add(1, Ordering::Relaxed) < count,
            Amount::Until(deadline) => Instant::now() < deadline,
        };
        if !more {
            break;
        }
        match client.open().await {
            Ok(ws) => {
                tally.opened += 1;
                if client::close(ws).await {
                    tally.closed += 1;
                }
            }
            Err(error) => {
                tally.open_failed(&error);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    tally
}
