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

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use self::busy::{ReadNow, Relaying};
use self::frame::{MAX_CONTROL_FRAME, Opcode, Reader, Rules, Step, Violation};
use crate::config::{OnLimit, Timeouts};
use crate::metrics::RouteMetrics;
use crate::ratelimit::MessageLimits;
use crate::registry::Kick;

/// How long the peers get to finish the closing handshake once the session ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Each direction's buffer inside the task: any header or control frame, and small messages.
const SMALL: usize = 512;
/// The buffer a direction moves to when a read fills the small one, until it runs dry.
const LARGE: usize = 16 * 1024;
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
pub async fn run<C, B>(
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
    let max_message = policy.max_message_size as u64;
    let now = Instant::now();
    let timeouts = &policy.timeouts;
    let mut session = Session {
        client: client.0,
        backend: backend.0,
        up: Pump::new(
            Rules {
                masked: true,
                max_message,
                utf8: true,
            },
            &client.1,
            true,
        ),
        down: Pump::new(
            Rules {
                masked: false,
                max_message,
                utf8: false,
            },
            &backend.1,
            false,
        ),
        first: None,
        metrics,
        policy,
        sleep: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
        armed: now + timeouts.idle,
        fired: false,
        last_activity: now,
        idle_check: now + timeouts.idle,
        next_ping: now + timeouts.ping_interval,
        awaiting_pong: None,
        close_by: None,
        client_close: None,
        relaying,
        spinning: false,
        outside: None,
    };
    let entered = relaying.enter();
    drop((client.1, backend.1));
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    let mut kick = std::pin::pin!(kicked(policy.kicked.clone()));
    std::future::poll_fn(|cx| session.poll(cx, cancelled.as_mut(), kick.as_mut())).await;
    session.report();
    drop(entered);
    // The closing handshake is done (or timed out): end both connections.
    let Session {
        mut client,
        mut backend,
        up,
        down,
        first,
        ..
    } = session;
    let goodbye = async {
        let _ = tokio::join!(client.shutdown(), backend.shutdown());
    };
    drop(tokio::time::timeout(Duration::from_secs(1), goodbye).await);
    let (code, by, reason) = first
        .as_ref()
        .map_or((ABNORMAL, "proxy", "unexpected"), describe);
    Outcome {
        code,
        by,
        reason,
        up: up.traffic,
        down: down.traffic,
        dropped: up.dropped,
    }
}

/// What ended the session first.
#[derive(Debug)]
enum First {
    Up(Stop),
    Down(Stop),
    Stalled,
    PongTimeout,
    Shutdown,
    Expired,
    Idle,
    Kicked(Kick),
}

