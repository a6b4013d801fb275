//! Opening many sessions at once with a bounded number of handshakes in flight.

use anyhow::bail;
use futures_util::StreamExt;
use tokio_tungstenite::WebSocketStream;

use crate::client::Client;
use crate::net::{OpenError, Stream};

/// Handshakes in flight while sessions are being opened.
pub const IN_FLIGHT: usize = 100;

/// Opens `count` sessions; `count` successes or the first failure.
pub async fn open_all(
    client: &Client,
    count: usize,
) -> anyhow::Result<Vec<WebSocketStream<Stream>>> {
    let (open, failures) = open_many(client, count, IN_FLIGHT).await;
    if let Some(failure) = failures.first() {
        bail!(
            "{} of {count} connections could not be opened (first: {failure})",
            failures.len()
        );
    }
    Ok(open)
}

/// Opens up to `count` sessions, `in_flight` at a time; the sessions and the failures.
pub async fn open_many(
    client: &Client,
    count: usize,
    in_flight: usize,
) -> (Vec<WebSocketStream<Stream>>, Vec<OpenError>) {
    let results: Vec<_> = futures_util::stream::iter(0..count)
        .map(|_| client.open())
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut open = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(ws) => open.push(ws),
            Err(error) => failures.push(error),
        }
    }
    (open, failures)
}
