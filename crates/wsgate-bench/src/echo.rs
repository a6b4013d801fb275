//! `echo`: N connections, each a closed loop with one binary message in flight (or, with
//! `--json`, a JSON text message of the same size, for routes with message rules). Reports
//! round trips per second, the exact RTT p50/p99 over every sample in the window, and the
//! proxy's CPU time per round trip.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::client::{self, Client};
use crate::net::Stream;
use crate::proc::{self, Tree};
use crate::record::{Record, Samples, name};
use crate::sessions;
use crate::window::{self, Plan, Window};

/// One round trip that takes longer than this is an error (the loop stops).
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of a counted run (instruction counting under valgrind is slow).
const COUNT_BOUND: Duration = Duration::from_secs(900);

pub struct Params {
    pub conns: usize,
    pub size: usize,
    /// Text messages holding one JSON object instead of binary ones.
    pub json: bool,
    pub plan: Plan,
}

pub fn scenario(conns: usize, size: usize, json: bool) -> String {
    let size = if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    let kind = if json { "json " } else { "" };
    format!("echo {kind}{size} x {conns}")
}

/// A chat message `{"type":"say","room":"lobby","text":"..."}` of exactly `size` bytes (at
/// least its shape's length), as `examples/schemas/chat.json` accepts when under 2,000
/// characters of text.
pub fn json_message(size: usize) -> String {
    let head = r#"{"type":"say","room":"lobby","text":""#;
    let tail = r#""}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

pub async fn run(
    client: Arc<Client>,
    params: Params,
    tree: Option<Tree>,
    record: Record,
) -> anyhow::Result<Record> {
    let mut record = record;
    let sockets = sessions::open_all(&client, params.conns).await?;
    let payload = if params.json {
        Message::text(json_message(params.size))
    } else {
        Message::Binary(Bytes::from(vec![0x5a; params.size]))
    };
    let window = Window::new(params.plan, COUNT_BOUND);
    let loops = sockets.into_iter().enumerate().map(|(i, ws)| {
        let quota = window::share(params.plan, i as u64, params.conns as u64);
        tokio::spawn(echo_loop(ws, payload.clone(), window, quota))
    });
    let work = futures_util::future::join_all(loops);
    let (results, cpu) = window::measure(tree, window, work).await;

    let samples = Samples::gather(results, &mut record.errors)?;
    let count = samples.len();
    let sorted = samples.finish();
    record
        .metric(
            name::ROUND_TRIPS,
            Some(count as f64 / window_seconds(window, params.plan)),
        )
        .metric(name::RTT_P50, sorted.percentile_us(50.0))
        .metric(name::RTT_P99, sorted.percentile_us(99.0))
        .metric(name::CPU_PER_ROUND_TRIP, proc::per_op(cpu, count));
    Ok(record)
}

/// The window's length; a counted run has none (its rate is not meaningful), so report 1 s.
fn window_seconds(window: Window, plan: Plan) -> f64 {
    match plan {
        Plan::Timed { .. } => window.seconds(),
        Plan::Count(_) => 1.0,
    }
}

/// Sends, waits for the echo, repeats; returns the samples in the window and the errors.
async fn echo_loop(
    mut ws: WebSocketStream<Stream>,
    payload: Message,
    window: Window,
    quota: Option<u64>,
) -> (Samples, u64) {
    let mut samples = Samples::default();
    let mut errors = 0;
    let mut done = 0;
    let expected = payload.len();
    loop {
        let sent = Instant::now();
        let finished = match quota {
            Some(quota) => done >= quota || sent >= window.end,
            None => sent >= window.end,
        };
        if finished {
            break;
        }
        if ws.send(payload.clone()).await.is_err() {
            errors += 1;
            break;
        }
        match tokio::time::timeout(ROUND_TRIP_TIMEOUT, client::next_data(&mut ws)).await {
            Ok(Some(len)) if len == expected => {}
            _ => {
                errors += 1;
                break;
            }
        }
        let received = Instant::now();
        done += 1;
        if window.contains(sent, received) {
            samples.push(received - sent);
        }
    }
    client::close(ws).await;
    (samples, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_message_has_the_size_asked_for() {
        for size in [64, 1024, 16384] {
            let message = json_message(size);
            assert_eq!(message.len(), size);
            let value: serde_json::Value = serde_json::from_str(&message).expect("JSON");
            assert_eq!(value["type"], "say");
        }
    }
}
