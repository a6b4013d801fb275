//! `idle`: opens idle WSS sessions in steps (5,000 then 9,000 by default, 100 handshakes in
//! flight), lets the proxy settle, and reads its resident memory: KiB per session against the
//! process before the first session.

use std::time::Duration;

use anyhow::bail;

use crate::client::Client;
use crate::proc::Tree;
use crate::record::{Record, name};
use crate::sessions;

pub fn scenario(sessions: usize) -> String {
    format!("idle {sessions} sessions")
}

/// Emits one record per step of `steps` (cumulative session counts, ascending).
pub async fn run(
    client: &Client,
    steps: &[usize],
    in_flight: usize,
    settle: Duration,
    tree: Tree,
    label: &str,
    run: u32,
) -> anyhow::Result<()> {
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--sessions must be ascending");
    }
    let before = tree.rss_kib();
    let mut open = Vec::new();
    let mut errors = 0;
    for &step in steps {
        let missing = step.saturating_sub(open.len());
        let (new, failures) = sessions::open_many(client, missing, in_flight).await;
        if let Some(first) = failures.first() {
            eprintln!(
                "idle: {} of {missing} sessions failed (first: {first})",
                failures.len()
            );
        }
        errors += failures.len() as u64;
        open.extend(new);
        tokio::time::sleep(settle).await;
        let now = tree.rss_kib();
        let per_session =
            (!open.is_empty()).then(|| now.saturating_sub(before) as f64 / open.len() as f64);
        let mut record = Record::new(label, run, scenario(step));
        record.errors = errors;
        record
            .metric(name::RSS_BEFORE, Some(before as f64))
            .metric(name::KIB_PER_SESSION, per_session);
        record.emit();
    }
    // Dropped without a closing handshake: thousands of polite closes would only slow the run.
    drop(open);
    Ok(())
}
