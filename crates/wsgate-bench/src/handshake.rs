//! `handshake`: parallel loops of TCP connect + full TLS 1.3 handshake (no resumption) +
//! upgrade with a fresh token and an Origin + 101 + close. Reports new connections per second,
//! time to 101 (from the TCP connect) and the proxy's CPU time per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{self, Client};
use crate::proc::{self, Tree};
use crate::record::{Record, Samples, name};
use crate::window::{self, Plan, Window};

/// Upper bound of a counted run (instruction counting under valgrind is slow).
const COUNT_BOUND: Duration = Duration::from_secs(900);
/// After a failed attempt a loop waits this long, so a refusing target is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

pub fn scenario(parallel: usize) -> String {
    format!("handshake x {parallel}")
}

pub async fn run(
    client: Arc<Client>,
    parallel: usize,
    plan: Plan,
    tree: Option<Tree>,
    record: Record,
) -> anyhow::Result<Record> {
    let mut record = record;
    let window = Window::new(plan, COUNT_BOUND);
    let loops = (0..parallel).map(|i| {
        let quota = window::share(plan, i as u64, parallel as u64);
        tokio::spawn(connect_loop(client.clone(), window, quota))
    });
    let work = futures_util::future::join_all(loops);
    let (results, cpu) = window::measure(tree, window, work).await;

    let samples = Samples::gather(results, &mut record.errors)?;
    let count = samples.len();
    let seconds = match plan {
        Plan::Timed { .. } => window.seconds(),
        Plan::Count(_) => 1.0,
    };
    let sorted = samples.finish();
    record
        .metric(name::CONNECTIONS, Some(count as f64 / seconds))
        .metric(name::T101_P50, sorted.percentile_us(50.0))
        .metric(name::T101_P99, sorted.percentile_us(99.0))
        .metric(name::CPU_PER_CONNECTION, proc::per_op(cpu, count));
    Ok(record)
}

/// Connects, upgrades, closes, repeats; time-to-101 samples of the connections that began and
/// finished (closed) inside the window, and the failures.
async fn connect_loop(client: Arc<Client>, window: Window, quota: Option<u64>) -> (Samples, u64) {
    let mut samples = Samples::default();
    let mut errors = 0;
    let mut done = 0;
    loop {
        // The token is taken before the clock starts: minting is the client's cost.
        let upgrade = client.upgrade().await;
        let started = Instant::now();
        let finished = match quota {
            Some(quota) => done >= quota || started >= window.end,
            None => started >= window.end,
        };
        if finished {
            break;
        }
        match client.open_with(&upgrade).await {
            Ok(ws) => {
                let upgraded = Instant::now();
                client::close(ws).await;
                if window.contains(started, Instant::now()) {
                    samples.push(upgraded - started);
                }
            }
            Err(error) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("handshake: {error}");
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
        // Counted runs count attempts, so a failing target cannot loop until the bound.
        done += 1;
    }
    (samples, errors)
}
