//! The live session: two pumps, client -> backend ("up") and backend -> client ("down"), in
//! the connection's own task, plus the session's timers as branches of the same `select!`
//! (tokio's timer wheel; no task per session just to sleep).
//!
//! - Data messages are relayed (fragments are re-assembled, as RFC 6455 section 5.4 lets an
//!   intermediary do). Close frames are relayed with their code and reason.
//! - Pings are hop by hop: tungstenite answers the client's pings, and the proxy pings the
//!   client every `ping_interval`; no pong within `pong_timeout` ends the session (1001).
//! - Client messages are metered (`message_rate`, `byte_rate`): over the limit the session is
//!   closed with 1008 or the message dropped, as `on_limit` says.
//! - No data frame either way for `idle` closes both sides with 1001 `idle timeout`.
//! - Writes are batched, one flush per burst of ready messages. A slow reader back-pressures
//!   its pump (the backend is read no faster than the client drains); a client that accepts
//!   nothing for `pong_timeout` is closed with 1008.
//! - A backend that vanishes gives the client 1014; a client that vanishes gives the backend
//!   1001; a token that expires gives the client 4001.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::config::{OnLimit, Timeouts};
use crate::metrics::RouteMetrics;
use crate::ratelimit::MessageLimits;
use crate::registry::Kick;

/// How long the other side gets to finish the closing handshake once the session ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client that stopped reading gets to take its close frame.
const STALLED_CLOSE: Duration = Duration::from_millis(200);
/// Batch writes up to this much before writing to the socket.
const WRITE_BATCH: usize = 16 * 1024;
/// tungstenite's read buffer is allocated eagerly per connection (default 128 KiB) and zero-filled
/// on every read: 4 KiB keeps an idle session at about 25 KiB (measured: 32.7 KiB with 8 KiB).
const READ_BUFFER: usize = 4 * 1024;

/// The close code recorded when a peer vanished without a close frame (never sent on the wire).
pub const ABNORMAL: u16 = 1006;

/// tungstenite settings for either leg of a route's sessions.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BATCH)
        // The write buffer only grows past the batch size while the peer is not reading; one
        // whole message must still fit.
        .max_write_buffer_size(WRITE_BATCH + max_message_size + 14)
        .max_message_size(Some(max_message_size))
        // A frame header declaring more than this is refused before its payload is read.
        .max_frame_size(Some(max_message_size))
}

/// What governs one session besides its two sockets.
pub struct Policy {
    /// Client-to-backend rates.
    pub limits: MessageLimits,
    pub timeouts: Timeouts,
    /// When the token expires (`None` with `on_expiry: ignore`).
    pub expires: Option<Instant>,
    /// Set from outside (revocation, reload) to close the session.
    pub kicked: watch::Receiver<Option<Kick>>,
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

/// How one pump stopped.
enum End {
    /// Its source sent a close frame, which was forwarded.
    Closed(Option<CloseFrame>),
    /// Its source vanished or broke the protocol.
    SourceFailed(Option<WsError>),
    /// Its destination could not be written to.
    SinkFailed,
    /// The client went over a rate with `on_limit: close`.
    Limited,
    /// The client accepted no data for `pong_timeout`.
    Stalled,
    /// The client did not answer a ping within `pong_timeout`.
    PongTimeout,
}

enum First {
    Up(End),
    Down(End),
    Shutdown,
    Expired,
    Idle,
    Kicked(Kick),
}

/// Session-wide times, shared by the pumps (same task, so relaxed atomics suffice).
struct Clock {
    started: Instant,
    /// Milliseconds since `started` of the last data frame either way.
    activity: AtomicU64,
    /// Milliseconds since `started` of the last pong from the client.
    pong: AtomicU64,
}

impl Clock {
    fn ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.activity.store(self.ms(), Ordering::Relaxed);
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }
}

