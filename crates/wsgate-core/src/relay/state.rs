//! A pump's state machine. Its two sides move apart: what the pump does with its source
//! ([`Mode`]) and how far its destination is in the close sequence ([`Sink`]). [`Stop`] is
//! what a pump tells the session when it stops forwarding.
//!
//! The source side runs `Forward` -> `ToBoundary` (the frame in progress is finished) ->
//! `Discard` (frames are dropped until the source's close frame) -> `Done`; a source that
//! sends its close frame, ends or breaks the protocol is `Done` at once. The destination runs
//! `Open` -> `CloseQueued` (the source's close frame is being written) -> `CloseSent`, or
//! `Open` -> `CloseSent` with a close of the proxy's own; it is `Dead` from any of them once
//! it cannot be written, or once its source ended inside a frame (nothing can follow there).

use super::violation::Violation;
use crate::messages::Rejection;

/// How a pump stopped forwarding.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
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
    /// The route's message rules refused a client message (`on_invalid: close`).
    Refused(Rejection),
}

/// What a pump does with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Relaying.
    Forward,
    /// Relaying only to the end of the frame in progress, then `Discard`.
    ToBoundary,
    /// Reading and dropping frames until the source's close frame.
    Discard,
    /// The source is finished with.
    Done,
}

/// How far a pump's destination is in the close sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sink {
    /// Frames go on.
    Open,
    /// The source's close frame is among the bytes not yet written.
    CloseQueued,
    /// The destination has been sent a close frame.
    CloseSent,
    /// The destination cannot be written any more (`closed`: it had been sent a close frame).
    Dead { closed: bool },
}

impl Sink {
    /// Nothing more can be written to the destination.
    pub(super) fn dead(self) -> bool {
        matches!(self, Sink::Dead { .. })
    }

    /// The destination has been sent a close frame.
    pub(super) fn closed(self) -> bool {
        matches!(self, Sink::CloseSent | Sink::Dead { closed: true })
    }

    /// The destination went dead before any close frame reached it: its peer will send none
    /// back.
    pub(super) fn cut_off(self) -> bool {
        self == Sink::Dead { closed: false }
    }

    /// The destination can take a close frame of the proxy's own: none went or is on its way.
    pub(super) fn open(self) -> bool {
        self == Sink::Open
    }

    /// The source's close frame was forwarded (it goes out with the bytes before it).
    pub(super) fn close_queued(&mut self) {
        if *self == Sink::Open {
            *self = Sink::CloseQueued;
        }
    }

    /// Everything forwarded so far was written.
    pub(super) fn written(&mut self) {
        if *self == Sink::CloseQueued {
            *self = Sink::CloseSent;
        }
    }

    /// A close frame of the proxy's own was written.
    pub(super) fn close_sent(&mut self) {
        if matches!(self, Sink::Open | Sink::CloseQueued) {
            *self = Sink::CloseSent;
        }
    }

    /// The destination cannot be written any more.
    pub(super) fn kill(&mut self) {
        *self = Sink::Dead {
            closed: self.closed(),
        };
    }
}

/// What happened in a pump since the session last looked.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Noted {
    /// A data frame moved.
    pub(super) active: bool,
    /// A pong arrived.
    pub(super) pong: bool,
    /// A write went through after waiting.
    pub(super) unblocked: bool,
}
