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
//! - No data frame either way for `idle` closes both sides with 1001 `idle timeout`; a session
//!   `max_session` old is closed with 1001 `session limit`, whatever its token says.
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
//!
//! The files: [`session`] polls the two pumps with the session's timer and sequences the
//! closes; [`pump`] is one direction, its state machine in [`state`]; [`frame`] (with
//! [`violation`] and [`utf8`]) checks frames as they pass; [`own`] holds the proxy's own
//! frames; [`outside`] tells the drain's and kicks' wake-ups apart; [`busy`] is busy polling.

pub(crate) mod busy;
pub mod frame;
mod gather;
mod outside;
mod own;
mod pump;
mod session;
mod state;
mod utf8;
mod violation;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::busy::{ReadNow, Relaying};
pub(crate) use self::gather::Gather;
use self::session::Session;
use crate::config::Timeouts;
use crate::messages::Rules;
use crate::metrics::RouteMetrics;
use crate::ratelimit::MessageLimits;
use crate::registry;

/// The payload of the proxy's pings; the client's pong with it goes no further.
const KEEPALIVE: &[u8] = b"wsgate";

/// The close code recorded when a peer vanished without a close frame (never sent on the wire).
const ABNORMAL: u16 = 1006;

/// What governs one session besides its two sockets.
pub(crate) struct Policy {
    /// Client-to-backend rates.
    pub limits: MessageLimits,
    pub timeouts: Timeouts,
    /// The largest message either way.
    pub max_message_size: usize,
    /// When the token expires (`None` with `on_expiry: ignore`).
    pub expires: Option<Instant>,
    /// The session's registry entry, through which it is closed from outside (revocation,
    /// reload, the admin API).
    pub registered: Arc<registry::Session>,
    /// `listen.busy_poll` (zero: never).
    pub busy_poll: Duration,
    /// In-band refresh (`auth.refresh: message`).
    pub refresh: Option<Refresh>,
    /// The route's message rules in force, looked up at each wake-up so that a reload
    /// applies to the next message (`None`: the route had no rules when the session started;
    /// frames are relayed as they come, nothing is held).
    pub rules: Option<Arc<ArcSwapOption<Rules>>>,
}

/// In-band token refresh as the relay sees it: which messages are refreshes, and who judges
/// their tokens (the connection layer, with the configuration in force).
pub(crate) struct Refresh {
    pub gather: Gather,
    pub check: Check,
}

/// Judges a refresh's token: the new `exp` and the session's new deadline, or the reason for
/// the refusal (`invalid_token`, `insufficient_scope`, `subject_mismatch`, `revoked`).
pub(crate) type Check = Box<dyn Fn(String) -> Checking + Send + Sync>;
pub(crate) type Checking =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Renewed, &'static str>> + Send>>;

/// An accepted refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewed {
    /// The new token's `exp` (Unix seconds), for the client's answer.
    pub exp: u64,
    /// When the session must now close (`None` with `on_expiry: ignore`).
    pub expires: Option<Instant>,
}

/// How a session ended, for the access log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The close code the client received or sent (1006 when it vanished).
    pub code: u16,
    /// Who ended the session: `client`, `backend` or `proxy`.
    pub by: &'static str,
    pub reason: &'static str,
    pub up: Traffic,
    pub down: Traffic,
    /// Client messages dropped by `on_limit: drop`.
    pub dropped: u64,
    /// Client messages refused by the message rules.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

/// Relays until either side closes or a limit, timer or `shutdown` ends the session.
/// With each stream come the bytes its peer sent before the relay took over; they are copied
/// and the buffer holding them (hyper's whole read buffer) is let go at once.
///
/// Not an `async fn`: the session is built before the future exists, so the future holds the
/// streams once (inside the session) rather than also as its arguments for its whole life. An
/// idle session's memory is mostly this future (issue 18).
pub(crate) fn run<'a, C, B>(
    client: (C, Bytes),
    backend: (B, Bytes),
    metrics: &'a RouteMetrics,
    shutdown: &'a CancellationToken,
    policy: &'a Policy,
    relaying: &'a Relaying,
) -> impl Future<Output = Outcome> + 'a
where
    C: ReadNow + 'a,
    B: ReadNow + 'a,
{
    let mut session = Session::new(
        client.0, &client.1, backend.0, &backend.1, metrics, policy, relaying,
    );
    drop((client.1, backend.1));
    async move {
        let entered = relaying.enter();
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        let mut kick = std::pin::pin!(policy.registered.kicked());
        std::future::poll_fn(|cx| session.poll(cx, cancelled.as_mut(), kick.as_mut())).await;
        session.report();
        drop(entered);
        // The closing handshake is done (or timed out): end both connections, in place.
        drop(tokio::time::timeout(Duration::from_secs(1), session.goodbye()).await);
        session.outcome()
    }
}