/// Relays until either side closes or a limit, timer or `shutdown` ends the session.
pub async fn run<C, B>(
    client: WebSocketStream<C>,
    backend: WebSocketStream<B>,
    metrics: &RouteMetrics,
    shutdown: &CancellationToken,
    policy: &Policy,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut backend_tx, mut backend_rx) = backend.split();
    let clock = Clock {
        started: Instant::now(),
        activity: AtomicU64::new(0),
        pong: AtomicU64::new(0),
    };
    let timeouts = &policy.timeouts;
    let mut up_traffic = Traffic::default();
    let mut down_traffic = Traffic::default();
    let mut dropped = 0;
    let first = {
        let up = pump(
            &mut client_rx,
            &mut backend_tx,
            Hooks {
                traffic: &mut up_traffic,
                metrics,
                up: true,
                clock: &clock,
                limits: Some((&policy.limits, &mut dropped)),
                keepalive: None,
            },
        );
        let down = pump(
            &mut backend_rx,
            &mut client_tx,
            Hooks {
                traffic: &mut down_traffic,
                metrics,
                up: false,
                clock: &clock,
                limits: None,
                keepalive: Some(timeouts),
            },
        );
        tokio::select! {
            end = up => First::Up(end),
            end = down => First::Down(end),
            () = shutdown.cancelled() => First::Shutdown,
            () = sleep_until_some(policy.expires) => First::Expired,
            () = idle(&clock, timeouts.idle) => First::Idle,
            kick = kicked(policy.kicked.clone()) => First::Kicked(kick),
        }
        // The other pump is dropped here; a message it was relaying is lost with the session.
    };
    let (code, by, reason) = describe(&first);
    // Finish the closing handshake, the healthy side first, all within one bounded wait.
    let wind_down = async {
        let away = || Some(close(CloseCode::Away, "going away"));
        match first {
            First::Up(End::Closed(_)) => {
                finish(&mut client_tx, None).await;
                drain(&mut backend_rx).await;
            }
            First::Up(End::SourceFailed(error)) => {
                finish(&mut backend_tx, away()).await;
                if let Some(reply) = error.as_ref().and_then(protocol_close) {
                    finish(&mut client_tx, Some(reply)).await;
                }
                drain(&mut backend_rx).await;
            }
            First::Up(End::SinkFailed) | First::Down(End::SourceFailed(_)) => {
                finish(
                    &mut client_tx,
                    Some(close(CloseCode::from(1014), "bad gateway")),
                )
                .await;
                drain(&mut client_rx).await;
            }
            First::Down(End::Closed(_)) => {
                finish(&mut backend_tx, None).await;
                drain(&mut client_rx).await;
            }
            First::Down(End::SinkFailed) => {
                finish(&mut backend_tx, away()).await;
                drain(&mut backend_rx).await;
            }
            First::Down(End::Stalled) => {
                // The client is not reading: its close frame gets one short try.
                finish(&mut backend_tx, away()).await;
                drain(&mut backend_rx).await;
                let last_word = finish(
                    &mut client_tx,
                    Some(close(CloseCode::Policy, "slow consumer")),
                );
                drop(tokio::time::timeout(STALLED_CLOSE, last_word).await);
            }
            First::Up(End::Limited) => {
                finish(&mut backend_tx, away()).await;
                finish(&mut client_tx, Some(close(CloseCode::Policy, "rate limit"))).await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            First::Expired => {
                finish(&mut backend_tx, away()).await;
                finish(
                    &mut client_tx,
                    Some(close(CloseCode::from(4001), "token expired")),
                )
                .await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            First::Idle | First::Down(End::PongTimeout) => {
                finish(&mut backend_tx, away()).await;
                finish(&mut client_tx, Some(close(CloseCode::Away, "idle timeout"))).await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            First::Kicked(kick) => {
                finish(&mut backend_tx, away()).await;
                finish(
                    &mut client_tx,
                    Some(close(CloseCode::from(kick.code), kick.reason)),
                )
                .await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            First::Shutdown => {
                finish(&mut client_tx, away()).await;
                finish(&mut backend_tx, away()).await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            // Pumps in the other direction never end this way.
            First::Up(End::Stalled | End::PongTimeout) | First::Down(End::Limited) => {}
        }
    };
    drop(tokio::time::timeout(CLOSE_TIMEOUT, wind_down).await);
    Outcome {
        code,
        by,
        reason,
        up: up_traffic,
        down: down_traffic,
        dropped,
    }
}

/// The close code the client saw, who ended the session, and why.
fn describe(first: &First) -> (u16, &'static str, &'static str) {
    match first {
        First::Up(End::Closed(frame)) => (code_of(frame), "client", "client closed"),
        First::Up(End::SourceFailed(error)) => match error.as_ref().and_then(protocol_close) {
            Some(reply) => (u16::from(reply.code), "client", "client protocol error"),
            None => (ABNORMAL, "client", "client vanished"),
        },
        First::Up(End::SinkFailed) | First::Down(End::SourceFailed(_)) => {
            (1014, "backend", "backend vanished")
        }
        First::Down(End::Closed(frame)) => (code_of(frame), "backend", "backend closed"),
        First::Down(End::SinkFailed) => (ABNORMAL, "client", "client vanished"),
        First::Down(End::Stalled) => (1008, "proxy", "slow consumer"),
        First::Down(End::PongTimeout) => (1001, "proxy", "no pong"),
        First::Up(End::Limited) => (1008, "proxy", "rate limit"),
        First::Idle => (1001, "proxy", "idle timeout"),
        First::Shutdown => (1001, "proxy", "shutting down"),
        First::Expired => (4001, "proxy", "token expired"),
        First::Kicked(kick) => (kick.code, "proxy", kick.reason),
        First::Up(End::Stalled | End::PongTimeout) | First::Down(End::Limited) => {
            (ABNORMAL, "proxy", "unexpected")
        }
    }
}

/// Completes at `deadline`, or never.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
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

/// Completes once no data frame has passed for `idle`.
async fn idle(clock: &Clock, idle: Duration) {
    loop {
        let deadline = clock.at(clock.activity.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// What a pump does besides moving messages.
struct Hooks<'a> {
    traffic: &'a mut Traffic,
    metrics: &'a RouteMetrics,
    up: bool,
    clock: &'a Clock,
    /// Client-to-backend: the rates, and the count of dropped messages.
    limits: Option<(&'a MessageLimits, &'a mut u64)>,
    /// Backend-to-client: pings, pong deadline and the write-stall bound.
    keepalive: Option<&'a Timeouts>,
}

impl Hooks<'_> {
    fn count(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        self.traffic.messages += 1;
        self.traffic.bytes += bytes;
        let (messages, total) = if self.up {
            (&self.metrics.messages_up, &self.metrics.bytes_up)
        } else {
            (&self.metrics.messages_down, &self.metrics.bytes_down)
        };
        messages.inc();
        total.inc_by(bytes);
        self.clock.touch();
    }
}

/// Sends on `sink`, bounded by `stall` when the peer must keep up.
async fn write<F>(stall: Option<Duration>, send: F) -> Result<(), End>
where
    F: Future<Output = Result<(), WsError>>,
{
    match stall {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SinkFailed),
            Err(_) => Err(End::Stalled),
        },
        None => send.await.map_err(|_| End::SinkFailed),
    }
}

/// Moves messages from `source` to `sink` until one of them ends or a hook stops it.
async fn pump<Src, Dst>(source: &mut Src, sink: &mut Dst, mut hooks: Hooks<'_>) -> End
where
    Src: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    Dst: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let stall = hooks.keepalive.map(|t| t.pong_timeout);
    let mut pings = hooks.keepalive.map(|t| {
        let mut interval =
            tokio::time::interval_at(Instant::now() + t.ping_interval, t.ping_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    // When the ping still waiting for its pong was sent (ms since the session started).
    let mut awaiting_pong: Option<u64> = None;
    let mut unflushed = false;
    loop {
        let item = if unflushed {
            // Keep batching while more messages are already waiting; flush once it runs dry.
            match source.next().now_or_never() {
                Some(item) => item,
                None => {
                    if let Err(end) = write(stall, sink.flush()).await {
                        return end;
                    }
                    unflushed = false;
                    continue;
                }
            }
        } else {
            let pong_due = awaiting_pong
                .zip(hooks.keepalive)
                .map(|(sent, t)| hooks.clock.at(sent) + t.pong_timeout);
            tokio::select! {
                item = source.next() => item,
                _ = tick(&mut pings) => {
                    if awaiting_pong.is_none() {
                        awaiting_pong = Some(hooks.clock.ms());
                        if let Err(end) = write(stall, sink.send(Message::Ping(Default::default()))).await {
                            return end;
                        }
                    }
                    continue;
                }
                () = sleep_until_some(pong_due) => {
                    let sent = awaiting_pong.take().unwrap_or_default();
                    if hooks.clock.pong.load(Ordering::Relaxed) < sent {
                        return End::PongTimeout;
                    }
                    continue;
                }
            }
        };
        let message = match item {
            Some(Ok(message)) => message,
            Some(Err(error)) => return End::SourceFailed(Some(error)),
            None => return End::SourceFailed(None),
        };
        match message {
            Message::Text(_) | Message::Binary(_) => {
                let len = message.len();
                if let Some((limits, dropped)) = &mut hooks.limits
                    && let Err(exceeded) = limits.admit(len)
                {
                    hooks.metrics.rate_limited(exceeded.kind());
                    match limits.on_limit {
                        OnLimit::Close => return End::Limited,
                        OnLimit::Drop => {
                            **dropped += 1;
                            continue;
                        }
                    }
                }
                hooks.count(len);
                if let Err(end) = write(stall, sink.feed(message)).await {
                    return end;
                }
                unflushed = true;
            }
            Message::Close(frame) => {
                // Best effort: the other side may already be gone.
                let _ = write(stall, sink.send(Message::Close(frame.clone()))).await;
                return End::Closed(frame);
            }
            // Only the up pump reads the client, whose pongs answer the down pump's pings.
            Message::Pong(_) if hooks.up => hooks
                .clock
                .pong
                .store(hooks.clock.ms().max(1), Ordering::Relaxed),
            // Answered hop by hop by tungstenite; never produced by reads.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The next ping tick, or never without keepalive.
async fn tick(pings: &mut Option<tokio::time::Interval>) {
    match pings {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends a close frame, or with `None` flushes the close reply tungstenite has queued.
async fn finish<Dst>(sink: &mut Dst, frame: Option<CloseFrame>)
where
    Dst: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    if let Some(frame) = frame {
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.flush().await;
}

/// Reads and discards until the peer's close arrives or the stream ends.
async fn drain<Src>(source: &mut Src)
where
    Src: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(Ok(message)) = source.next().await {
        if message.is_close() {
            // Reading once more sends tungstenite's queued reply, if any.
            let _ = source.next().now_or_never();
            break;
        }
    }
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

fn code_of(frame: &Option<CloseFrame>) -> u16 {
    frame.as_ref().map_or(1005, |f| u16::from(f.code))
}

/// The close a protocol error from a peer deserves (RFC 6455 section 7.4.1).
fn protocol_close(error: &WsError) -> Option<CloseFrame> {
    match error {
        WsError::Capacity(_) => Some(close(CloseCode::Size, "message too big")),
        WsError::Utf8(_) => Some(close(CloseCode::Invalid, "invalid UTF-8")),
        // A peer that just went away is not a protocol error worth a close frame.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(close(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}
