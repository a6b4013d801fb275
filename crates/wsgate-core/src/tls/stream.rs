//! The public listener's TLS connection over rustls's unbuffered API, holding no buffer while
//! it has nothing to hold.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB read buffer for its whole life (its
//! deframer never shrinks below its read size), which was a quarter of an idle session's
//! memory. Here the buffers are the stream's own and are let go as soon as they run empty:
//! - `incoming`, the ciphertext read and not yet processed (a partial record waits in it);
//! - `plain`, decrypted data the reader has not taken yet;
//! - `outgoing`, TLS bytes for the socket not yet written.
//!
//! An idle session waits on the socket's readiness with none of them allocated. Reading needs
//! readiness first (`poll_read_ready`), then a non-blocking read into a buffer allocated for
//! that read; writing encrypts into `outgoing` and writes what the socket takes.
//!
//! Semantics follow tokio-rustls, which served the listener before: a clean close_notify
//! reads as the end of the stream, a TCP end without it as `UnexpectedEof`; a write is taken
//! whole once encrypted and `poll_flush` pushes it out; `poll_shutdown` sends close_notify
//! and then ends the TCP write side.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time (the most one read asks for).
const READ_SIZE: usize = 8 * 1024;
/// The largest TLS record on the wire (16 KiB of plaintext, 2 KiB of expansion, the header).
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// Room for a record's header, tag and padding, per record, when encrypting.
const RECORD_OVERHEAD: usize = 5 + 16 + 1 + 256;

/// Accepts TLS connections with one rustls configuration.
#[derive(Clone, Debug)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
}

impl From<Arc<ServerConfig>> for Acceptor {
    fn from(config: Arc<ServerConfig>) -> Self {
        Acceptor { config }
    }
}

impl Acceptor {
    /// Runs the handshake on `tcp`. Not bounded in time: the caller bounds it.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        // The unbuffered connection does not tell the server name the client asked for: a
        // resolver of this connection's own writes it down as the handshake chooses the
        // certificate. The configuration is a shallow copy (its parts are shared) and is let
        // go when the handshake ends.
        let sni = Arc::new(Sni {
            inner: self.config.cert_resolver.clone(),
            seen: Mutex::new(None),
        });
        let mut config = (*self.config).clone();
        config.cert_resolver = sni.clone();
        let conn = UnbufferedServerConnection::new(Arc::new(config)).map_err(invalid)?;
        let mut stream = Stream {
            tcp,
            conn,
            incoming: Vec::new(),
            received: 0,
            plain: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            close_queued: false,
            failed: false,
            server_name: None,
        };
        loop {
            if let Err(error) = stream.process(None, false) {
                // The client gets rustls's fatal alert if its socket takes it now.
                let _ = stream.tcp.try_write(&stream.outgoing[stream.sent..]);
                return Err(error);
            }
            std::future::poll_fn(|cx| stream.poll_send(cx)).await?;
            if !stream.conn.is_handshaking() {
                break;
            }
            let read = std::future::poll_fn(|cx| stream.poll_receive(cx)).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        stream.server_name = sni
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(Arc::from);
        Ok(stream)
    }
}

