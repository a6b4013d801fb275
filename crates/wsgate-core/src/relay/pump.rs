//! One direction of the session: reads its source, checks each frame as it passes, and writes
//! its destination, with the proxy's own frames (pings, closes) slipped in between frames.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::busy::ReadNow;
use super::frame::{self, Opcode, Reader, Rules, Step};
use super::gather::{self, Gather, Held, Path, Whole};
use super::own::{Own, mask_key};
use super::state::{Mode, Noted, Sink, Stop};
use super::{KEEPALIVE, Traffic};
use crate::config::OnLimit;
use crate::messages::{self, OnInvalid, Rejection};
use crate::metrics::RouteMetrics;
use crate::ratelimit::MessageLimits;

/// A direction's buffer while a read is small: any header or control frame, and small messages.
const SMALL: usize = 512;
/// The buffer a direction moves to when a read fills the small one, until it runs dry.
const LARGE: usize = 16 * 1024;

/// A direction's bytes, on the heap only while there are any: an idle session holds no
/// buffer at all (most of a gateway's sessions are idle most of the time). Empty, small
/// (`SMALL`) or large (`LARGE`, or an early read's length when longer).
#[derive(Default)]
struct Buffer(Box<[u8]>);

impl Buffer {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Holds `len` bytes at least, keeping the first `keep`.
    fn reserve(&mut self, len: usize, keep: usize) {
        if self.0.len() < len {
            let mut grown = vec![0; len].into_boxed_slice();
            grown[..keep].copy_from_slice(&self.0[..keep]);
            self.0 = grown;
        }
    }

    /// The small buffer is full: the next read goes to a large one.
    fn small_full(&self, tail: usize) -> bool {
        self.0.len() == SMALL && tail == SMALL
    }

    /// Nothing is in it: it goes back to the allocator.
    fn release(&mut self) {
        self.0 = Box::default();
    }
}

/// One direction: reads its source, checks frames, writes its destination.
/// What a pump checks of the messages it passes (the client-to-backend direction only).
#[derive(Clone, Copy, Default)]
pub(super) struct Inspect<'a> {
    /// Message size and rate limits.
    pub limits: Option<&'a MessageLimits>,
    /// Messages to be read whole (in-band refreshes).
    pub gather: Option<&'a Gather>,
    /// The route's message rules: the messages they judge are read whole.
    pub rules: Option<&'a messages::Rules>,
}

pub(super) struct Pump {
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
    /// What is done with the source.
    pub(super) mode: Mode,
    /// The destination is the backend: the proxy's frames are masked, and the client's pongs
    /// to the proxy's pings stop here.
    to_backend: bool,
    /// The destination holds part of a frame: nothing of the proxy's own may be written.
    mid_frame: bool,
    /// Frames of the proxy's own, in order; only the first may be partly written.
    pub(super) own: VecDeque<Own>,
    unflushed: bool,
    /// The message being held whole.
    held: Option<Held>,
    /// A held message going on to the destination as one frame, and how much of it went.
    emit: Option<(Vec<u8>, usize)>,
    /// A refresh token taken from the source, until the session takes it (reading waits).
    pub(super) taken: Option<String>,
    /// Where the destination is in the close sequence.
    pub(super) sink: Sink,
    /// Since when a write to the destination has been waiting.
    pub(super) blocked_since: Option<Instant>,
    /// For the session, which takes it when it looks.
    pub(super) noted: Noted,
    /// The source will not be sent a close frame: it is read no further than a frame boundary.
    abandoned: bool,
    /// The message in progress is being dropped (`on_limit: drop`).
    dropping: bool,
    pub(super) dropped: u64,
    /// Messages refused by the message rules (closed on or dropped).
    pub(super) rejected: u64,
    pub(super) traffic: Traffic,
    pub(super) unreported: Traffic,
}

