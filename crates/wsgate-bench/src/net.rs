//! The client side of every scenario: one target URL (`ws://` or `wss://` on loopback), a
//! TLS 1.3 client that never resumes a session, and the WebSocket upgrade with the headers a
//! scenario asks for. A refusal keeps its HTTP status so the checks can report it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error as WsError};

/// Messages in these scenarios are at most 16 KiB: small buffers keep the client's own memory
/// and cache footprint low while 9,000 sessions are open.
const READ_BUFFER: usize = 4 * 1024;

/// Where the load goes.
pub struct Target {
    uri: String,
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// The headers of one upgrade request.
#[derive(Default, Clone)]
pub struct Upgrade {
    pub bearer: Option<String>,
    pub origin: Option<String>,
}

/// Why an upgrade did not end in a WebSocket.
#[derive(Debug)]
pub enum OpenError {
    /// The server answered with this status instead of 101.
    Refused(u16),
    /// No HTTP answer: connect, TLS or protocol failure.
    Failed(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Refused(status) => write!(f, "refused with HTTP {status}"),
            OpenError::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl Target {
    /// `url` must name a loopback address; `ca` is required for `wss://`.
    pub fn new(url: &str, ca: Option<&Path>) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("while parsing {url}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => bail!("{url}: the URL must start with ws:// or wss://"),
        };
        let host = uri.host().context("the URL has no host")?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let addr = resolve_loopback(host, port)?;
        let tls = if secure {
            let ca = ca.context("a wss:// URL needs --ca (the CA certificate to trust)")?;
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .with_context(|| format!("{host} is not a valid TLS server name"))?;
            Some((TlsConnector::from(Arc::new(client_config(ca)?)), name))
        } else {
            None
        };
        Ok(Target {
            uri: url.to_owned(),
            addr,
            tls,
        })
    }

    /// TCP connect, TLS handshake when `wss://`, then the upgrade.
    pub async fn open(&self, upgrade: &Upgrade) -> Result<WebSocketStream<Stream>, OpenError> {
        let failed = |e: &dyn fmt::Display| OpenError::Failed(e.to_string());
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| failed(&e))?;
        tcp.set_nodelay(true).map_err(|e| failed(&e))?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| failed(&e))?;
                Stream::Tls(Box::new(tls))
            }
        };
        let request = self.request(upgrade).map_err(|e| failed(&e))?;
        match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await
        {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Http(response)) => Err(OpenError::Refused(response.status().as_u16())),
            Err(error) => Err(failed(&error)),
        }
    }

    fn request(
        &self,
        upgrade: &Upgrade,
    ) -> Result<tungstenite::handshake::client::Request, WsError> {
        let mut request = self.uri.as_str().into_client_request()?;
        let headers = request.headers_mut();
        if let Some(token) = &upgrade.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| WsError::HttpFormat(e.into()))?;
            headers.insert(header::AUTHORIZATION, value);
        }
        if let Some(origin) = &upgrade.origin {
            let value = HeaderValue::from_str(origin).map_err(|e| WsError::HttpFormat(e.into()))?;
            headers.insert(header::ORIGIN, value);
        }
        Ok(request)
    }
}

/// Small buffers; messages are written out at once (one message in flight per connection).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// Refuses anything but loopback: this harness only ever loads the local machine.
fn resolve_loopback(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .with_context(|| format!("while resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "{host} resolves to {addr}, which is not loopback: this harness only targets 127.0.0.0/8 or ::1"
        );
    }
    Ok(addr)
}

/// TLS 1.3 only, X25519 only (what HAProxy and nginx with OpenSSL 3.0 also negotiate, so every
/// target does the same key exchange), ALPN http/1.1, and no resumption: every connection
/// pays for a full handshake.
fn client_config(ca: &Path) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("while reading {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("while reading {}", ca.display()))?)
            .context("while adding the CA")?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("while configuring TLS 1.3")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A plain or TLS client stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The negotiated TLS cipher suite and key exchange, for the check report.
    pub fn tls_summary(&self) -> Option<String> {
        let Stream::Tls(tls) = self else { return None };
        let (_, connection) = tls.get_ref();
        let suite = connection.negotiated_cipher_suite()?;
        let group = connection
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default();
        Some(format!(
            "{:?} {:?} {group}",
            connection.protocol_version()?,
            suite.suite()
        ))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
