//! Backends the proxy relays to: an instrumented WebSocket echo server and a raw one that
//! misbehaves on purpose.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::within;

/// What the echo backend saw of one handshake.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A real WebSocket echo backend that records handshakes and the close frames it receives.
/// Text commands: `close:<code>:<reason>` makes it close with that code, `drop` makes it drop
/// TCP without a close frame, `burst:<n>` sends n numbered messages; anything else is echoed.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    /// The close code of every close frame the backend received (None for a close without
    /// code, 1006 for a connection that ended without one).
    pub closes: mpsc::UnboundedReceiver<Option<u16>>,
    /// Pings the backend received (it answers each).
    pub pings: Arc<AtomicUsize>,
    /// Every whole text and binary message the backend received, in order.
    pub received: Arc<Mutex<Vec<Message>>>,
    task: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoBackend {
    /// `protocols`: subprotocols it supports; it picks the first one the client offers.
    pub async fn start(protocols: &[&str]) -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let requests: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let (closes_tx, closes) = mpsc::unbounded_channel();
        let pings: Arc<AtomicUsize> = Arc::default();
        let pinged = pings.clone();
        let received: Arc<Mutex<Vec<Message>>> = Arc::default();
        let record = received.clone();
        let supported: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, supported, closes_tx, pinged, record) = (
                    seen.clone(),
                    supported.clone(),
                    closes_tx.clone(),
                    pinged.clone(),
                    record.clone(),
                );
                tokio::spawn(async move {
                    #[allow(clippy::result_large_err)] // tungstenite's callback signature
                    let callback = |request: &Request, mut response: Response| {
                        seen.lock().expect("lock").push(SeenRequest {
                            uri: request.uri().to_string(),
                            headers: request
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (
                                        n.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect(),
                        });
                        let offered = request
                            .headers()
                            .get_all("sec-websocket-protocol")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .flat_map(|v| v.split(','))
                            .map(|p| p.trim().to_owned())
                            .find(|p| supported.contains(p));
                        if let Some(p) = offered {
                            response.headers_mut().insert(
                                "sec-websocket-protocol",
                                HeaderValue::from_str(&p).expect("token"),
                            );
                        }
                        Ok(response)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                        return;
                    };
                    echo(ws, closes_tx, pinged, record).await;
                });
            }
        });
        EchoBackend {
            addr,
            requests,
            closes,
            pings,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The text and binary messages received so far.
    pub fn received(&self) -> Vec<Message> {
        self.received.lock().expect("lock").clone()
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// The next close the backend received.
    pub async fn next_close(&mut self) -> Option<u16> {
        within(self.closes.recv())
            .await
            .expect("backend task alive")
    }
}

#[allow(clippy::collapsible_match)] // the message moves into `send`, so no guard can test it
async fn echo(
    mut ws: WebSocketStream<TcpStream>,
    closes: mpsc::UnboundedSender<Option<u16>>,
    pings: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Message>>>,
) {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            _ => {
                let _ = closes.send(Some(1006));
                return;
            }
        };
        if message.is_text() || message.is_binary() {
            received.lock().expect("lock").push(message.clone());
        }
        match message {
            Message::Close(frame) => {
                let _ = closes.send(frame.map(|f| u16::from(f.code)));
                // Let tungstenite send its reply.
                let _ = ws.flush().await;
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Message::Text(text) if text.starts_with("close:") => {
                let mut parts = text.splitn(3, ':').skip(1);
                let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_owned();
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Message::Text(text) if text.as_str() == "drop" => return,
            Message::Text(text) if text.starts_with("blob:") => {
                // blob:<count>:<size>: binary messages as fast as the proxy takes them.
                let mut parts = text[5..].split(':');
                let count: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let size: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let blob = vec![0x5au8; size];
                for _ in 0..count {
                    if ws.send(Message::binary(blob.clone())).await.is_err() {
                        break;
                    }
                }
            }
            Message::Text(text) if text.starts_with("burst:") => {
                let n: usize = text[6..].parse().unwrap_or(0);
                for i in 0..n {
                    if ws.feed(Message::text(i.to_string())).await.is_err() {
                        return;
                    }
                }
                let _ = ws.flush().await;
            }
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            Message::Ping(_) => {
                pings.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Accepts one connection on `listener` and answers its WebSocket upgrade by hand, leaving
/// the stream to the caller at the first frame (a backend that misbehaves as the test says).
pub async fn accept_upgrade(listener: &TcpListener) -> TcpStream {
    let (mut tcp, key) = read_upgrade(listener).await;
    answer_upgrade(&mut tcp, &key).await;
    tcp
}

/// Accepts one connection on `listener` and reads its upgrade request's head; returns the
/// stream and the request's `Sec-WebSocket-Key` (answer it with [`answer_upgrade`]).
pub async fn read_upgrade(listener: &TcpListener) -> (TcpStream, String) {
    let (mut tcp, _) = within(listener.accept()).await.expect("accept");
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(tcp.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "closed before the request head");
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a Sec-WebSocket-Key");
    (tcp, key)
}

/// Answers an upgrade request whose key was `key` with a 101.
pub async fn answer_upgrade(tcp: &mut TcpStream, key: &str) {
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    tcp.write_all(answer.as_bytes()).await.expect("101");
}

/// A backend that answers every connection with the same raw bytes, counting connections
/// and recording what it was sent.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    /// `answer` is written after the request head is read; `None` never answers.
    pub async fn start(answer: Option<Vec<u8>>) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let seen = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let index = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(got);
                        seen.len() - 1
                    };
                    match answer {
                        Some(answer) => {
                            let _ = tcp.write_all(&answer).await;
                            let _ = tcp.shutdown().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                    // Record anything sent after the answer (e.g. smuggled bytes).
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.lock().expect("lock")[index].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        RawBackend {
            addr,
            received,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}
