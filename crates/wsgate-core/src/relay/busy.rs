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
use tokio_rustls::server::TlsStream;
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

impl ReadNow for TlsStream<TcpStream> {
    fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        let (tcp, tls) = self.get_mut();
        // Whatever is decrypted already was taken by `poll_read` before it returned Pending;
        // only records that arrived since can give plaintext.
        match settled(tls.read_tls(&mut &*SockRef::from(&*tcp)))? {
            // The end of TCP: the runtime's own read reports it (and a missing close_notify).
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) => return Some(Err(error)),
        }
        if let Err(error) = tls.process_new_packets() {
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
        }
        // No plaintext yet (part of a record): wait, or spin again. Ok(0) is close_notify.
        let read = settled(tls.reader().read(buf.initialize_unfilled()))?;
        Some(read.map(|n| buf.advance(n)))
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