/// The close code the client saw, who ended the session, and why.
fn describe(first: &First) -> (u16, &'static str, &'static str) {
    match first {
        First::Up(Stop::Closed(code)) => (code.unwrap_or(1005), "client", "client closed"),
        First::Up(Stop::Vanished) => (ABNORMAL, "client", "client vanished"),
        First::Up(Stop::Violated(violation)) => {
            (violation.code(), "client", "client protocol error")
        }
        First::Up(Stop::SinkFailed) | First::Down(Stop::Vanished) => {
            (1014, "backend", "backend vanished")
        }
        First::Down(Stop::Violated(_)) => (1014, "backend", "backend protocol error"),
        First::Down(Stop::Closed(code)) => (code.unwrap_or(1005), "backend", "backend closed"),
        First::Down(Stop::SinkFailed) => (ABNORMAL, "client", "client vanished"),
        First::Up(Stop::Limited) => (1008, "proxy", "rate limit"),
        First::Stalled => (1008, "proxy", "slow consumer"),
        First::PongTimeout => (1001, "proxy", "no pong"),
        First::Idle => (1001, "proxy", "idle timeout"),
        First::Shutdown => (1001, "proxy", "shutting down"),
        First::Expired => (4001, "proxy", "token expired"),
        First::Kicked(kick) => (kick.code, "proxy", kick.reason),
        First::Down(Stop::Limited) => (ABNORMAL, "proxy", "unexpected"),
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

struct Session<'a, C, B> {
    client: C,
    backend: B,
    up: Pump,
    down: Pump,
    first: Option<First>,
    metrics: &'a RouteMetrics,
    policy: &'a Policy,
    /// The session's one timer, armed for the earliest deadline below.
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
    fired: bool,
    last_activity: Instant,
    /// When to look at `last_activity` again (moved on lazily, not per message).
    idle_check: Instant,
    next_ping: Instant,
    /// When the ping still waiting for its pong was queued.
    awaiting_pong: Option<Instant>,
    /// The session is closing and ends by then whatever the peers do.
    close_by: Option<Instant>,
    /// The code of a close frame the client sent (echoed if the backend cannot answer it).
    client_close: Option<Option<u16>>,
    relaying: &'a Relaying,
    /// Busy polling: the pumps read their sources directly when the runtime says not ready.
    spinning: bool,
    /// Whether the drain or a kick may have happened since they were last polled.
    outside: Option<Outside>,
}

/// The waker the drain and the kick futures hold: it wakes the session's task and notes that
/// it did. Polling those futures takes their locks (the drain's is one for the whole process,
/// shared by every session), so they are polled when registered and then only after they
/// woke the task, not on every wake-up of the session or every busy-poll spin.
struct Outside {
    signal: Arc<Signal>,
    waker: Waker,
}

struct Signal {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Outside {
    /// The waker to poll the futures with, when they are to be polled: the first time (`None`
    /// so far), after they woke the task, or when the task's waker changed (they must hold
    /// the new one).
    fn woken<'a>(outside: &'a mut Option<Outside>, cx: &Context<'_>) -> Option<&'a Waker> {
        if !outside
            .as_ref()
            .is_some_and(|outside| outside.signal.task.will_wake(cx.waker()))
        {
            let signal = Arc::new(Signal {
                woken: AtomicBool::new(true),
                task: cx.waker().clone(),
            });
            let waker = Waker::from(signal.clone());
            *outside = Some(Outside { signal, waker });
        }
        let outside = outside.as_ref()?;
        outside
            .signal
            .woken
            .swap(false, Ordering::Acquire)
            .then_some(&outside.waker)
    }
}

impl<C, B> Session<'_, C, B>
where
    C: ReadNow,
    B: ReadNow,
{
    fn poll<S, K>(
        &mut self,
        cx: &mut Context<'_>,
        mut shutdown: Pin<&mut S>,
        mut kick: Pin<&mut K>,
    ) -> Poll<()>
    where
        S: Future<Output = ()>,
        K: Future<Output = Kick>,
    {
        loop {
            // A peer whose stream broke mid-frame, or vanished, can be sent no close frame:
            // none will come back from it, so its source is read only as far as a frame
            // boundary (for the other peer's close) and then dropped.
            if self.up.dst_dead && !self.up.dst_closed && self.down.abandon()
                || self.down.dst_dead && !self.down.dst_closed && self.up.abandon()
            {
                continue;
            }
            if self.first.is_none()
                && let Some(waker) = Outside::woken(&mut self.outside, cx)
            {
                let mut cx = Context::from_waker(waker);
                if shutdown.as_mut().poll(&mut cx).is_ready() {
                    self.proxy_close(First::Shutdown);
                } else if let Poll::Ready(kick) = kick.as_mut().poll(&mut cx) {
                    self.proxy_close(First::Kicked(kick));
                }
            }
            let limits = Some(&self.policy.limits);
            let spinning = self.spinning;
            if let Poll::Ready(stop) = self.up.poll(
                cx,
                &mut self.client,
                &mut self.backend,
                limits,
                self.metrics,
                spinning,
            ) {
                self.up_stopped(stop);
                continue;
            }
            if let Poll::Ready(stop) = self.down.poll(
                cx,
                &mut self.backend,
                &mut self.client,
                None,
                self.metrics,
                spinning,
            ) {
                self.down_stopped(stop);
                continue;
            }
            if std::mem::take(&mut self.up.active) | std::mem::take(&mut self.down.active) {
                self.last_activity = Instant::now();
            }
            if std::mem::take(&mut self.up.pong) {
                self.awaiting_pong = None;
            }
            if std::mem::take(&mut self.up.unblocked) {
                // The client's pong may have waited behind its data: its deadline, paused
                // while the backend took nothing, starts again.
                let now = Instant::now();
                self.last_activity = now;
                if self.awaiting_pong.is_some() {
                    self.awaiting_pong = Some(now);
                }
            }
            self.report();
            if self.first.is_some() && self.up.settled() && self.down.settled() {
                return Poll::Ready(());
            }
            let next = self.next_deadline();
            if self.fired || next < self.armed {
                self.sleep.as_mut().reset(next);
                self.armed = next;
                self.fired = false;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.fired = true;
                    if self.timers(Instant::now()) {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending => {
                    self.spinning = self.busy();
                    if self.spinning {
                        // Polled again (reading the sockets directly) once the runtime has
                        // run what else is ready, without the thread going to sleep.
                        let mut again = std::pin::pin!(tokio::task::yield_now());
                        let _ = again.as_mut().poll(cx);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The session moved data within `busy_poll` and the proxy is nearly idle.
    fn busy(&self) -> bool {
        let window = self.policy.busy_poll;
        !window.is_zero()
            && self.first.is_none()
            && self.relaying.quiet()
            && Instant::now() < self.last_activity + window
    }

    /// The earliest moment something must be looked at.
    fn next_deadline(&self) -> Instant {
        if let Some(by) = self.close_by {
            return by;
        }
        let timeouts = &self.policy.timeouts;
        let mut next = self.idle_check.min(self.next_ping);
        if let Some(expires) = self.policy.expires {
            next = next.min(expires);
        }
        if let Some(sent) = self.awaiting_pong
            && self.up.blocked_since.is_none()
        {
            next = next.min(sent + timeouts.pong_timeout);
        }
        if let Some(since) = self.down.blocked_since {
            next = next.min(since + timeouts.pong_timeout);
        }
        next
    }

    /// Acts on every deadline that has passed; true when the session must end now.
    fn timers(&mut self, now: Instant) -> bool {
        if let Some(by) = self.close_by {
            return now >= by;
        }
        let timeouts = self.policy.timeouts;
        if self.policy.expires.is_some_and(|at| now >= at) {
            self.proxy_close(First::Expired);
        } else if self
            .down
            .blocked_since
            .is_some_and(|since| now >= since + timeouts.pong_timeout)
        {
            // The client accepts nothing: it cannot take a close frame either.
            self.client_gone(First::Stalled);
        } else if self.up.blocked_since.is_none()
            && self
                .awaiting_pong
                .is_some_and(|sent| now >= sent + timeouts.pong_timeout)
        {
            self.proxy_close(First::PongTimeout);
        } else if now >= self.idle_check {
            if self.up.blocked_since.is_some() {
                // The client has data the backend does not take yet: not idle.
                self.last_activity = now;
            }
            let due = self.last_activity + timeouts.idle;
            if now >= due {
                self.proxy_close(First::Idle);
            } else {
                self.idle_check = due;
            }
        }
        if self.first.is_none() && now >= self.next_ping {
            self.next_ping = now + timeouts.ping_interval;
            // While the backend takes nothing from the client, the client's pong cannot be
            // read: the proxy pings on, each ping restarting the wait.
            let blocked = self.up.blocked_since.is_some();
            if (self.awaiting_pong.is_none() || blocked) && self.down.own.is_none() {
                self.down.own = Some(Own::new(Opcode::Ping, KEEPALIVE, None, false));
                self.awaiting_pong = Some(now);
            }
        }
        false
    }

    /// The proxy ends the session: the client gets `code`, the backend 1001, each between
    /// frames; then both peers' close frames are awaited.
    fn proxy_close(&mut self, first: First) {
        let (code, reason) = match &first {
            First::Up(Stop::Limited) => (1008, "rate limit"),
            First::Expired => (4001, "token expired"),
            First::Idle | First::PongTimeout => (1001, "idle timeout"),
            First::Kicked(kick) => (kick.code, kick.reason),
            _ => (1001, "going away"),
        };
        self.begin(first);
        self.down.own_close(code, reason);
        self.down.until_boundary();
        self.up.own_close(1001, "going away");
        self.up.until_boundary();
    }

    /// Nothing more can be read from or written to the client: the backend gets 1001 and its
    /// answer is awaited.
    fn client_gone(&mut self, first: First) {
        self.begin(first);
        self.up.mode = Mode::Done;
        self.up.own_close(1001, "going away");
        self.down.dst_dead = true;
        self.down.discard();
    }

    fn begin(&mut self, first: First) {
        if self.first.is_none() {
            self.first = Some(first);
            self.close_by = Some(Instant::now() + CLOSE_TIMEOUT);
        }
    }

    fn up_stopped(&mut self, stop: Stop) {
        match stop {
            // Forwarded to the backend; its answer comes back through the down pump.
            Stop::Closed(code) => {
                self.client_close = Some(code);
                self.begin(First::Up(stop));
            }
            Stop::Vanished => self.client_gone(First::Up(stop)),
            Stop::Violated(violation) => {
                self.begin(First::Up(stop));
                self.down.own_close(violation.code(), violation.reason());
                self.down.until_boundary();
                self.up.own_close(1001, "going away");
            }
            Stop::SinkFailed => {
                self.begin(First::Up(stop));
                self.down.own_close(1014, "bad gateway");
                self.down.until_boundary();
                self.up.discard();
            }
            Stop::Limited => self.proxy_close(First::Up(stop)),
        }
    }

    fn down_stopped(&mut self, stop: Stop) {
        match stop {
            // Forwarded to the client, who answers through the up pump.
            Stop::Closed(_) => self.begin(First::Down(stop)),
            Stop::Vanished | Stop::Violated(_) => {
                let violated = matches!(stop, Stop::Violated(_));
                self.begin(First::Down(stop));
                match self.client_close {
                    // The client had closed: it gets its own close back.
                    Some(Some(code)) => self.down.own_close(code, ""),
                    Some(None) => self.down.own_close_payload(&[]),
                    None => self.down.own_close(1014, "bad gateway"),
                }
                if violated {
                    self.up.own_close(1002, "protocol error");
                } else {
                    self.up.dst_dead = true;
                }
                self.up.discard();
            }
            Stop::SinkFailed => self.client_gone(First::Down(stop)),
            Stop::Limited => {}
        }
    }

    /// Adds what the pumps moved to the route's counters, once per wake-up.
    fn report(&mut self) {
        let metrics = self.metrics;
        for (pump, messages, bytes) in [
            (&mut self.up, &metrics.messages_up, &metrics.bytes_up),
            (&mut self.down, &metrics.messages_down, &metrics.bytes_down),
        ] {
            let unreported = std::mem::take(&mut pump.unreported);
            if unreported.messages > 0 {
                messages.inc_by(unreported.messages);
            }
            if unreported.bytes > 0 {
                bytes.inc_by(unreported.bytes);
            }
        }
    }
}

/// How a pump stopped forwarding.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Its source's close frame was forwarded.
    Closed(Option<u16>),
    /// Its source ended without a close frame.
    Vanished,
    /// Its source broke the protocol.
    Violated(Violation),
    /// Its destination could not be written.
    SinkFailed,
    /// The client went over a rate with `on_limit: close`.
    Limited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relaying.
    Forward,
    /// Relaying only to the end of the frame in progress, then `Discard`.
    ToBoundary,
    /// Reading and dropping frames until the source's close frame.
    Discard,
    /// The source is finished with.
    Done,
}

/// A frame of the proxy's own waiting for a frame boundary.
struct Own {
    bytes: [u8; MAX_CONTROL_FRAME],
    len: usize,
    written: usize,
    close: bool,
}

impl Own {
    fn new(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, close: bool) -> Own {
        let mut bytes = [0; MAX_CONTROL_FRAME];
        let len = frame::encode_control(opcode, payload, mask, &mut bytes);
        Own {
            bytes,
            len,
            written: 0,
            close,
        }
    }
}

/// A direction's bytes: a small buffer inside the task, a large one while data streams.
struct Buffer {
    small: [u8; SMALL],
    large: Option<Box<[u8]>>,
}

impl Buffer {
    fn bytes(&self) -> &[u8] {
        self.large.as_deref().unwrap_or(&self.small)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.large {
            Some(large) => large,
            None => &mut self.small,
        }
    }
}

/// One direction: reads its source, checks frames, writes its destination.
struct Pump {
    buf: Buffer,
    /// `buf[head..tail]` is read and not yet looked at...
    head: usize,
    tail: usize,
    /// ...and `buf[out..head]` is decided for the destination and not yet written.
    out: usize,
    /// Bytes at `head` to drop once everything before them is written.
    skip: usize,
    /// The small buffer filled: read more before looking.
    fill: bool,
    reader: Reader,
    mode: Mode,
    /// The destination is the backend: the proxy's frames are masked, and the client's pongs
    /// to the proxy's pings stop here.
    to_backend: bool,
    /// The destination holds part of a frame: nothing of the proxy's own may be written.
    mid_frame: bool,
    own: Option<Own>,
    /// The proxy's close, waiting for `own` (partly written) to be finished.
    own_next: Option<Own>,
    unflushed: bool,
    /// A forwarded close frame is among the bytes not yet written.
    close_queued: bool,
    /// The destination has been sent a close frame.
    dst_closed: bool,
    /// The destination cannot be written any more.
    dst_dead: bool,
    /// The source sent its close frame, ended or broke the protocol.
    src_done: bool,
    /// Since when a write to the destination has been waiting.
    blocked_since: Option<Instant>,
    /// A write went through after waiting, since the session last looked.
    unblocked: bool,
    /// A data frame moved since the session last looked.
    active: bool,
    /// A pong arrived since the session last looked.
    pong: bool,
    /// The source will not be sent a close frame: it is read no further than a frame boundary.
    abandoned: bool,
    /// The message in progress is being dropped (`on_limit: drop`).
    dropping: bool,
    dropped: u64,
    traffic: Traffic,
    unreported: Traffic,
}

impl Pump {
    fn new(rules: Rules, early: &[u8], to_backend: bool) -> Pump {
        let mut buf = Buffer {
            small: [0; SMALL],
            large: None,
        };
        if early.len() > SMALL {
            buf.large = Some(vec![0; early.len().max(LARGE)].into_boxed_slice());
        }
        buf.bytes_mut()[..early.len()].copy_from_slice(early);
        Pump {
            buf,
            head: 0,
            tail: early.len(),
            out: 0,
            skip: 0,
            fill: false,
            reader: Reader::new(rules),
            mode: Mode::Forward,
            to_backend,
            mid_frame: false,
            own: None,
            own_next: None,
            unflushed: false,
            close_queued: false,
            dst_closed: false,
            dst_dead: false,
            src_done: false,
            blocked_since: None,
            unblocked: false,
            active: false,
            pong: false,
            abandoned: false,
            dropping: false,
            dropped: 0,
            traffic: Traffic::default(),
            unreported: Traffic::default(),
        }
    }

    /// Queues a close frame of the proxy's own for the destination (masked towards the
    /// backend), unless the destination already has one.
    fn own_close(&mut self, code: u16, reason: &str) {
        let (payload, len) = frame::close_payload(code, reason);
        self.own_close_payload(&payload[..len]);
    }

    /// [`Pump::own_close`] with the payload as it goes out (empty: a close without a code).
    fn own_close_payload(&mut self, payload: &[u8]) {
        let closing = |own: &Option<Own>| own.as_ref().is_some_and(|own| own.close);
        if self.dst_closed || self.close_queued || closing(&self.own) || closing(&self.own_next) {
            return;
        }
        let mask = self.to_backend.then(mask_key);
        let close = Own::new(Opcode::Close, payload, mask, true);
        match &self.own {
            // A frame partly written must be finished first, or the peer reads garbage.
            Some(own) if own.written > 0 => self.own_next = Some(close),
            _ => self.own = Some(close),
        }
    }

    /// Reads on only to find the source's close frame (unless finished with already).
    fn discard(&mut self) {
        if matches!(self.mode, Mode::Forward | Mode::ToBoundary) {
            self.mode = Mode::Discard;
        }
    }

    /// Stops reading the source once the frame in progress is written: whatever it would
    /// send next (its close frame included) has nowhere to go. True when anything changed.
    fn abandon(&mut self) -> bool {
        if self.abandoned {
            return false;
        }
        self.abandoned = true;
        match self.mode {
            Mode::Forward | Mode::ToBoundary if self.mid_frame => self.mode = Mode::ToBoundary,
            Mode::Done => {}
            _ => self.mode = Mode::Done,
        }
        true
    }

    fn until_boundary(&mut self) {
        if self.mode == Mode::Forward {
            self.mode = Mode::ToBoundary;
        }
    }

    /// Nothing left to do for this direction.
    fn settled(&self) -> bool {
        let written = self.dst_dead
            || (self.out == self.head && self.own.is_none() && !self.unflushed && self.skip == 0);
        written && (self.src_done || self.mode == Mode::Done)
    }

    /// The next `len` bytes go to the destination (after those already decided).
    fn forward(&mut self, len: usize) {
        self.head += len;
    }

    /// Moves bytes until the source or destination would block, or the pump stops.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        limits: Option<&MessageLimits>,
        metrics: &RouteMetrics,
        spinning: bool,
    ) -> Poll<Stop>
    where
        R: ReadNow,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.dst_dead {
                self.out = self.head;
                self.own = None;
                self.own_next = None;
                self.unflushed = false;
            }
            // 1. Go through what was read; what is forwarded accumulates for one write.
            let need_more = match self.look(limits, metrics) {
                Ok(need_more) => need_more,
                Err(stop) => return Poll::Ready(stop),
            };
            // 2. Write it.
            if self.out < self.head {
                let pending = &self.buf.bytes()[self.out..self.head];
                match Pin::new(&mut *dst).poll_write(cx, pending) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.out += n;
                        self.wrote();
                        if self.out == self.head && self.close_queued {
                            self.close_queued = false;
                            self.dst_closed = true;
                        }
                        continue;
                    }
                    Poll::Pending => return self.blocked(),
                    Poll::Ready(_) => return self.sink_failed(),
                }
            }
            // 3. Drop what was decided against, now that what came before it is written.
            if self.skip > 0 {
                self.head += self.skip;
                self.out = self.head;
                self.skip = 0;
                continue;
            }
            // 4. A frame of the proxy's own, between frames.
            if !self.mid_frame
                && let Some(own) = &mut self.own
            {
                match Pin::new(&mut *dst).poll_write(cx, &own.bytes[own.written..own.len]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        own.written += n;
                        if own.written == own.len {
                            self.dst_closed |= own.close;
                            self.own = self.own_next.take();
                        }
                        self.wrote();
                        continue;
                    }
                    Poll::Pending => return self.blocked(),
                    Poll::Ready(_) => return self.sink_failed(),
                }
            }
            if self.abandoned && self.mode == Mode::ToBoundary && !self.mid_frame {
                self.mode = Mode::Done;
            }
            if self.mode == Mode::Done {
                return self.idle(cx, dst);
            }
            // 5. Read more.
            if self.head == self.tail {
                (self.head, self.tail, self.out) = (0, 0, 0);
            } else if need_more && self.head > 0 {
                let (head, tail) = (self.head, self.tail);
                self.buf.bytes_mut().copy_within(head..tail, 0);
                (self.head, self.tail, self.out) = (0, tail - head, 0);
            }
            if self.buf.large.is_none() && self.tail == SMALL {
                let mut large = vec![0; LARGE].into_boxed_slice();
                large[..SMALL].copy_from_slice(&self.buf.small);
                self.buf.large = Some(large);
            }
            let tail = self.tail;
            let mut room = ReadBuf::new(&mut self.buf.bytes_mut()[tail..]);
            let mut read = Pin::new(&mut *src).poll_read(cx, &mut room);
            if read.is_pending()
                && spinning
                && let Some(now) = src.read_now(&mut room)
            {
                read = Poll::Ready(now);
            }
            match read {
                Poll::Ready(Ok(())) if !room.filled().is_empty() => {
                    self.tail += room.filled().len();
                    self.fill = self.buf.large.is_none() && self.tail == SMALL;
                }
                Poll::Ready(_) => {
                    // End of stream or a read error: the source is gone, and a frame it was
                    // sending can never be finished at the destination.
                    self.src_done = true;
                    self.dst_dead |= self.mid_frame;
                    let was = std::mem::replace(&mut self.mode, Mode::Done);
                    if was == Mode::Forward {
                        return Poll::Ready(Stop::Vanished);
                    }
                }
                Poll::Pending if self.fill => self.fill = false,
                Poll::Pending => {
                    if self.head == self.tail {
                        // Running dry: the large buffer goes back.
                        self.buf.large = None;
                        (self.head, self.tail, self.out) = (0, 0, 0);
                    }
                    return self.idle(cx, dst);
                }
            }
        }
    }

    /// Goes through what was read as far as it can, deciding each byte's fate: forwarded bytes
    /// join `out..head`, dropped ones wait in `skip` while forwarded ones precede them.
    /// `Ok(true)` when the input ends inside a header or control frame; `Err` when the pump stops.
    fn look(
        &mut self,
        limits: Option<&MessageLimits>,
        metrics: &RouteMetrics,
    ) -> Result<bool, Stop> {
        while self.skip == 0 && self.head < self.tail && !self.fill && self.mode != Mode::Done {
            if self.mode == Mode::ToBoundary && !self.mid_frame {
                self.mode = if self.abandoned {
                    Mode::Done
                } else {
                    Mode::Discard
                };
                if self.mode == Mode::Done {
                    break;
                }
            }
            let discard = self.mode == Mode::Discard;
            let input = &self.buf.bytes()[self.head..self.tail];
            match self.reader.step(input) {
                Err(violation) => {
                    self.src_done = true;
                    self.dst_dead |= self.mid_frame;
                    self.mode = Mode::Done;
                    if !discard {
                        return Err(Stop::Violated(violation));
                    }
                }
                Ok(Step::NeedMore) => return Ok(true),
                Ok(Step::Data {
                    header,
                    len,
                    first,
                    frame_end,
                    message_end,
                }) => {
                    if discard {
                        self.drop_bytes(len);
                        continue;
                    }
                    if let Some(limits) = limits
                        && (first || !self.dropping)
                    {
                        let admitted = if first {
                            self.dropping = false;
                            limits.admit(header.len)
                        } else {
                            limits.admit_bytes(header.len)
                        };
                        if let Err(exceeded) = admitted {
                            metrics.rate_limited(exceeded.kind());
                            if first && limits.on_limit == OnLimit::Drop {
                                self.dropping = true;
                                self.dropped += 1;
                            } else {
                                self.drop_bytes(len);
                                self.mode = Mode::Discard;
                                return Err(Stop::Limited);
                            }
                        }
                    }
                    if self.dropping {
                        self.drop_bytes(len);
                        self.dropping = !message_end;
                        continue;
                    }
                    if first {
                        self.traffic.messages += 1;
                        self.unreported.messages += 1;
                    }
                    self.traffic.bytes += header.len;
                    self.unreported.bytes += header.len;
                    self.forward(len);
                    self.mid_frame = !frame_end;
                    self.active = true;
                    continue;
                }
                Ok(Step::Payload {
                    len,
                    frame_end,
                    message_end,
                }) => {
                    if discard || self.dropping {
                        self.drop_bytes(len);
                        if message_end {
                            self.dropping = false;
                        }
                        continue;
                    }
                    self.forward(len);
                    self.mid_frame = !frame_end;
                    self.active = true;
                    continue;
                }
                Ok(Step::Control {
                    header,
                    len,
                    payload,
                }) => {
                    let swallow = match header.opcode {
                        Opcode::Close => {
                            self.src_done = true;
                            self.mode = Mode::Done;
                            if !discard {
                                self.forward(len);
                                self.close_queued = true;
                                return Err(Stop::Closed(payload.close_code()));
                            }
                            true
                        }
                        Opcode::Pong if self.to_backend && payload.payload() == KEEPALIVE => {
                            // The answer to the proxy's own ping: asked for, so not metered.
                            self.pong = true;
                            true
                        }
                        _ if discard => {
                            self.pong |= header.opcode == Opcode::Pong;
                            true
                        }
                        // Pings and pongs cost the backend as much as small messages do:
                        // they take from the same budgets.
                        _ => {
                            self.pong |= header.opcode == Opcode::Pong;
                            match limits.map(|limits| (limits, limits.admit(header.len))) {
                                Some((limits, Err(exceeded))) => {
                                    metrics.rate_limited(exceeded.kind());
                                    if limits.on_limit == OnLimit::Close {
                                        self.drop_bytes(len);
                                        self.mode = Mode::Discard;
                                        return Err(Stop::Limited);
                                    }
                                    self.dropped += 1;
                                    true
                                }
                                _ => false,
                            }
                        }
                    };
                    if swallow {
                        self.drop_bytes(len);
                    } else {
                        self.forward(len);
                    }
                    continue;
                }
            }
        }
        Ok(false)
    }

    /// Drops the next `len` bytes, at once when nothing before them waits to be written.
    fn drop_bytes(&mut self, len: usize) {
        if self.out == self.head {
            self.head += len;
            self.out = self.head;
        } else {
            self.skip = len;
        }
    }

    fn wrote(&mut self) {
        self.unflushed = true;
        self.unblocked |= self.blocked_since.take().is_some();
    }

    fn blocked(&mut self) -> Poll<Stop> {
        self.blocked_since.get_or_insert_with(Instant::now);
        Poll::Pending
    }

    fn sink_failed(&mut self) -> Poll<Stop> {
        self.dst_dead = true;
        self.blocked_since = None;
        Poll::Ready(Stop::SinkFailed)
    }

    /// Nothing to read: flush what was written.
    fn idle<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Poll<Stop> {
        if self.unflushed && !self.dst_dead {
            match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Pending => return self.blocked(),
                Poll::Ready(Err(_)) => return self.sink_failed(),
            }
        }
        Poll::Pending
    }
}

