//! The live session: two pumps, client -> backend ("up") and backend -> client ("down"),
//! polled by the connection's own task together with the session's one timer.
//!
//! - Frames are forwarded as bytes: a header is checked ([`frame::Reader`]), then its payload
//!   moves through without re-assembly, unmasking or re-masking (a client's masked frame is as
//!   valid for the backend). Client text is checked for UTF-8 as it passes; nothing invalid is
//!   forwarded. Control frames pass end to end, so the backend answers the client's pings and
//!   the close handshake is the peers' own.
//! - The proxy pings the client every `ping_interval` (payload `wsgate`, whose pong it keeps);
//!   no pong within `pong_timeout` ends the session (1001). While the backend takes nothing
//!   from the client, the client's pong may wait behind its data: the pong deadline and
//!   `idle` are paused then (the pings go on), and start again when the backend reads.
//! - Client messages are metered (`message_rate`, `byte_rate`): over the limit the session is
//!   closed with 1008 or the message dropped, as `on_limit` says (a message is judged by its
//!   first frame; a later fragment over the byte budget closes, as it cannot be withdrawn).
//!   A client ping or pong is metered as a message of its own (except the pong to the proxy's
//!   keepalive ping); close frames are not.
//! - No data frame either way for `idle` closes both sides with 1001 `idle timeout`.
//! - Each direction reads into a small buffer inside the task and moves to a 16 KiB one only
//!   while data streams, so an idle session holds no buffer of its own. What one read brings
//!   is written with one write, flushed when the source runs dry. A slow reader
//!   back-pressures its pump; a client that accepts nothing for `pong_timeout` is closed (1008).
//! - Frames of the proxy's own (pings, closes) are written only between frames.
//! - While fewer sessions relay than the runtime has worker threads, a session that just moved
//!   data keeps polling, and reading its sockets itself, for `listen.busy_poll` before its
//!   thread sleeps ([`busy`]). A busy proxy never spins.
//! - A backend that vanishes gives the client 1014; a client that vanishes gives the backend
//!   1001; a token that expires gives the client 4001.
//! - A peer whose stream was left mid-frame (a frame found invalid after its header went out,
//!   or its source gone mid-frame) can be sent no close frame, so none is awaited from it:
//!   the other peer gets its close at once and the session ends, ending both connections.

pub(crate) mod busy;
pub mod frame;
mod outside;
mod own;
mod pump;
mod session;
mod state;
mod utf8;
mod violation;

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::busy::{ReadNow, Relaying};
use self::session::Session;
use crate::config::Timeouts;
use crate::metrics::RouteMetrics;
use crate::ratelimit::MessageLimits;
use crate::registry::Kick;

/// The payload of the proxy's pings; the client's pong with it goes no further.
const KEEPALIVE: &[u8] = b"wsgate";

/// The close code recorded when a peer vanished without a close frame (never sent on the wire).
pub const ABNORMAL: u16 = 1006;

/// What governs one session besides its two sockets.
pub struct Policy {
    /// Client-to-backend rates.
    pub limits: MessageLimits,
    pub timeouts: Timeouts,
    /// The largest message either way.
    pub max_message_size: usize,
    /// When the token expires (`None` with `on_expiry: ignore`).
    pub expires: Option<Instant>,
    /// Set from outside (revocation, reload) to close the session.
    pub kicked: watch::Receiver<Option<Kick>>,
    /// `listen.busy_poll` (zero: never).
    pub busy_poll: Duration,
}

/// How a session ended, for the access log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The close code the client received or sent (1006 when it vanished).
    pub code: u16,
    /// Who ended the session: `client`, `backend` or `proxy`.
    pub by: &'static str,
    pub reason: &'static str,
    pub up: Traffic,
    pub down: Traffic,
    /// Client messages dropped by `on_limit: drop`.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

/// Relays until either side closes or a limit, timer or `shutdown` ends the session.
/// With each stream come the bytes its peer sent before the relay took over; they are copied
/// and the buffer holding them (hyper's whole read buffer) is let go at once.
pub(crate) async fn run<C, B>(
    client: (C, Bytes),
    backend: (B, Bytes),
    metrics: &RouteMetrics,
    shutdown: &CancellationToken,
    policy: &Policy,
    relaying: &Relaying,
) -> Outcome
where
    C: ReadNow,
    B: ReadNow,
{
    let mut session = Session::new(
        client.0, &client.1, backend.0, &backend.1, metrics, policy, relaying,
    );
    let entered = relaying.enter();
    drop((client.1, backend.1));
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    let mut kick = std::pin::pin!(kicked(policy.kicked.clone()));
    std::future::poll_fn(|cx| session.poll(cx, cancelled.as_mut(), kick.as_mut())).await;
    session.report();
    drop(entered);
    // The closing handshake is done (or timed out): end both connections.
    let (mut client, mut backend, outcome) = session.end();
    let goodbye = async {
        let _ = tokio::join!(client.shutdown(), backend.shutdown());
    };
    drop(tokio::time::timeout(Duration::from_secs(1), goodbye).await);
    outcome
}

/// Completes when the session is kicked from outside.
async fn kicked(mut receiver: watch::Receiver<Option<Kick>>) -> Kick {
    loop {
        if let Some(kick) = *receiver.borrow_and_update() {
            return kick;
        }
        if receiver.changed().await.is_err() {
            // The registry is gone: nobody can kick any more.
            return std::future::pending().await;
        }
    }
}