/// Writes down the server name of the handshake it serves, and asks the listener's resolver.
#[derive(Debug)]
struct Sni {
    inner: Arc<dyn ResolvesServerCert>,
    seen: Mutex<Option<String>>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            client_hello.server_name().map(str::to_owned);
        self.inner.resolve(client_hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

/// A server-side TLS connection over TCP (see the module documentation).
pub struct Stream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// `incoming[..received]`: ciphertext not processed yet (and beyond it, room a busy-polling
    /// read initialized).
    incoming: Vec<u8>,
    received: usize,
    /// `plain[taken..]`: decrypted and not read yet.
    plain: Vec<u8>,
    taken: usize,
    /// `outgoing[sent..]`: for the socket.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client's close_notify arrived: nothing more will be read.
    peer_closed: bool,
    /// Our close_notify is in `outgoing` (or sent).
    close_queued: bool,
    /// A TLS error ended the session (rustls has queued its alert): nothing more is processed.
    failed: bool,
    server_name: Option<Arc<str>>,
}

/// The buffer size rustls asks for when encrypting did not fit.
fn encrypt_needs(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// The buffer size rustls asks for when encoding did not fit.
fn encode_needs(error: &EncodeError) -> Option<usize> {
    match error {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// A socket read that found nothing now (or was interrupted): try again later.
fn nothing_yet(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Runs `fill` on the free end of `buf`, grown first to `at + want` bytes when smaller,
/// retrying once with the size rustls asks for; keeps what was filled.
fn fill_end<E>(
    buf: &mut Vec<u8>,
    want: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let at = buf.len();
    buf.resize(at + want, 0);
    let written = match fill(&mut buf[at..]) {
        Err(error) => match needs(&error) {
            Some(required) => {
                buf.resize(at + required, 0);
                fill(&mut buf[at..])
            }
            None => Err(error),
        },
        done => done,
    };
    match written {
        Ok(n) => {
            buf.truncate(at + n);
            Ok(())
        }
        Err(error) => {
            buf.truncate(at);
            Err(error)
        }
    }
}

impl Stream {
    /// The server name the client asked for in its ClientHello (none for IP literals).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Processes what was received; encrypts `write` and, with `close`, queues close_notify
    /// (once the connection carries data). Leaves decrypted data in `plain` and bytes for the
    /// socket in `outgoing`.
    fn process(&mut self, write: Option<&[u8]>, close: bool) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS session failed",
            ));
        }
        let processed = self.process_records(write, close);
        // rustls sends one fatal alert and must not be driven again after it.
        self.failed |= processed.is_err();
        processed
    }

    fn process_records(&mut self, mut write: Option<&[u8]>, close: bool) -> io::Result<()> {
        loop {
            let Stream {
                conn,
                incoming,
                received,
                plain,
                outgoing,
                peer_closed,
                close_queued,
                ..
            } = self;
            let status = conn.process_tls_records(&mut incoming[..*received]);
            let mut discard = status.discard;
            // Stopped: everything received is processed (or the handshake needs more).
            let stopped = match status.state {
                Err(error) => {
                    drop_front(incoming, received, discard);
                    // An alert for the client may be queued: it goes out with the next send.
                    self.queue_alert();
                    return Err(invalid(error));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    false
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    fill_end(outgoing, MAX_RECORD, |out| encode.encode(out), encode_needs)
                        .map_err(invalid)?;
                    false
                }
                // What was encoded waits in `outgoing`, ahead of anything later.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    false
                }
                Ok(ConnectionState::BlockedHandshake) => true,
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    false
                }
                Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    true
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    if let Some(data) = write.take() {
                        let records = data.len() / (16 * 1024) + 1;
                        fill_end(
                            outgoing,
                            data.len() + records * RECORD_OVERHEAD,
                            |out| traffic.encrypt(data, out),
                            encrypt_needs,
                        )
                        .map_err(invalid)?;
                    }
                    if close && !*close_queued {
                        fill_end(
                            outgoing,
                            64,
                            |out| traffic.queue_close_notify(out),
                            encrypt_needs,
                        )
                        .map_err(invalid)?;
                        *close_queued = true;
                    }
                    true
                }
                Ok(_) => {
                    // Early data is never enabled; any other state is not one this server
                    // reaches.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS state",
                    ));
                }
            };
            drop_front(&mut self.incoming, &mut self.received, discard);
            if stopped {
                return Ok(());
            }
        }
    }

    /// After a TLS error: whatever alert rustls queued goes into `outgoing`, best effort.
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let encoded = fill_end(
                        &mut self.outgoing,
                        MAX_RECORD,
                        |out| encode.encode(out),
                        |_| None,
                    );
                    if encoded.is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Writes `outgoing` until it is empty (then let go) or the socket would block.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into `incoming` once it is readable; `Ok(0)` at its end. Waits
    /// holding no buffer when nothing is pending (a busy-polling read may have kept one).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            if self.tcp.poll_read_ready(cx)?.is_pending() {
                self.release_incoming();
                return Poll::Pending;
            }
            match self.receive_now() {
                Some(result) => return Poll::Ready(result),
                // Readiness was stale: wait again.
                None => continue,
            }
        }
    }

    /// One non-blocking read into `incoming`; `None` when it would block.
    fn receive_now(&mut self) -> Option<io::Result<usize>> {
        let at = self.received;
        if at >= MAX_RECORD * 2 {
            // rustls refuses records this large long before: never buffer without bound.
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record too large",
            )));
        }
        // Room a busy-polling read left initialized is used first; otherwise the read goes
        // into spare capacity, unzeroed, with room for a whole record the first time (so a
        // 16 KiB record is one read, not a chain of grown and copied buffers).
        if self.incoming.len() - at < READ_SIZE {
            self.incoming.truncate(at);
        }
        let read = if self.incoming.len() > at {
            self.tcp.try_read(&mut self.incoming[at..])
        } else {
            if self.incoming.capacity() - at < READ_SIZE {
                self.incoming.reserve(MAX_RECORD);
            }
            self.tcp.try_read_buf(&mut self.incoming)
        };
        match read {
            Ok(n) => {
                self.received += n;
                self.release_incoming();
                Some(Ok(n))
            }
            Err(error) if nothing_yet(&error) => {
                self.release_incoming();
                None
            }
            Err(error) => Some(Err(error)),
        }
    }

    /// Lets `incoming` go when it holds nothing.
    fn release_incoming(&mut self) {
        if self.received == 0 {
            self.incoming = Vec::new();
        }
    }

    /// Copies decrypted data into `buf`; true if there was some (or the stream ended).
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.taken < self.plain.len() {
            let n = buf.remaining().min(self.plain.len() - self.taken);
            buf.put_slice(&self.plain[self.taken..self.taken + n]);
            self.taken += n;
            if self.taken == self.plain.len() {
                self.plain = Vec::new();
                self.taken = 0;
            }
            return true;
        }
        self.peer_closed
    }

    /// Reads what the socket holds now, without waiting or registering for readiness (busy
    /// polling): `None` when nothing is there yet.
    pub(crate) fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        if self.take_plain(buf) {
            return Some(Ok(()));
        }
        let at = self.received;
        if self.incoming.len() < at + READ_SIZE {
            self.incoming.resize(at + READ_SIZE, 0);
        }
        let read = (&*SockRef::from(&self.tcp)).read(&mut self.incoming[at..]);
        match read {
            // The end of TCP: the runtime's own read reports it (and a missing close_notify).
            Ok(0) => {
                self.release_incoming();
                return None;
            }
            Ok(n) => self.received += n,
            // Nothing yet: the buffer stays while the session spins, and goes when it waits.
            Err(error) if nothing_yet(&error) => return None,
            Err(error) => return Some(Err(error)),
        }
        if let Err(error) = self.process(None, false) {
            return Some(Err(error));
        }
        // Part of a record: wait, or spin again.
        self.take_plain(buf).then_some(Ok(()))
    }
}

