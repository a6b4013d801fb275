//! `bounce`: N echo loops (one binary message in flight each) that survive faults: when the
//! proxy closes a session (1014 when the backend vanished) the loop counts the close code and
//! reconnects, pausing after each refused upgrade (502 while the backend is down). After
//! `--duration` every loop keeps (or gets back, within `--settle`) one live session; the
//! command reports `ready` with the live count, holds the sessions until SIGUSR1 or
//! `--max-hold`, closes them and reports `done`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::raw::{Read, Session, park};
use super::{Go, Tally, bump, code_key, emit};
use crate::client::Client;

/// A round trip slower than this ends the session (counted as `timeout`).
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);
/// The close code the proxy sends when the backend vanished (docs/contract.md section 3).
const BAD_GATEWAY: u16 = 1014;
const BINARY: u8 = 0x2;

pub struct Params {
    pub conns: usize,
    pub size: usize,
    pub duration: Duration,
    /// After the duration, how long a loop may still try to get a live session.
    pub settle: Duration,
    /// Pause after a refused or failed upgrade.
    pub retry_pause: Duration,
    pub max_hold: Duration,
}

pub async fn run(client: Arc<Client>, params: Params, mut go: Go) -> anyhow::Result<()> {
    let end = Instant::now() + params.duration;
    let give_up = end + params.settle;
    let payload: Arc<[u8]> = vec![0x5a; params.size].into();
    let (parked_tx, mut parked_rx) = mpsc::channel(params.conns.max(1));
    let (tell, told) = watch::channel(false);
    let loops: Vec<_> = (0..params.conns)
        .map(|_| {
            let job = Loop {
                client: client.clone(),
                payload: payload.clone(),
                end,
                give_up,
                retry_pause: params.retry_pause,
                parked: parked_tx.clone(),
                go: told.clone(),
            };
            tokio::spawn(job.run())
        })
        .collect();
    drop(parked_tx);
    // Each loop reports once, then keeps its sender until it is told to close.
    let mut live = 0;
    for _ in 0..params.conns {
        match parked_rx.recv().await {
            Some(has_session) => live += usize::from(has_session),
            None => break,
        }
    }
    emit(
        "ready",
        &Tally::default(),
        serde_json::json!({ "live": live, "conns": params.conns }),
    );
    go.wait(params.max_hold).await;
    tell.send_replace(true);
    let mut tally = Tally::default();
    for result in futures_util::future::join_all(loops).await {
        tally.merge(result?);
    }
    emit(
        "done",
        &tally,
        serde_json::json!({ "live": live, "conns": params.conns }),
    );
    Ok(())
}

/// One connection's life: echo, reconnect after a close, and at the end hold a session.
struct Loop {
    client: Arc<Client>,
    payload: Arc<[u8]>,
    end: Instant,
    give_up: Instant,
    retry_pause: Duration,
    /// Told once: whether this loop holds a live session after the duration.
    parked: mpsc::Sender<bool>,
    go: watch::Receiver<bool>,
}

impl Loop {
    async fn run(self) -> Tally {
        let mut tally = Tally::default();
        let mut cut = false; // the last session ended with 1014
        let session = loop {
            if Instant::now() >= self.give_up {
                break None;
            }
            let mut session = match Session::open(&self.client).await {
                Ok(session) => session,
                Err(error) => {
                    tally.open_failed(&error);
                    tokio::time::sleep(self.retry_pause).await;
                    continue;
                }
            };
            tally.opened += 1;
            match self.echo(&mut session, &mut tally, &mut cut).await {
                // The duration is over and the session is alive: keep it.
                None => break Some(session),
                Some(code) => {
                    bump(&mut tally.closes, code_key(code));
                    cut = code == Some(BAD_GATEWAY);
                }
            }
        };
        // The receiver lives until every loop has reported; a failed send cannot happen.
        let _ = self.parked.send(session.is_some()).await;
        if let Some(session) = session {
            match park(session, self.go.clone()).await {
                Ok(()) => tally.closed += 1,
                Err(code) => bump(&mut tally.ended_early, code_key(code)),
            }
        }
        tally
    }

    /// Echo round trips until the duration ends (`None`: the session is still open) or the
    /// session ends (`Some(close code)`).
    async fn echo(
        &self,
        session: &mut Session,
        tally: &mut Tally,
        cut: &mut bool,
    ) -> Option<Option<u16>> {
        while Instant::now() < self.end {
            if session.send(BINARY, &self.payload).await.is_err() {
                // The proxy may have closed already: its close frame can still be read.
                return Some(closed_code(session).await);
            }
            match tokio::time::timeout(ROUND_TRIP_TIMEOUT, session.read()).await {
                Ok(Read::Data(len)) if len == self.payload.len() => {
                    tally.round_trips += 1;
                    if std::mem::take(cut) {
                        tally.recovered += 1;
                    }
                }
                Ok(Read::Data(_)) => {
                    tally
                        .first_error
                        .get_or_insert("echo of the wrong length".into());
                    return Some(None);
                }
                Ok(Read::Closed(code)) => return Some(code),
                Err(_) => {
                    tally
                        .first_error
                        .get_or_insert("round trip timed out".into());
                    return Some(None);
                }
            }
        }
        None
    }
}

/// The close code after a failed send, if the proxy's close frame arrived (bounded).
async fn closed_code(session: &mut Session) -> Option<u16> {
    loop {
        match tokio::time::timeout(ROUND_TRIP_TIMEOUT, session.read()).await {
            Ok(Read::Data(_)) => {}
            Ok(Read::Closed(code)) => return code,
            Err(_) => return None,
        }
    }
}