/// The session over in-memory streams: the test plays the client and the backend.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::task::JoinHandle;

    use super::frame::{self, MAX_CONTROL_FRAME, Opcode};
    use super::session::CLOSE_TIMEOUT;
    use super::*;
    use crate::config::Limits;
    use crate::metrics::Metrics;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CLOSE: u8 = 0x8;

    /// The peers' ends of a running session.
    struct Peers {
        client: DuplexStream,
        backend: DuplexStream,
        shutdown: CancellationToken,
        session: JoinHandle<Outcome>,
    }

    /// Starts a session whose streams each hold `capacity` bytes in flight.
    fn start(capacity: usize) -> Peers {
        start_with(capacity, Timeouts::default())
    }

    /// [`start`] with the route's `timeouts`.
    fn start_with(capacity: usize, timeouts: Timeouts) -> Peers {
        let (client, client_proxy) = duplex(capacity);
        let (backend, backend_proxy) = duplex(capacity);
        let shutdown = CancellationToken::new();
        let cancelled = shutdown.clone();
        let session = tokio::spawn(async move {
            let metrics = Arc::new(Metrics::new()).route("test");
            let registry = Arc::new(registry::Registry::default());
            let principal = crate::auth::Principal {
                sub: None,
                jti: None,
                exp: u64::MAX,
                iat: None,
                claims: Default::default(),
                kid: None,
            };
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
            let registration = registry.register("test", Arc::new(principal), peer, None);
            let limits = Limits::default();
            let policy = Policy {
                limits: MessageLimits::new(&limits),
                timeouts,
                max_message_size: limits.max_message_size,
                expires: None,
                registered: registration.session.clone(),
                busy_poll: Duration::ZERO,
                refresh: None,
                rules: None,
            };
            let relaying = Relaying::new(1);
            let client = (client_proxy, Bytes::new());
            let backend = (backend_proxy, Bytes::new());
            run(client, backend, &metrics, &cancelled, &policy, &relaying).await
        });
        Peers {
            client,
            backend,
            shutdown,
            session,
        }
    }

    /// A data frame, whole; masked (with `KEY`) when it comes from the client.
    fn data(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut bytes = vec![0x80 | opcode];
        match u16::try_from(payload.len()) {
            Ok(len @ 0..=125) => bytes.push(mask_bit | len as u8),
            Ok(len) => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&len.to_be_bytes());
            }
            Err(_) => panic!("test frames are small"),
        }
        let mut payload = payload.to_vec();
        if masked {
            bytes.extend_from_slice(&KEY);
            frame::apply_mask(&mut payload, KEY, 0);
        }
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// A close frame with `code`; masked (with `KEY`) when it comes from the client.
    fn close(code: u16, masked: bool) -> Vec<u8> {
        let (payload, len) = frame::close_payload(code, "");
        let mut bytes = [0; MAX_CONTROL_FRAME];
        let len = frame::encode_control(
            Opcode::Close,
            &payload[..len],
            masked.then_some(KEY),
            &mut bytes,
        );
        bytes[..len].to_vec()
    }

    /// The next frame's opcode and unmasked payload; `None` at the end of the stream.
    async fn next_frame(stream: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
        let mut head = [0; 2];
        stream.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut len = [0; 2];
                stream.read_exact(&mut len).await.ok()?;
                usize::from(u16::from_be_bytes(len))
            }
            127 => panic!("test frames are small"),
            len => usize::from(len),
        };
        let mut key = [0; 4];
        if head[1] & 0x80 != 0 {
            stream.read_exact(&mut key).await.ok()?;
        }
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.ok()?;
        frame::apply_mask(&mut payload, key, 0);
        Some((head[0] & 0x0f, payload))
    }

    /// The close code in a close frame's payload.
    fn code(payload: &[u8]) -> u16 {
        u16::from_be_bytes([payload[0], payload[1]])
    }

    /// Everything left in the stream, up to its end.
    async fn rest(stream: &mut DuplexStream) -> Vec<u8> {
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .await
            .expect("read to the end");
        rest
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_closes_the_backend_answers_and_both_connections_end() {
        let mut peers = start(4096);
        let hello = data(TEXT, b"hello", true);
        peers.client.write_all(&hello).await.expect("write");
        let mut forwarded = vec![0; hello.len()];
        peers
            .backend
            .read_exact(&mut forwarded)
            .await
            .expect("read");
        assert_eq!(forwarded, hello, "forwarded as it came, still masked");
        let reply = data(TEXT, b"world", false);
        peers.backend.write_all(&reply).await.expect("write");
        let frame = next_frame(&mut peers.client).await;
        assert_eq!(frame, Some((TEXT, b"world".to_vec())));

        peers
            .client
            .write_all(&close(1000, true))
            .await
            .expect("write");
        let frame = next_frame(&mut peers.backend).await.expect("the close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1000));
        peers
            .backend
            .write_all(&close(1000, false))
            .await
            .expect("write");
        let frame = next_frame(&mut peers.client).await.expect("the answer");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1000));

        let started = Instant::now();
        let outcome = peers.session.await.expect("the session");
        assert!(started.elapsed() < CLOSE_TIMEOUT, "no wait for the timeout");
        assert_eq!(
            (outcome.code, outcome.by, outcome.reason),
            (1000, "client", "client closed")
        );
        assert_eq!(
            outcome.up,
            Traffic {
                messages: 1,
                bytes: 5
            }
        );
        assert_eq!(
            outcome.down,
            Traffic {
                messages: 1,
                bytes: 5
            }
        );
        assert!(rest(&mut peers.client).await.is_empty(), "the client's end");
        assert!(
            rest(&mut peers.backend).await.is_empty(),
            "the backend's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_session_closes_the_session_when_reached() {
        let max = Duration::from_secs(10);
        let mut peers = start_with(
            4096,
            Timeouts {
                max_session: Some(max),
                ..Timeouts::default()
            },
        );
        let started = Instant::now();
        let frame = next_frame(&mut peers.client)
            .await
            .expect("the client's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1001));
        assert_eq!(&frame.1[2..], b"session limit");
        assert!(started.elapsed() >= max, "not before the cap");
        let frame = next_frame(&mut peers.backend)
            .await
            .expect("the backend's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1001));
        peers
            .client
            .write_all(&close(1001, true))
            .await
            .expect("write");
        peers
            .backend
            .write_all(&close(1001, false))
            .await
            .expect("write");
        let outcome = peers.session.await.expect("the session");
        assert_eq!(
            (outcome.code, outcome.by, outcome.reason),
            (1001, "proxy", "session limit")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_proxys_own_close_gives_up_on_silent_peers_after_the_close_timeout() {
        let mut peers = start(4096);
        let started = Instant::now();
        peers.shutdown.cancel();
        let frame = next_frame(&mut peers.client)
            .await
            .expect("the client's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1001));
        let frame = next_frame(&mut peers.backend)
            .await
            .expect("the backend's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1001));
        // Neither peer answers.
        let outcome = peers.session.await.expect("the session");
        assert!(
            started.elapsed() >= CLOSE_TIMEOUT,
            "the peers had their time"
        );
        assert!(started.elapsed() < CLOSE_TIMEOUT * 2);
        assert_eq!(
            (outcome.code, outcome.by, outcome.reason),
            (1001, "proxy", "shutting down")
        );
        assert!(rest(&mut peers.client).await.is_empty(), "the client's end");
        assert!(
            rest(&mut peers.backend).await.is_empty(),
            "the backend's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_ends_inside_a_frame_ends_the_session_at_once() {
        let mut peers = start(4096);
        let whole = data(BINARY, &[7; 100], false);
        let part = &whole[..12];
        peers.backend.write_all(part).await.expect("write");
        let mut forwarded = vec![0; part.len()];
        peers.client.read_exact(&mut forwarded).await.expect("read");
        assert_eq!(forwarded, part);
        let started = Instant::now();
        drop(peers.backend);
        let outcome = peers.session.await.expect("the session");
        assert!(started.elapsed() < CLOSE_TIMEOUT, "no close is awaited");
        assert_eq!(
            (outcome.code, outcome.by, outcome.reason),
            (1014, "backend", "backend vanished")
        );
        // The client is mid-frame: it gets no close frame, only the end of its connection.
        assert!(rest(&mut peers.client).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_ends_mid_frame_while_the_proxy_closes_ends_the_session_at_once() {
        let mut peers = start(4096);
        let whole = data(BINARY, &[7; 100], true);
        let part = &whole[..16];
        peers.client.write_all(part).await.expect("write");
        let mut forwarded = vec![0; part.len()];
        peers
            .backend
            .read_exact(&mut forwarded)
            .await
            .expect("read");
        // The proxy closes (a drain) while the client's frame is in flight; then the client
        // vanishes inside it, so the backend can never get a close frame.
        let started = Instant::now();
        peers.shutdown.cancel();
        let frame = next_frame(&mut peers.client)
            .await
            .expect("the client's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1001));
        drop(peers.client);
        peers.session.await.expect("the session");
        assert!(started.elapsed() < CLOSE_TIMEOUT, "no close is awaited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_violation_while_the_client_is_mid_frame_closes_the_backend_after_it() {
        let mut peers = start(4096);
        let whole = data(BINARY, &[7; 100], true);
        let (part, remainder) = whole.split_at(16);
        peers.client.write_all(part).await.expect("write");
        let mut forwarded = vec![0; part.len()];
        peers
            .backend
            .read_exact(&mut forwarded)
            .await
            .expect("read");
        // A reserved bit: a protocol error from the backend.
        peers.backend.write_all(&[0xc2, 0x00]).await.expect("write");
        let frame = next_frame(&mut peers.client)
            .await
            .expect("the client's close");
        assert_eq!(frame.0, CLOSE);
        peers.client.write_all(remainder).await.expect("write");
        let mut rest_of_frame = vec![0; remainder.len()];
        peers
            .backend
            .read_exact(&mut rest_of_frame)
            .await
            .expect("read");
        let started = Instant::now();
        let frame = next_frame(&mut peers.backend)
            .await
            .expect("the backend's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1002));
        assert!(started.elapsed() < CLOSE_TIMEOUT, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_text_found_mid_payload_closes_the_client_and_cuts_the_backend() {
        let mut peers = start(4096);
        let mut text = b"valid".to_vec();
        text.extend_from_slice(&[0xff; 5]);
        let whole = data(TEXT, &text, true);
        // The header and the valid half, and once they are forwarded the invalid half.
        let (valid, invalid) = whole.split_at(whole.len() - 5);
        peers.client.write_all(valid).await.expect("write");
        let mut forwarded = vec![0; valid.len()];
        peers
            .backend
            .read_exact(&mut forwarded)
            .await
            .expect("read");
        assert_eq!(forwarded, valid);
        peers.client.write_all(invalid).await.expect("write");

        let frame = next_frame(&mut peers.client)
            .await
            .expect("the client's close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1007));
        let started = Instant::now();
        let outcome = peers.session.await.expect("the session");
        assert!(started.elapsed() < CLOSE_TIMEOUT, "no close is awaited");
        assert_eq!(
            (outcome.code, outcome.by, outcome.reason),
            (1007, "client", "client protocol error")
        );
        // The backend is mid-frame: nothing more, no close frame, only the end.
        assert!(rest(&mut peers.backend).await.is_empty());
    }

    #[tokio::test]
    async fn a_backend_that_reads_nothing_stops_the_client_being_read() {
        const CAPACITY: usize = 1024;
        const MESSAGES: usize = 100;
        let mut peers = start(CAPACITY);
        let message = data(BINARY, &[1; 1000], true);
        let (mut client_reader, mut client) = tokio::io::split(peers.client);
        let written = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn({
            let (message, written) = (message.clone(), written.clone());
            async move {
                for _ in 0..MESSAGES {
                    client.write_all(&message).await.expect("write");
                    written.fetch_add(message.len(), Ordering::Relaxed);
                }
                client
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken = written.load(Ordering::Relaxed);
        // What the backend's stream holds, the pump's large buffer and the client's stream.
        let bound = CAPACITY + 16 * 1024 + CAPACITY;
        assert!(taken > 0, "data went through at first");
        assert!(
            taken <= bound,
            "{taken} bytes taken while the backend read nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            written.load(Ordering::Relaxed),
            taken,
            "the client is not read on"
        );
        assert!(!writer.is_finished());

        // The backend reads: everything comes through, as it was sent.
        let mut received = vec![0; MESSAGES * message.len()];
        peers.backend.read_exact(&mut received).await.expect("read");
        assert_eq!(received, message.repeat(MESSAGES));
        let mut client = writer.await.expect("the writer");
        client.write_all(&close(1000, true)).await.expect("write");
        let frame = next_frame(&mut peers.backend).await.expect("the close");
        assert_eq!((frame.0, code(&frame.1)), (CLOSE, 1000));
        peers
            .backend
            .write_all(&close(1000, false))
            .await
            .expect("write");
        let mut answer = vec![0; 4];
        client_reader
            .read_exact(&mut answer)
            .await
            .expect("the answer");
        assert_eq!(answer, close(1000, false));
        let outcome = peers.session.await.expect("the session");
        assert_eq!(outcome.up.messages, MESSAGES as u64);
    }
}