/// Removes the first `n` of `buf[..*len]`. An emptied buffer keeps its room for the next read;
/// it is let go when the stream waits (`release_incoming`).
fn drop_front(buf: &mut Vec<u8>, len: &mut usize, n: usize) {
    if n == 0 {
        return;
    }
    if n >= *len {
        *len = 0;
        buf.clear();
    } else {
        buf.copy_within(n..*len, 0);
        *len -= n;
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            // Anything processing owes the client (a key update's answer, an alert) goes out
            // when the socket takes it; a blocked socket does not hold up the read.
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            let read = std::task::ready!(this.poll_receive(cx))?;
            if read == 0 {
                // TCP ended: whatever complete records came before it are read first.
                this.process(None, false)?;
                if this.take_plain(buf) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            this.process(None, false)?;
            this.release_incoming();
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was taken before goes first: a socket that takes nothing back-pressures.
        std::task::ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.process(Some(data), false)?;
        // Taken whole once encrypted; the socket gets what it takes now, the rest at the next
        // write or flush.
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued && !this.failed {
            // Before the handshake ends there is no close_notify to send: TCP just ends.
            this.process(None, true)?;
        }
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Acceptor, Stream};
    use crate::tls::Identity;

    /// A server stream and a tokio-rustls client over loopback TCP.
    async fn pair() -> (Stream, tokio_rustls::client::TlsStream<TcpStream>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let identity = Identity {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
            files: None,
        };
        let acceptor = Acceptor::from(identity.server_config().expect("config"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("client handshake")
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            acceptor.accept(tcp).await.expect("server handshake")
        };
        let (client, server) = tokio::join!(connect, accept);
        (server, client)
    }

    fn holds_nothing(stream: &Stream) -> bool {
        stream.incoming.capacity() == 0
            && stream.plain.capacity() == 0
            && stream.outgoing.capacity() == 0
    }

    #[tokio::test]
    async fn data_both_ways_and_no_buffer_held_between_messages() {
        let (mut server, mut client) = pair().await;
        assert_eq!(server.server_name(), Some("localhost"));
        // The client (rustls's defaults) offers AES-256-GCM first; the server's order decides.
        assert_eq!(
            client
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        for size in [1, 64, 20_000, 100_000] {
            let message = vec![b'x'; size];
            client.write_all(&message).await.expect("client write");
            client.flush().await.expect("client flush");
            let mut got = vec![0; size];
            server.read_exact(&mut got).await.expect("server read");
            assert_eq!(got, message);
            server.write_all(&message).await.expect("server write");
            server.flush().await.expect("server flush");
            client.read_exact(&mut got).await.expect("client read");
            assert_eq!(got, message);
            // Everything read and written: an idle session holds no TLS buffer.
            assert!(holds_nothing(&server), "after {size} bytes");
        }
    }

    #[tokio::test]
    async fn close_notify_ends_reads_cleanly_and_a_bare_tcp_end_does_not() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"last words").await.expect("write");
        client.shutdown().await.expect("close_notify");
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.expect("a clean end");
        assert_eq!(all, b"last words");
        server.shutdown().await.expect("server close_notify");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("the client reads a clean end");
        assert!(rest.is_empty());

        let (mut server, mut client) = pair().await;
        // One round trip, so the client has read the session tickets: a socket closed with
        // unread data sends a reset instead of the end of the stream.
        server.write_all(b"hi").await.expect("write");
        server.flush().await.expect("flush");
        let mut hi = [0; 2];
        client.read_exact(&mut hi).await.expect("read");
        let (tcp, _) = client.into_inner();
        drop(tcp);
        let mut buf = [0; 16];
        let error = server.read(&mut buf).await.expect_err("no close_notify");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
