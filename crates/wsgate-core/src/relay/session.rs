//! The session: the two pumps, the one timer (idle, pings and pongs, expiry, the session
//! cap, the close deadline), the drain and kicks from outside, and the close sequence between the peers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};

use super::busy::{ReadNow, Relaying, Spin};
use super::frame::{Opcode, Rules};
use super::outside::Outside;
use super::own::Own;
use super::pump::{Inspect, Pump};
use super::state::{Mode, Stop};
use super::{ABNORMAL, Checking, KEEPALIVE, Outcome, Policy, Renewed};
use crate::metrics::RouteMetrics;
use crate::registry::Kick;

/// How long the peers get to finish the closing handshake once the session ends.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What ended the session first.
#[derive(Debug)]
enum First {
    Up(Stop),
    Down(Stop),
    Stalled,
    PongTimeout,
    Shutdown,
    Expired,
    /// `timeouts.max_session` reached.
    Capped,
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
        First::Up(Stop::Refused(rejection)) => (rejection.code(), "proxy", rejection.reason()),
        First::Stalled => (1008, "proxy", "slow consumer"),
        First::PongTimeout => (1001, "proxy", "no pong"),
        First::Idle => (1001, "proxy", "idle timeout"),
        First::Shutdown => (1001, "proxy", "shutting down"),
        First::Expired => (4001, "proxy", "token expired"),
        First::Capped => (1001, "proxy", "session limit"),
        First::Kicked(kick) => (kick.code, "proxy", kick.reason),
        First::Down(Stop::Limited | Stop::Refused(_)) => (ABNORMAL, "proxy", "unexpected"),
    }
}

pub(super) struct Session<'a, C, B> {
    client: C,
    backend: B,
    up: Pump,
    down: Pump,
    first: Option<First>,
    metrics: &'a RouteMetrics,
    policy: &'a Policy,
    /// When `timeouts.max_session` ends the session (`None`: never).
    capped: Option<Instant>,
    /// When the token expires (`None` with `on_expiry: ignore`): the admitted token's, or the
    /// latest accepted refresh's.
    expires: Option<Instant>,
    /// The refresh being checked; the next waits in the up pump until it is answered.
    refreshing: Option<Checking>,
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
    /// Whether spinning pays, per direction.
    spin: Spin,
    /// Whether the drain or a kick may have happened since they were last polled.
    outside: Option<Outside>,
}

impl<'a, C, B> Session<'a, C, B>
where
    C: ReadNow,
    B: ReadNow,
{
    /// A session over the two streams, with the bytes each peer sent before the relay took
    /// over (copied into the pumps).
    pub(super) fn new(
        client: C,
        client_early: &[u8],
        backend: B,
        backend_early: &[u8],
        metrics: &'a RouteMetrics,
        policy: &'a Policy,
        relaying: &'a Relaying,
    ) -> Self {
        let max_message = policy.max_message_size as u64;
        let now = Instant::now();
        let timeouts = &policy.timeouts;
        Session {
            client,
            backend,
            up: Pump::new(
                Rules {
                    masked: true,
                    max_message,
                    utf8: true,
                },
                client_early,
                true,
            ),
            down: Pump::new(
                Rules {
                    masked: false,
                    max_message,
                    utf8: false,
                },
                backend_early,
                false,
            ),
            first: None,
            metrics,
            policy,
            // A cap too far away to be represented is no cap.
            capped: timeouts.max_session.and_then(|max| now.checked_add(max)),
            expires: policy.expires,
            refreshing: None,
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
            spin: Spin::default(),
            outside: None,
        }
    }

    /// How the session went.
    pub(super) fn outcome(&self) -> Outcome {
        let (code, by, reason) = self
            .first
            .as_ref()
            .map_or((ABNORMAL, "proxy", "unexpected"), describe);
        Outcome {
            code,
            by,
            reason,
            up: self.up.traffic,
            down: self.down.traffic,
            dropped: self.up.dropped,
            rejected: self.up.rejected,
        }
    }

    /// Ends both connections (TLS close_notify, TCP FIN), both at once.
    pub(super) async fn goodbye(&mut self) {
        let _ = tokio::join!(self.client.shutdown(), self.backend.shutdown());
    }
}

