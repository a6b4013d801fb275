//! Clients of the proxy: TLS connections, WSS sessions through tungstenite, raw requests, and
//! a WebSocket session spoken by hand with masked frames.

use std::net::SocketAddr;

use futures_util::StreamExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Pki, TestProxy, leak, within};

/// A TLS connection to a proxy whose certificate `pki` issued.
pub async fn tls_connect(addr: SocketAddr, pki: &Pki) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("name");
    tls_connect_as(addr, pki, name).await
}

/// A TLS connection that names `name` to the proxy (an IP address sends no SNI).
pub async fn tls_connect_as(
    addr: SocketAddr,
    pki: &Pki,
    name: ServerName<'static>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    within(tokio_rustls::TlsConnector::from(pki.client_config()).connect(name, tcp))
        .await
        .expect("TLS handshake")
}

/// Sends raw bytes on `stream` and returns what comes back: everything until the peer closes
/// (or resets), or just the head of a 101 (the session then stays open).
pub async fn exchange<S>(stream: &mut S, request: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if answer.starts_with(b"HTTP/1.1 101 ") && answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    leak::observe("response", &answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A WSS session to `path` on `addr`, with extra request headers.
pub async fn wss_connect(
    addr: SocketAddr,
    pki: &Pki,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        WebSocketStream<TlsStream<TcpStream>>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let url = format!("wss://localhost:{}{path}", addr.port());
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let tls = tls_connect(addr, pki).await;
    let result = within(tokio_tungstenite::client_async(request, tls)).await;
    match &result {
        Ok((_, response)) => leak::observe("response", format!("{response:?}").as_bytes()),
        Err(WsError::Http(response)) => {
            // The body prints as a list of numbers: it is searched as bytes.
            let head = format!("{:?} {:?}", response.status(), response.headers());
            leak::observe("response", head.as_bytes());
            if let Some(body) = response.body() {
                leak::observe("response", body);
            }
        }
        Err(_) => {}
    }
    result
}

/// A valid upgrade request for `path`, followed by `extra` header lines.
pub fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Next data or close message from a client session.
pub async fn next(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Message {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => {
                leak::observe("message", format!("{message:?}").as_bytes());
                return message;
            }
            other => panic!("session ended unexpectedly: {other:?}"),
        }
    }
}

/// The close code a client session receives next.
pub async fn close_code(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Option<u16> {
    match next(ws).await {
        Message::Close(frame) => frame.map(|f| u16::from(f.code)),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A WebSocket session spoken by hand, to see frames exactly as they are on the wire
/// (tungstenite rewrites close codes it does not know, such as 1014, to 1002).
pub struct RawSession {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl TestProxy {
    /// Sends `request` and returns the response head and, on a 101, the open session.
    pub async fn raw_session(&self, request: &[u8]) -> (String, RawSession) {
        let mut tls = self.tls().await;
        tls.write_all(request).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = within(tls.read(&mut chunk)).await.expect("read head");
            assert!(
                n > 0,
                "closed before the response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        leak::observe("response", &buf);
        (
            head,
            RawSession {
                tls,
                buf: buf[end..].to_vec(),
            },
        )
    }
}

/// A masked client frame: `first` is the FIN, reserved bits and opcode byte; the payload is
/// under 64 KiB.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![first];
    match u8::try_from(payload.len()) {
        Ok(len) if len < 126 => frame.push(0x80 | len),
        _ => {
            let len = u16::try_from(payload.len()).expect("a payload under 64 KiB");
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

impl RawSession {
    /// The TLS stream, and what was read past the response head and not yet taken as frames.
    pub fn into_parts(self) -> (TlsStream<TcpStream>, Vec<u8>) {
        (self.tls, self.buf)
    }

    /// Sends bytes as they are (hand-made frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.expect("write");
    }

    /// Sends bytes on the TCP connection under the TLS session, as they are (a broken peer).
    pub async fn send_under_tls(&mut self, bytes: &[u8]) {
        self.tls.get_mut().0.write_all(bytes).await.expect("write");
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(&masked_frame(0x81, text.as_bytes())).await;
    }

    async fn fill(&mut self, n: usize) {
        let mut chunk = [0u8; 8192];
        while self.buf.len() < n {
            let read = within(self.tls.read(&mut chunk)).await.expect("read frame");
            assert!(read > 0, "connection closed mid-frame");
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads one (unmasked, server-sent) frame: opcode and payload.
    pub async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        self.fill(2).await;
        let opcode = self.buf[0] & 0x0f;
        let (len, header) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            len => (len as usize, 2),
        };
        self.fill(header + len).await;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        leak::observe("frame", &payload);
        (opcode, payload)
    }

    /// Reads what the proxy sends until its connection ends (EOF or an error): the bytes
    /// not yet taken as frames, then the rest.
    pub async fn read_to_end(&mut self, into: &mut Vec<u8>) {
        into.append(&mut self.buf);
        let mut chunk = [0u8; 8192];
        while let Ok(n) = self.tls.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame and returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.read_frame().await;
            if opcode == 0x8 {
                assert!(payload.len() >= 2, "close frame without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}
