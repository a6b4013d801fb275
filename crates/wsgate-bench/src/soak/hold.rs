//! `hold`: opens many idle sessions (a bounded number of handshakes in flight), reports
//! `ready`, keeps them alive (answering pings) until SIGUSR1 or `--max-hold`, then closes
//! them all politely and reports `done`, with any session that ended on its own while held.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::raw::{Session, park};
use super::{Go, Tally, bump, code_key, emit};
use crate::client::Client;

pub async fn run(
    client: &Client,
    count: usize,
    in_flight: usize,
    max_hold: Duration,
    mut go: Go,
) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    let results: Vec<_> = futures_util::stream::iter(0..count)
        .map(|_| Session::open(client))
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut open = Vec::with_capacity(count);
    for result in results {
        match result {
            Ok(session) => open.push(session),
            Err(failure) => tally.open_failed(&failure),
        }
    }
    tally.opened = open.len() as u64;
    emit("ready", &tally, serde_json::json!({ "live": open.len() }));

    let (tell, told) = watch::channel(false);
    let held: Vec<_> = open
        .into_iter()
        .map(|session| tokio::spawn(park(session, told.clone())))
        .collect();
    go.wait(max_hold).await;
    tell.send_replace(true);
    for ending in futures_util::future::join_all(held).await {
        match ending? {
            Ok(()) => tally.closed += 1,
            Err(code) => bump(&mut tally.ended_early, code_key(code)),
        }
    }
    emit("done", &tally, serde_json::json!({}));
    Ok(())
}