impl<C, B> Session<'_, C, B>
where
    C: ReadNow,
    B: ReadNow,
{
    pub(super) fn poll<S, K>(
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
            if self.abandon_cut_off() {
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
            let policy = self.policy;
            let rules = policy.rules.as_ref().map(|rules| rules.load());
            let inspect = Inspect {
                limits: Some(&policy.limits),
                gather: policy.refresh.as_ref().map(|refresh| &refresh.gather),
                rules: rules.as_ref().and_then(|rules| rules.as_deref()),
            };
            let spinning = self.spinning;
            if let Poll::Ready(stop) = self.up.poll(
                cx,
                &mut self.client,
                &mut self.backend,
                inspect,
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
                Inspect::default(),
                self.metrics,
                spinning,
            ) {
                self.down_stopped(stop);
                continue;
            }
            // A pump already closing can lose its destination without stopping (it only
            // reads on to a boundary): look again before waiting.
            if self.abandon_cut_off() || self.refresh(cx) {
                continue;
            }
            let up = std::mem::take(&mut self.up.noted);
            let down = std::mem::take(&mut self.down.noted);
            if up.active | down.active {
                self.last_activity = Instant::now();
                self.spin.moved(!down.active);
            }
            if up.pong {
                self.awaiting_pong = None;
            }
            if up.unblocked {
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

    /// Takes a refresh from the up pump when none is being checked, and answers the one being
    /// checked once its check is done. True when a pump has something new to do.
    fn refresh(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(refresh) = &self.policy.refresh else {
            return false;
        };
        if self.refreshing.is_none()
            && let Some(token) = self.up.taken.take()
        {
            // Even a session that is closing reads on past it (nothing is answered then).
            if self.first.is_none() {
                self.refreshing = Some((refresh.check)(token));
            }
            return true;
        }
        let Some(checking) = &mut self.refreshing else {
            return false;
        };
        let Poll::Ready(verdict) = checking.as_mut().poll(cx) else {
            return false;
        };
        self.refreshing = None;
        if self.first.is_some() {
            return true;
        }
        let prefix = String::from_utf8_lossy(&refresh.gather.prefix);
        let answer = match verdict {
            Ok(Renewed { exp, expires }) => {
                self.expires = expires;
                format!("{prefix}ok {exp}")
            }
            Err(reason) => format!("{prefix}error {reason}"),
        };
        self.down.own_text(&answer);
        true
    }

    /// The session moved data within `busy_poll`, the proxy is nearly idle, and spinning
    /// has been paying off for the direction it now waits on ([`Spin`]).
    fn busy(&mut self) -> bool {
        let window = self.policy.busy_poll;
        if !self.spin.open() {
            return false;
        }
        if window.is_zero() || self.first.is_some() || !self.relaying.quiet() {
            self.spin.close(false);
            return false;
        }
        if Instant::now() >= self.last_activity + window {
            self.spin.close(true);
            return false;
        }
        true
    }

    /// The earliest moment something must be looked at.
    fn next_deadline(&self) -> Instant {
        if let Some(by) = self.close_by {
            return by;
        }
        let timeouts = &self.policy.timeouts;
        let mut next = self.idle_check.min(self.next_ping);
        if let Some(expires) = self.expires {
            next = next.min(expires);
        }
        if let Some(capped) = self.capped {
            next = next.min(capped);
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
        if self.expires.is_some_and(|at| now >= at) {
            self.proxy_close(First::Expired);
        } else if self.capped.is_some_and(|at| now >= at) {
            self.proxy_close(First::Capped);
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
            if (self.awaiting_pong.is_none() || blocked) && self.down.own.is_empty() {
                self.down
                    .own
                    .push_back(Own::new(Opcode::Ping, KEEPALIVE, None, false));
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
            First::Up(Stop::Refused(rejection)) => (rejection.code(), rejection.reason()),
            First::Expired => (4001, "token expired"),
            First::Capped => (1001, "session limit"),
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
        self.down.sink.kill();
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
            Stop::Limited | Stop::Refused(_) => self.proxy_close(First::Up(stop)),
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
                    // After the client's frame in progress, as the proxy's other closes.
                    self.up.own_close(1002, "protocol error");
                    self.up.until_boundary();
                } else {
                    self.up.sink.kill();
                    self.up.discard();
                }
            }
            Stop::SinkFailed => self.client_gone(First::Down(stop)),
            Stop::Limited | Stop::Refused(_) => {}
        }
    }

    /// A peer whose stream broke mid-frame, or vanished, can be sent no close frame: none
    /// will come back from it, so the other direction reads only to a frame boundary (for the
    /// other peer's close) and is then dropped. True when that changed anything.
    fn abandon_cut_off(&mut self) -> bool {
        self.up.sink.cut_off() && self.down.abandon()
            || self.down.sink.cut_off() && self.up.abandon()
    }

    /// Adds what the pumps moved to the route's counters, once per wake-up.
    pub(super) fn report(&mut self) {
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
