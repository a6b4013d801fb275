//! Real parts for end-to-end tests: a generated CA and server certificate, an instrumented
//! WebSocket echo backend, misbehaving backends, the proxy itself on 127.0.0.1:0, and TLS
//! clients (a WebSocket one and a raw one for malformed requests).
#![allow(dead_code)]

mod jwt;
pub mod leak;
pub use jwt::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use wsgate_core::metrics::Metrics;
use wsgate_core::server::Reloader;
use wsgate_core::{Config, Server};

/// Upper bound for any single wait in a test: reached only when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("timed out waiting")
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateDer<'static>,
    /// The CA certificate alone, as PEM.
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).expect("write cert");
        std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write key");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        Pki {
            ca_path,
            ca: ca.der().clone(),
            dir,
            cert_path,
            key_path,
        }
    }

    /// A TLS server configuration with this PKI's certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        wsgate_core::tls::Identity::from_pem_files(&self.cert_path, &self.key_path)
            .and_then(|identity| identity.server_config())
            .expect("server config")
    }

    /// A TLS client configuration that trusts this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

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
        let supported: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, supported, closes_tx, pinged) = (
                    seen.clone(),
                    supported.clone(),
                    closes_tx.clone(),
                    pinged.clone(),
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
                    echo(ws, closes_tx, pinged).await;
                });
            }
        });
        EchoBackend {
            addr,
            requests,
            closes,
            pings,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
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
) {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            _ => {
                let _ = closes.send(Some(1006));
                return;
            }
        };
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
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    tcp.write_all(answer.as_bytes()).await.expect("101");
    tcp
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

/// The proxy, running in this process on 127.0.0.1:0 with its admin listener, a provider
/// `test` whose JWKS server the test controls, and a valid token for it.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    pub jwks: JwksServer,
    /// A valid token for `alice`.
    pub token: String,
    /// The configuration as written to `config_path` (rewrite it and reload to change it).
    pub yaml: String,
    pub config_path: PathBuf,
    /// What `/metrics` exposes, read when the proxy is dropped (no socket needed).
    metrics: Arc<Metrics>,
    /// Reloads the configuration file in place, and sees which configuration is alive.
    pub reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The whole-suite leakage check: this proxy's metrics are scanned, and any leak recorded
/// anywhere in the run so far fails the test (see [`leak`]).
impl Drop for TestProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        leak::observe("metrics", self.metrics.encode().as_bytes());
        leak::assert_clean();
    }
}

/// How a [`TestProxy`] starts: YAML added to provider `test` and under `listen:`, the list
/// under `routes:`, whether to wait for the keys, and the JWKS server's keys and mode.
pub struct Setup {
    /// Top-level YAML keys (such as `trusted_proxies`).
    pub top_extra: String,
    /// Indented YAML added under `admin:` (such as `token`).
    pub admin_extra: String,
    /// Reload when the configuration or certificate files change.
    pub watch: bool,
    pub provider_extra: String,
    pub listen_extra: String,
    pub routes: String,
    pub ready: bool,
    pub jwks_keys: Vec<TestKey>,
    pub jwks_mode: Mode,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            top_extra: String::new(),
            admin_extra: String::new(),
            watch: false,
            provider_extra: String::new(),
            listen_extra: String::new(),
            routes: String::new(),
            ready: true,
            // rsa-1 and ec-1; rsa-2 is held back for rotation tests.
            jwks_keys: vec![keys()[0].clone(), keys()[2].clone()],
            jwks_mode: Mode::Serve,
        }
    }
}

/// A route `name` on `path` to `backend`, authenticated by provider `test`, any origin.
pub fn route(name: &str, path: &str, backend: &str) -> String {
    format!(
        "  - name: {name}\n    match:\n      path: {path}\n    backend: {backend}\n    auth:\n      provider: test\n    origins: any\n"
    )
}