impl Pump {
    pub(super) fn new(rules: Rules, early: &[u8], to_backend: bool) -> Pump {
        let mut buf = Buffer::default();
        if !early.is_empty() {
            let len = if early.len() > SMALL {
                early.len().max(LARGE)
            } else {
                SMALL
            };
            buf.reserve(len, 0);
            buf.bytes_mut()[..early.len()].copy_from_slice(early);
        }
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
            own: VecDeque::new(),
            unflushed: false,
            held: None,
            emit: None,
            taken: None,
            sink: Sink::Open,
            blocked_since: None,
            noted: Noted::default(),
            abandoned: false,
            dropping: false,
            dropped: 0,
            rejected: 0,
            traffic: Traffic::default(),
            unreported: Traffic::default(),
        }
    }

    /// Queues a close frame of the proxy's own for the destination (masked towards the
    /// backend), unless the destination already has one.
    pub(super) fn own_close(&mut self, code: u16, reason: &str) {
        let (payload, len) = frame::close_payload(code, reason);
        self.own_close_payload(&payload[..len]);
    }

    /// [`Pump::own_close`] with the payload as it goes out (empty: a close without a code).
    pub(super) fn own_close_payload(&mut self, payload: &[u8]) {
        if !self.sink.open() || self.own.iter().any(|own| own.close) {
            return;
        }
        // Nothing else of the proxy's goes after its close; a frame partly written must be
        // finished first, or the peer reads garbage.
        self.own.retain(|own| own.written > 0);
        let mask = self.to_backend.then(mask_key);
        self.own
            .push_back(Own::new(Opcode::Close, payload, mask, true));
    }

    /// Queues a text message of the proxy's own for the destination (the client: a refresh's
    /// answer), written between frames.
    pub(super) fn own_text(&mut self, text: &str) {
        if self.sink.open() && !self.own.iter().any(|own| own.close) {
            let mask = self.to_backend.then(mask_key);
            self.own
                .push_back(Own::new(Opcode::Text, text.as_bytes(), mask, false));
        }
    }

    /// Reads on only to find the source's close frame (unless finished with already).
    pub(super) fn discard(&mut self) {
        if matches!(self.mode, Mode::Forward | Mode::ToBoundary) {
            self.mode = Mode::Discard;
        }
    }

    /// Stops reading the source once the frame in progress is written: whatever it would
    /// send next (its close frame included) has nowhere to go. True when anything changed.
    pub(super) fn abandon(&mut self) -> bool {
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

    pub(super) fn until_boundary(&mut self) {
        if self.mode == Mode::Forward {
            self.mode = Mode::ToBoundary;
        }
    }

    /// Nothing left to do for this direction.
    pub(super) fn settled(&self) -> bool {
        let written = self.sink.dead()
            || (self.out == self.head
                && self.own.is_empty()
                && self.emit.is_none()
                && !self.unflushed
                && self.skip == 0);
        written && self.mode == Mode::Done
    }

    /// The next `len` bytes go to the destination (after those already decided).
    fn forward(&mut self, len: usize) {
        self.head += len;
    }

    /// Moves bytes until the source or destination would block, or the pump stops.
    pub(super) fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        inspect: Inspect<'_>,
        metrics: &RouteMetrics,
        spinning: bool,
    ) -> Poll<Stop>
    where
        R: ReadNow,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.sink.dead() {
                self.out = self.head;
                self.own.clear();
                self.emit = None;
                self.unflushed = false;
            }
            // 1. Go through what was read; what is forwarded accumulates for one write.
            let need_more = match self.look(inspect, metrics) {
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
                        if self.out == self.head {
                            self.sink.written();
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
            // 4. A message held whole, going on as one frame (nothing comes between).
            if let Some((frame, written)) = &mut self.emit {
                match Pin::new(&mut *dst).poll_write(cx, &frame[*written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *written += n;
                        if *written == frame.len() {
                            self.emit = None;
                        }
                        self.wrote();
                        continue;
                    }
                    Poll::Pending => return self.blocked(),
                    Poll::Ready(_) => return self.sink_failed(),
                }
            }
            // 5. A frame of the proxy's own, between frames.
            if !self.mid_frame
                && let Some(own) = self.own.front_mut()
            {
                match Pin::new(&mut *dst).poll_write(cx, &own.bytes[own.written..own.len]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        own.written += n;
                        if own.written == own.len {
                            if own.close {
                                self.sink.close_sent();
                            }
                            self.own.pop_front();
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
            // 6. Read more.
            if self.head == self.tail {
                (self.head, self.tail, self.out) = (0, 0, 0);
            } else if need_more && self.head > 0 {
                let (head, tail) = (self.head, self.tail);
                self.buf.bytes_mut().copy_within(head..tail, 0);
                (self.head, self.tail, self.out) = (0, tail - head, 0);
            }
            if self.buf.small_full(self.tail) {
                self.buf.reserve(LARGE, SMALL);
            } else {
                self.buf.reserve(SMALL, self.tail);
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
                    self.fill = self.buf.small_full(self.tail);
                }
                Poll::Ready(_) => {
                    // End of stream or a read error: the source is gone, and a frame it was
                    // sending can never be finished at the destination.
                    if self.mid_frame {
                        self.sink.kill();
                    }
                    let was = std::mem::replace(&mut self.mode, Mode::Done);
                    if was == Mode::Forward {
                        return Poll::Ready(Stop::Vanished);
                    }
                }
                Poll::Pending if self.fill => self.fill = false,
                Poll::Pending => {
                    if self.head == self.tail {
                        // Running dry: the buffer goes back.
                        self.buf.release();
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
    fn look(&mut self, inspect: Inspect<'_>, metrics: &RouteMetrics) -> Result<bool, Stop> {
        let Inspect {
            limits,
            gather,
            rules,
        } = inspect;
        while self.skip == 0
            && self.emit.is_none()
            && self.taken.is_none()
            && self.head < self.tail
            && !self.fill
            && self.mode != Mode::Done
        {
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
            let mut path = Path::Stream;
            if (gather.is_some() || rules.is_some()) && !discard && self.reader.between_messages() {
                path = gather::path(gather, rules, input);
                if path == Path::Undecided {
                    return Ok(true);
                }
            }
            match self.reader.step(input) {
                Err(violation) => {
                    if self.mid_frame {
                        self.sink.kill();
                    }
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
                        self.held = None;
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
                    if first
                        && path == Path::Refuse
                        && let Some(rules) = rules
                    {
                        // Nothing of it goes on: dropped to its end, or the session closes.
                        self.drop_bytes(len);
                        self.noted.active = true;
                        self.refused(Rejection::Binary, rules, metrics)?;
                        self.dropping = !message_end;
                        continue;
                    }
                    if first && path == Path::Hold {
                        self.held = Some(Held::new(&header));
                    }
                    if let Some(held) = &mut self.held {
                        held.frame(&header);
                        self.drop_bytes(len);
                        self.noted.active = true;
                        if message_end {
                            self.whole(gather, rules, metrics)?;
                        }
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
                    self.noted.active = true;
                    continue;
                }
                Ok(Step::Payload {
                    len,
                    frame_end,
                    message_end,
                }) => {
                    if discard || self.dropping {
                        self.held = None;
                        self.drop_bytes(len);
                        if message_end {
                            self.dropping = false;
                        }
                        continue;
                    }
                    if let Some(held) = &mut self.held {
                        held.payload(gather, &input[..len]);
                        self.drop_bytes(len);
                        self.noted.active = true;
                        if message_end {
                            self.whole(gather, rules, metrics)?;
                        }
                        continue;
                    }
                    self.forward(len);
                    self.mid_frame = !frame_end;
                    self.noted.active = true;
                    continue;
                }
                Ok(Step::Control {
                    header,
                    len,
                    payload,
                }) => {
                    let swallow = match header.opcode {
                        Opcode::Close => {
                            self.mode = Mode::Done;
                            if !discard {
                                self.forward(len);
                                self.sink.close_queued();
                                return Err(Stop::Closed(payload.close_code()));
                            }
                            true
                        }
                        Opcode::Pong if self.to_backend && payload.payload() == KEEPALIVE => {
                            // The answer to the proxy's own ping: asked for, so not metered.
                            self.noted.pong = true;
                            true
                        }
                        _ if discard => {
                            self.noted.pong |= header.opcode == Opcode::Pong;
                            true
                        }
                        // Pings and pongs cost the backend as much as small messages do:
                        // they take from the same budgets.
                        _ => {
                            self.noted.pong |= header.opcode == Opcode::Pong;
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

    /// A held message is whole: a refresh waits for the session, anything else is judged by
    /// the rules (if any) and goes on as one frame, or is refused.
    fn whole(
        &mut self,
        gather: Option<&Gather>,
        rules: Option<&messages::Rules>,
        metrics: &RouteMetrics,
    ) -> Result<(), Stop> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        match held.finish(gather) {
            Whole::Refresh(token) => self.taken = Some(token),
            Whole::Message { opcode, payload } => {
                if let Some(rules) = rules
                    && let Err(rejection) = rules.judge(opcode == Opcode::Text, &payload)
                {
                    return self.refused(rejection, rules, metrics);
                }
                let frame = frame::encode_data(opcode, &payload, Some(mask_key()));
                // Payload bytes, as for messages that stream.
                let bytes = payload.len() as u64;
                drop(payload);
                self.traffic.messages += 1;
                self.unreported.messages += 1;
                self.traffic.bytes += bytes;
                self.unreported.bytes += bytes;
                self.emit = Some((frame, 0));
            }
        }
        Ok(())
    }

    /// A message the rules refused (none of it was forwarded): counted, then dropped or the
    /// pump stops so the session closes.
    fn refused(
        &mut self,
        rejection: Rejection,
        rules: &messages::Rules,
        metrics: &RouteMetrics,
    ) -> Result<(), Stop> {
        metrics.message_rejected(rejection);
        self.rejected += 1;
        match rules.on_invalid {
            OnInvalid::Drop => Ok(()),
            OnInvalid::Close => {
                self.mode = Mode::Discard;
                Err(Stop::Refused(rejection))
            }
        }
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
        self.noted.unblocked |= self.blocked_since.take().is_some();
    }

    fn blocked(&mut self) -> Poll<Stop> {
        self.blocked_since.get_or_insert_with(Instant::now);
        Poll::Pending
    }

    fn sink_failed(&mut self) -> Poll<Stop> {
        self.sink.kill();
        self.blocked_since = None;
        Poll::Ready(Stop::SinkFailed)
    }

    /// Nothing to read: flush what was written.
    fn idle<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Poll<Stop> {
        if self.unflushed && !self.sink.dead() {
            match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Pending => return self.blocked(),
                Poll::Ready(Err(_)) => return self.sink_failed(),
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tokio::io::AsyncRead;

    use super::*;
    use crate::metrics::Metrics;
    use crate::relay::frame::MAX_CONTROL_FRAME;

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
    fn a_close_waits_for_a_partly_written_ping() {
        let metrics = Arc::new(Metrics::new()).route("test");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut pump = down_pump();
        let mut client = Trickle {
            room: 3,
            ..Trickle::default()
        };
        pump.own
            .push_back(Own::new(Opcode::Ping, KEEPALIVE, None, false));
        assert!(
            pump.poll(
                &mut cx,
                &mut Silent,
                &mut client,
                Inspect::default(),
                &metrics,
                false
            )
            .is_pending()
        );
        assert_eq!(client.written.len(), 3, "a short write, mid-ping");
        // A kick lands now.
        pump.own_close(4003, "revoked");
        client.room = usize::MAX;
        assert!(
            pump.poll(
                &mut cx,
                &mut Silent,
                &mut client,
                Inspect::default(),
                &metrics,
                false
            )
            .is_pending()
        );
        let mut ping = [0; MAX_CONTROL_FRAME];
        let ping_len = frame::encode_control(Opcode::Ping, KEEPALIVE, None, &mut ping);
        let mut close = [0; MAX_CONTROL_FRAME];
        let (payload, len) = frame::close_payload(4003, "revoked");
        let close_len = frame::encode_control(Opcode::Close, &payload[..len], None, &mut close);
        let expected = [&ping[..ping_len], &close[..close_len]].concat();
        assert_eq!(client.written, expected, "the whole ping, then the close");
        assert!(pump.sink.closed());
    }
}
