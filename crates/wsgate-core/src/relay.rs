//! The live session: two pumps, client -> backend and backend -> client, in the connection's
//! own task. Data messages are relayed (fragments are re-assembled, as RFC 6455 section 5.4
//! lets an intermediary do); pings are answered on each hop by tungstenite and not forwarded;
//! close frames are relayed with their code and reason. A peer that vanishes without a close
//! frame is reported to the other side: 1014 to the client when the backend drops, 1001 to
//! the backend when the client drops. Writes are batched: one flush per burst of ready
//! messages, and a slow reader back-pressures its pump instead of growing a buffer.

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::metrics::RouteMetrics;

/// How long the other side gets to finish the closing handshake once one side has closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Batch writes up to this much before writing to the socket.
const WRITE_BATCH: usize = 16 * 1024;
/// tungstenite's read buffer is allocated eagerly per connection; its default is 128 KiB.
const READ_BUFFER: usize = 8 * 1024;

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
        .max_frame_size(Some(max_message_size))
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
}

/// Relays until either side closes, `shutdown` fires (both get 1001), or the token expires
/// at `expires` (the client gets 4001, the backend 1001).
pub async fn run<C, B>(
    client: WebSocketStream<C>,
    backend: WebSocketStream<B>,
    metrics: &RouteMetrics,
    shutdown: &CancellationToken,
    expires: Option<tokio::time::Instant>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut backend_tx, mut backend_rx) = backend.split();
    let mut up_traffic = Traffic::default();
    let mut down_traffic = Traffic::default();
    let first = {
        let up = pump(
            &mut client_rx,
            &mut backend_tx,
            &mut up_traffic,
            Direction::Up(metrics),
        );
        let down = pump(
            &mut backend_rx,
            &mut client_tx,
            &mut down_traffic,
            Direction::Down(metrics),
        );
        tokio::select! {
            end = up => First::Client(end),
            end = down => First::Backend(end),
            () = shutdown.cancelled() => First::Shutdown,
            // A branch of this task's select on tokio's timer wheel: no task per session.
            () = sleep_until_some(expires) => First::Expired,
        }
        // The other pump is dropped here; a message it was relaying is lost with the session.
    };
    let (code, by, reason) = describe(&first);
    // Finish the closing handshake, the healthy side first, all within one bounded wait.
    let wind_down = async {
        let away = || Some(close(CloseCode::Away, "going away"));
        match first {
            First::Client(End::Closed(_)) => {
                finish(&mut client_tx, None).await;
                drain(&mut backend_rx).await;
            }
            First::Client(End::SourceFailed(error)) => {
                finish(&mut backend_tx, away()).await;
                if let Some(reply) = error.as_ref().and_then(protocol_close) {
                    finish(&mut client_tx, Some(reply)).await;
                }
                drain(&mut backend_rx).await;
            }
            First::Client(End::SinkFailed) | First::Backend(End::SourceFailed(_)) => {
                finish(
                    &mut client_tx,
                    Some(close(CloseCode::from(1014), "bad gateway")),
                )
                .await;
                drain(&mut client_rx).await;
            }
            First::Backend(End::Closed(_)) => {
                finish(&mut backend_tx, None).await;
                drain(&mut client_rx).await;
            }
            First::Backend(End::SinkFailed) => {
                finish(&mut backend_tx, away()).await;
                drain(&mut backend_rx).await;
            }
            First::Expired => {
                finish(
                    &mut client_tx,
                    Some(close(CloseCode::from(4001), "token expired")),
                )
                .await;
                finish(&mut backend_tx, away()).await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
            First::Shutdown => {
                finish(&mut client_tx, away()).await;
                finish(&mut backend_tx, away()).await;
                tokio::join!(drain(&mut client_rx), drain(&mut backend_rx));
            }
        }
    };
    drop(tokio::time::timeout(CLOSE_TIMEOUT, wind_down).await);
    Outcome {
        code,
        by,
        reason,
        up: up_traffic,
        down: down_traffic,
    }
}

/// The close code the client saw, who ended the session, and why.
fn describe(first: &First) -> (u16, &'static str, &'static str) {
    match first {
        First::Client(End::Closed(frame)) => (code_of(frame), "client", "client closed"),
        First::Client(End::SourceFailed(error)) => match error.as_ref().and_then(protocol_close) {
            Some(reply) => (u16::from(reply.code), "client", "client protocol error"),
            None => (ABNORMAL, "client", "client vanished"),
        },
        First::Client(End::SinkFailed) | First::Backend(End::SourceFailed(_)) => {
            (1014, "backend", "backend vanished")
        }
        First::Backend(End::Closed(frame)) => (code_of(frame), "backend", "backend closed"),
        First::Backend(End::SinkFailed) => (ABNORMAL, "client", "client vanished"),
        First::Shutdown => (1001, "proxy", "shutting down"),
        First::Expired => (4001, "proxy", "token expired"),
    }
}

enum First {
    Client(End),
    Backend(End),
    Shutdown,
    Expired,
}

/// Completes at `deadline`, or never.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone, Copy)]
enum Direction<'m> {
    Up(&'m RouteMetrics),
    Down(&'m RouteMetrics),
}

impl Direction<'_> {
    fn count(self, bytes: usize) {
        let bytes = bytes as u64;
        match self {
            Direction::Up(m) => {
                m.messages_up.inc();
                m.bytes_up.inc_by(bytes);
            }
            Direction::Down(m) => {
                m.messages_down.inc();
                m.bytes_down.inc_by(bytes);
            }
        }
    }
}

/// Moves messages from `source` to `sink` until one of them ends.
async fn pump<Src, Dst>(
    source: &mut Src,
    sink: &mut Dst,
    traffic: &mut Traffic,
    direction: Direction<'_>,
) -> End
where
    Src: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    Dst: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let mut unflushed = false;
    loop {
        let item = if unflushed {
            // Keep batching while more messages are already waiting; flush once it runs dry.
            match source.next().now_or_never() {
                Some(item) => item,
                None => {
                    if sink.flush().await.is_err() {
                        return End::SinkFailed;
                    }
                    unflushed = false;
                    continue;
                }
            }
        } else {
            source.next().await
        };
        let message = match item {
            Some(Ok(message)) => message,
            Some(Err(error)) => return End::SourceFailed(Some(error)),
            None => return End::SourceFailed(None),
        };
        match message {
            Message::Text(_) | Message::Binary(_) => {
                let len = message.len();
                traffic.messages += 1;
                traffic.bytes += len as u64;
                direction.count(len);
                if sink.feed(message).await.is_err() {
                    return End::SinkFailed;
                }
                unflushed = true;
            }
            Message::Close(frame) => {
                // Best effort: the other side may already be gone.
                let _ = sink.send(Message::Close(frame.clone())).await;
                return End::Closed(frame);
            }
            // Answered hop by hop; never produced by reads.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
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