/// A masking key for the proxy's own frames to the backend.
fn mask_key() -> [u8; 4] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = std::collections::hash_map::RandomState::new()
        .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (seed as u32).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tokio::io::AsyncRead;

    use super::*;
    use crate::metrics::Metrics;

    /// A client that has sent nothing.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Silent {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl ReadNow for Silent {
        fn read_now(&mut self, _: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
            None
        }
    }

    /// A destination that takes `room` more bytes, then would block.
    #[derive(Default)]
    struct Trickle {
        written: Vec<u8>,
        room: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bytes: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = bytes.len().min(self.room);
            if n == 0 {
                return Poll::Pending;
            }
            self.room -= n;
            self.written.extend_from_slice(&bytes[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn down_pump() -> Pump {
        let rules = Rules {
            masked: false,
            max_message: 1024,
            utf8: false,
        };
        Pump::new(rules, &[], false)
    }

    #[test]
    fn the_drain_and_kick_futures_are_polled_only_after_they_woke_the_task() {
        struct Task(AtomicU64);
        impl Wake for Task {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let woken = Arc::new(Task(AtomicU64::new(0)));
        let task = Waker::from(woken.clone());
        let cx = Context::from_waker(&task);
        let mut outside = None;
        let waker = Outside::woken(&mut outside, &cx)
            .expect("polled the first time, to register")
            .clone();
        assert!(
            Outside::woken(&mut outside, &cx).is_none(),
            "not woken since"
        );
        waker.wake_by_ref();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "the task is woken");
        assert!(Outside::woken(&mut outside, &cx).is_some(), "woken");
        assert!(Outside::woken(&mut outside, &cx).is_none());
    }

    #[test]
    fn a_close_waits_for_a_partly_written_ping() {
        let metrics = Arc::new(Metrics::new()).route("test");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut pump = down_pump();
        let mut client = Trickle {
            room: 3,
            ..Trickle::default()
        };
        pump.own = Some(Own::new(Opcode::Ping, KEEPALIVE, None, false));
        assert!(
            pump.poll(&mut cx, &mut Silent, &mut client, None, &metrics, false)
                .is_pending()
        );
        assert_eq!(client.written.len(), 3, "a short write, mid-ping");
        // A kick lands now.
        pump.own_close(4003, "revoked");
        client.room = usize::MAX;
        assert!(
            pump.poll(&mut cx, &mut Silent, &mut client, None, &metrics, false)
                .is_pending()
        );
        let mut ping = [0; MAX_CONTROL_FRAME];
        let ping_len = frame::encode_control(Opcode::Ping, KEEPALIVE, None, &mut ping);
        let mut close = [0; MAX_CONTROL_FRAME];
        let (payload, len) = frame::close_payload(4003, "revoked");
        let close_len = frame::encode_control(Opcode::Close, &payload[..len], None, &mut close);
        let expected = [&ping[..ping_len], &close[..close_len]].concat();
        assert_eq!(client.written, expected, "the whole ping, then the close");
        assert!(pump.dst_closed);
    }
}
