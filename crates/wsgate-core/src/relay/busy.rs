//! Busy polling on a quiet proxy (`listen.busy_poll`).
//!
//! While fewer sessions relay than the runtime has worker threads, a session that has just
//! moved data keeps polling for a short window before its thread sleeps: on a nearly idle
//! proxy the answer to what it forwarded usually arrives within tens of microseconds, and
//! waking a sleeping thread (a halted vCPU, in a VM) costs about as much again.
//!
//! The runtime learns that a socket is readable only on the thread that holds its I/O driver,
//! and that is typically the other, idle worker, asleep in `epoll_wait`. So a spinning session
//! reads its sockets itself ([`ReadNow`]): a non-blocking `recv` that ignores the runtime's
//! readiness. The runtime's view stays conservative (a socket it thinks readable and finds empty
//! is simply not ready), and the edge that the kernel still reports wakes the session once more,
//! to find nothing new.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// The sessions relaying on one server, which decide whether a session may busy-poll.
#[derive(Debug)]
pub(crate) struct Relaying {
    sessions: AtomicUsize,
    /// Busy polling is for when fewer sessions than this relay (the runtime's worker threads,
    /// so at least one is left for everything else; a single-threaded proxy never spins).
    workers: usize,
}

impl Relaying {
    pub(crate) fn new(workers: usize) -> Relaying {
        Relaying {
            sessions: AtomicUsize::new(0),
            workers,
        }
    }

    /// Counts a session until the guard is dropped.
    pub(crate) fn enter(&self) -> Entered<'_> {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Entered(self)
    }

    /// Few enough sessions relay for one to busy-poll.
    pub(crate) fn quiet(&self) -> bool {
        self.sessions.load(Ordering::Relaxed) < self.workers
    }
}

/// Whether a session's spinning pays, learnt per direction: after it forwards data it waits
/// for the answer from the peer it wrote to (the backend, or the client), and the two answer
/// at very different speeds. A backend on the same host typically answers within the window;
/// a client far away, or one that thinks before its next message, does not, and every window
/// spent waiting for it is CPU burnt for nothing. After [`MISSES`] windows in a row without
/// data, the session stops spinning for that direction, and tries again (one window) every
/// [`PROBE`]th time, in case the peer sped up; data arriving within a window resets it.
#[derive(Debug, Default)]
pub(super) struct Spin {
    /// Windows in a row that ended without data, by direction (0: waiting on the backend).
    misses: [u8; 2],
    /// Forwards without a window since the last probe, by direction.
    skipped: [u8; 2],
    /// The direction of the latest forward.
    toward: usize,
    /// A window is open (the session spins until data moves or the window ends).
    open: bool,
}

/// Windows in a row without data after which a direction stops spinning.
pub(super) const MISSES: u8 = 2;
/// A direction that stopped spinning opens one window every this many forwards.
pub(super) const PROBE: u8 = 16;

impl Spin {
    /// Data moved; `to_backend` when it went to the backend (the session now waits on it). A
    /// window open then paid off; the next one opens if this direction's spinning pays.
    pub(super) fn moved(&mut self, to_backend: bool) {
        if self.open {
            self.misses[self.toward] = 0;
        }
        let toward = usize::from(!to_backend);
        self.toward = toward;
        self.open = self.misses[toward] < MISSES || {
            self.skipped[toward] += 1;
            let probe = self.skipped[toward] >= PROBE;
            if probe {
                self.skipped[toward] = 0;
            }
            probe
        };
    }

    /// The window ran out with nothing moved (or spinning is not allowed now: `counted`
    /// false, the window closes without a verdict).
    pub(super) fn close(&mut self, counted: bool) {
        if self.open && counted {
            let misses = &mut self.misses[self.toward];
            *misses = misses.saturating_add(1);
        }
        self.open = false;
    }

    /// A window is open.
    pub(super) fn open(&self) -> bool {
        self.open
    }
}

pub(crate) struct Entered<'a>(&'a Relaying);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream the relay can carry. A busy-polling session reads it without waiting for the
/// runtime to see it ready where the stream allows that (a socket); any other stream takes the
/// default, which never reads directly.
pub(crate) trait ReadNow: AsyncRead + AsyncWrite + Unpin {
    /// Reads what the socket holds now into `buf`. `None`: nothing yet, or this stream cannot
    /// be read so (the caller waits for the runtime as usual). `Some(Ok(()))` with nothing put
    /// in `buf` is the end of the stream, as from `poll_read`.
    fn read_now(&mut self, _buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        None
    }
}

/// `None` for "would block" (or a signal), the outcome otherwise.
fn settled<T>(result: io::Result<T>) -> Option<io::Result<T>> {
    match result {
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        result => Some(result),
    }
}

impl ReadNow for TcpStream {
    fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        // The socket is non-blocking (the runtime set it so): this never waits.
        let read = settled((&*SockRef::from(&*self)).read(buf.initialize_unfilled()))?;
        Some(read.map(|n| buf.advance(n)))
    }
}

impl ReadNow for crate::tls::Stream {
    fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        crate::tls::Stream::read_now(self, buf)
    }
}

/// hyper's upgrade wrapper, when its socket could not be taken out: no reads past it.
impl ReadNow for TokioIo<Upgraded> {}

/// An in-memory stream (the relay's unit tests): read only through the runtime.
impl ReadNow for DuplexStream {}

impl<L: ReadNow, R: ReadNow> ReadNow for Either<L, R> {
    fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        match self {
            Either::Left(stream) => stream.read_now(buf),
            Either::Right(stream) => stream.read_now(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MISSES, PROBE, Spin};

    #[test]
    fn a_direction_whose_windows_go_unanswered_stops_spinning_and_probes() {
        let mut spin = Spin::default();
        // To the backend: answered within the window every time.
        for round in 0..10 {
            spin.moved(true);
            assert!(spin.open());
            // The answer comes back: that window paid, and the next waits on the client, as
            // long as the client direction has not missed MISSES times in a row.
            spin.moved(false);
            assert_eq!(spin.open(), round < MISSES, "round {round}");
            // The client is slow: its window runs out.
            spin.close(true);
        }
        // The client direction missed MISSES times in a row long ago and opens no window, but
        // the backend direction still does.
        spin.moved(true);
        assert!(spin.open());
        spin.moved(false);
        assert!(!spin.open());
        // One forward in PROBE opens a window toward the client again.
        let mut opened = 0;
        for _ in 0..u32::from(PROBE) * 4 {
            spin.moved(true);
            spin.moved(false);
            if spin.open() {
                opened += 1;
                spin.close(true);
            }
        }
        assert_eq!(opened, 4);
    }

    #[test]
    fn data_within_a_probe_window_brings_spinning_back() {
        let mut spin = Spin::default();
        for _ in 0..MISSES {
            spin.moved(false);
            spin.close(true);
        }
        spin.moved(false);
        assert!(!spin.open());
        while !spin.open() {
            spin.moved(false);
        }
        // The probe's window catches data: the direction spins every time again.
        spin.moved(false);
        assert!(spin.open());
        spin.moved(false);
        assert!(spin.open());
    }

    #[test]
    fn a_window_closed_without_a_verdict_counts_no_miss() {
        let mut spin = Spin::default();
        for _ in 0..u32::from(MISSES) * 3 {
            spin.moved(true);
            spin.close(false);
        }
        spin.moved(true);
        assert!(spin.open());
    }
}
