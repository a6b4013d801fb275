//! A session read and written frame by frame after tungstenite's upgrade, so the soak sees the
//! close code on the wire. tungstenite 0.30 does not know 1014 (Bad Gateway, in the IANA
//! registry since 2016): it hands the application a 1002 "Protocol violation" instead, which
//! would hide exactly what the backend-restart phase checks.
//!
//! The upgrade (TCP, TLS, token, Origin, 101) is the bench client's; afterwards the
//! `WebSocketStream` is never polled again and the frames go through its inner stream. That
//! is sound here because the proxy sends nothing after the 101 before the client speaks, so
//! tungstenite's handshake buffer holds no frame bytes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

use crate::client::Client;
use crate::net::{OpenError, Stream};

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// A normal closure (RFC 6455 7.4.1).
const NORMAL: u16 = 1000;
/// A close frame without a code is reported as 1005 (RFC 6455 7.1.5).
const NO_STATUS: u16 = 1005;
/// How long a closing handshake may take before the connection is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Frames larger than this are not expected from the echo backend; the session ends.
const MAX_FRAME: u64 = 1 << 20;

/// What the next frames of a session brought.
pub enum Read {
    /// A complete data message of this length.
    Data(usize),
    /// The other side closed with this code (`None`: no close frame, or an error).
    Closed(Option<u16>),
}

pub struct Session {
    ws: WebSocketStream<Stream>,
    buf: Vec<u8>,
    mask: u32,
}

impl Session {
    /// Upgrades with a fresh token (the bench client's handshake).
    pub async fn open(client: &Client) -> Result<Session, OpenError> {
        let ws = client.open().await?;
        Ok(Session {
            ws,
            buf: Vec::with_capacity(256),
            mask: 0x9e37_79b9,
        })
    }

    fn io(&mut self) -> &mut Stream {
        self.ws.get_mut()
    }

    /// One masked frame with FIN set.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        // Any key will do for the proxy; it only has to change (RFC 6455 5.3).
        self.mask = self
            .mask
            .wrapping_mul(0x0101_0101)
            .wrapping_add(0x6d2b_79f5);
        let key = self.mask.to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        self.io().write_all(&frame).await
    }

    /// The next complete data message, answering pings; on a close frame the close is echoed
    /// and the end of the stream awaited (bounded).
    pub async fn read(&mut self) -> Read {
        let mut message = 0;
        loop {
            let Ok(Some((fin, opcode, payload))) = self.frame().await else {
                return Read::Closed(None);
            };
            match opcode {
                TEXT | BINARY | CONTINUATION => {
                    message += payload.len();
                    if fin {
                        return Read::Data(message);
                    }
                }
                CLOSE => {
                    let code = match payload.get(..2) {
                        Some(&[high, low]) => u16::from_be_bytes([high, low]),
                        _ => NO_STATUS,
                    };
                    let echo = payload.get(..2).unwrap_or_default().to_vec();
                    let finish = async {
                        self.send(CLOSE, &echo).await?;
                        while self.frame().await?.is_some() {}
                        io::Result::Ok(())
                    };
                    drop(tokio::time::timeout(CLOSE_WAIT, finish).await);
                    return Read::Closed(Some(code));
                }
                PING if self.send(PONG, &payload).await.is_err() => return Read::Closed(None),
                _ => {} // a pong, or a ping answered
            }
        }
    }

    /// Sends a normal close and waits (bounded) for the proxy's close; true when it came.
    pub async fn close(mut self) -> bool {
        let polite = async {
            self.send(CLOSE, &NORMAL.to_be_bytes()).await?;
            while let Some((_, opcode, _)) = self.frame().await? {
                if opcode == CLOSE {
                    self.io().shutdown().await?;
                    return Ok(true);
                }
            }
            Ok::<_, io::Error>(false)
        };
        matches!(tokio::time::timeout(CLOSE_WAIT, polite).await, Ok(Ok(true)))
    }

    /// One frame: (FIN, opcode, payload); `None` at the end of the stream.
    async fn frame(&mut self) -> io::Result<Option<(bool, u8, Vec<u8>)>> {
        if !self.fill(2).await? {
            return Ok(None);
        }
        let (first, second) = (self.buf[0], self.buf[1]);
        let (fin, opcode, masked) = (first & 0x80 != 0, first & 0x0f, second & 0x80 != 0);
        let (len, mut at) = match second & 0x7f {
            126 => {
                self.need(4).await?;
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                self.need(10).await?;
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(len), 10)
            }
            len => (u64::from(len), 2),
        };
        if len > MAX_FRAME {
            return Err(io::Error::other("frame too large"));
        }
        let mut key = None;
        if masked {
            self.need(at + 4).await?;
            key = Some([
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ]);
            at += 4;
        }
        let end = at + len as usize;
        self.need(end).await?;
        let mut payload: Vec<u8> = self.buf[at..end].to_vec();
        if let Some(key) = key {
            payload
                .iter_mut()
                .zip(key.iter().cycle())
                .for_each(|(b, k)| *b ^= k);
        }
        self.buf.drain(..end);
        Ok(Some((fin, opcode, payload)))
    }

    /// Reads until `len` bytes are buffered; an end of stream inside a frame is an error.
    async fn need(&mut self, len: usize) -> io::Result<()> {
        if self.fill(len).await? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Reads until `len` bytes are buffered; `false` if the stream ended first.
    async fn fill(&mut self, len: usize) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        while self.buf.len() < len {
            let n = self.ws.get_mut().read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(true)
    }
}

/// Holds an open session: answers pings until `go` fires, then closes it politely. `Ok(())`
/// when closed as told and the proxy answered the close; `Err(code)` if the session ended
/// first, `Err(None)` too when the proxy left the close unanswered.
pub async fn park(
    mut session: Session,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Option<u16>> {
    let ended = async {
        loop {
            if let Read::Closed(code) = session.read().await {
                return code;
            }
        }
    };
    tokio::select! {
        code = ended => return Err(code),
        _ = go.wait_for(|go| *go) => {}
    }
    if session.close().await {
        Ok(())
    } else {
        Err(None)
    }
}