impl TestProxy {
    /// Starts the proxy as `setup` says.
    pub async fn start_full(setup: Setup) -> TestProxy {
        let Setup {
            top_extra,
            admin_extra,
            watch,
            provider_extra,
            listen_extra,
            routes,
            ready,
            jwks_keys,
            jwks_mode,
        } = setup;
        leak::install();
        let pki = Pki::new();
        let jwks = JwksServer::start(&jwks_keys).await;
        jwks.set_mode(jwks_mode);
        let yaml = format!(
            "{top_extra}listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\n{listen_extra}admin:\n  address: 127.0.0.1:0\n{admin_extra}\
             providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {}\n    audiences: [{AUDIENCE}]\n    algorithms: [RS256, ES256]\n{provider_extra}\
             routes:\n{routes}",
            pki.cert_path.display(),
            pki.key_path.display(),
            jwks.url,
        );
        let config_path = pki.dir.path().join("wsgate.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        let config = Config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        let server = Server::bind(config)
            .await
            .expect("bind proxy")
            .with_source(config_path.clone());
        let server = if watch { server.watching() } else { server };
        let (addr, admin, metrics) = (server.local_addr(), server.admin_addr(), server.metrics());
        let reloader = server.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let token = sign(&keys()[0], &claims("alice"));
        let proxy = TestProxy {
            addr,
            admin,
            yaml,
            config_path,
            pki,
            jwks,
            token,
            metrics,
            reloader,
            stop: Some(stop),
            task: Some(task),
        };
        if ready {
            proxy.wait_ready().await;
        }
        proxy
    }

    pub async fn start_with(listen_extra: &str, routes: &str) -> TestProxy {
        TestProxy::start_full(Setup {
            listen_extra: listen_extra.to_owned(),
            routes: routes.to_owned(),
            ..Setup::default()
        })
        .await
    }

    /// One route `echo` on `/echo` to `backend`.
    pub async fn start(backend: &str) -> TestProxy {
        TestProxy::start_with("", &route("echo", "/echo", backend)).await
    }

    /// Waits until `/readyz` answers 200: the provider's keys are loaded.
    pub async fn wait_ready(&self) {
        within(async {
            while http_get(self.admin, "/readyz").await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// The header line that carries the valid token, for raw requests.
    pub fn bearer(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }

    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Drains and joins the server task, re-raising any panic.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take()
            && let Err(error) = within(task).await
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    pub async fn tls(&self) -> TlsStream<TcpStream> {
        tls_connect(self.addr, &self.pki).await
    }

    /// Opens a WSS session to `path` with extra request headers.
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<
        (
            WebSocketStream<TlsStream<TcpStream>>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        WsError,
    > {
        wss_connect(self.addr, &self.pki, path, headers).await
    }

    /// A WSS session with the valid token in the Authorization header.
    pub async fn connect(&self, path: &str) -> WebSocketStream<TlsStream<TcpStream>> {
        let bearer = format!("Bearer {}", self.token);
        self.connect_with(path, &[("authorization", &bearer)])
            .await
            .expect("upgrade through the proxy")
            .0
    }

    /// Sends raw bytes over TLS and returns what the proxy answers: everything until it
    /// closes, or just the head of a 101 (the session then stays open).
    pub async fn raw(&self, request: &[u8]) -> String {
        exchange(&mut self.tls().await, request).await
    }

    /// The Prometheus exposition from the admin listener.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }
}

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

/// Status code of a raw HTTP answer.
pub fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// An admin API call with an optional bearer token and JSON body; returns status and body.
pub async fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(admin, &request).await
}

/// A plain HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http(addr, &request).await
}

/// Sends one plain HTTP/1.1 request (with `Connection: close`); returns status and body.
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = within(TcpStream::connect(addr)).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    within(tcp.read_to_end(&mut answer)).await.expect("read");
    leak::observe("response", &answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status(&answer), body)
}

/// The value of one sample line in a Prometheus exposition, 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
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

/// Waits until a metric series reaches `value`. Counters that are written when a session's
/// closing handshake finishes have no other signal the test could wait on.
pub async fn wait_for_sample(proxy: &TestProxy, series: &str, value: f64) {
    within(async {
        loop {
            let metrics = proxy.metrics().await;
            if sample(&metrics, series) == value {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // While a capture is this thread's subscriber, the suite-wide one sees nothing of it:
        // the leak search gets every line here too.
        leak::observe("logs", bytes);
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps a [`LogCapture`] subscribed; dropping it ends the capture.
pub struct LogGuard {
    _default: tracing::subscriber::DefaultGuard,
    _bystander: tracing::Dispatch,
}

impl LogCapture {
    /// Captures every event at TRACE, as text without colours, on this thread until the guard
    /// drops (so the test must run on a `current_thread` runtime for the proxy's tasks to log
    /// here too).
    pub fn start() -> (LogCapture, LogGuard) {
        // tracing-core caches each call site's interest. While only one dispatcher exists it
        // asks the *registering thread's* default, so a call site first reached by a test on
        // another thread (no subscriber) would be cached as "never" and vanish from this
        // capture. A second live dispatcher makes it ask every dispatcher instead.
        let bystander = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let capture = LogCapture::default();
        let writer = capture.clone();
        // The suite-wide capture's filter: the tests' own WebSocket clients trace their requests.
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_filter(leak::filter()),
        );
        let guard = LogGuard {
            _default: tracing::subscriber::set_default(subscriber),
            _bystander: bystander,
        };
        (capture, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}
