//! `wsgate demo`: everything embedded and on loopback. A fresh self-signed certificate, a
//! dev token issuer, a WebSocket echo backend, and the proxy in front of it; the demo then
//! proves the path with a real WSS client (with a token, and refused without one) before it
//! hands over to the user.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::config::{
    self, Admin, Algorithm, Auth, Backend, Config, Limits, Listen, OnExpiry, Origins, Provider,
    Route, Timeouts,
};
use crate::issuer::{self, DevIssuer};
use crate::origin::Pattern;
use crate::server::{self, Server};
use crate::tls::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot generate the demo certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("cannot write the demo certificate: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Server(#[from] server::Error),
    #[error("the demo's own WSS client failed: {0}")]
    SelfCheck(String),
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
pub struct SelfSigned {
    pub identity: Identity,
    pub cert_pem: String,
}

pub fn self_signed() -> Result<SelfSigned, rcgen::Error> {
    let rcgen::CertifiedKey { cert, signing_key } = generate()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        identity: Identity {
            chain: vec![cert.der().clone()],
            key,
            files: None,
        },
    })
}

fn generate() -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, rcgen::Error> {
    rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
}

/// Writes a fresh [`self_signed`] pair as `server.crt` and `server.key` into `dir`, unless
/// both already exist (a restarted stack keeps the certificate the browser accepted).
pub fn write_self_signed(dir: &Path) -> Result<(), Error> {
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    if cert_path.is_file() && key_path.is_file() {
        tracing::info!(dir = %dir.display(), "kept the existing server.crt and server.key");
        return Ok(());
    }
    let rcgen::CertifiedKey { cert, signing_key } = generate()?;
    std::fs::create_dir_all(dir)?;
    let mut key = std::fs::OpenOptions::new();
    key.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut key, 0o600);
    std::io::Write::write_all(
        &mut key.open(&key_path)?,
        signing_key.serialize_pem().as_bytes(),
    )?;
    std::fs::write(&cert_path, cert.pem())?;
    tracing::info!(dir = %dir.display(), "wrote a self-signed server.crt and server.key for localhost");
    Ok(())
}

/// `wsgate echo`: the [`echo_backend`] on `listen` until `shutdown` completes.
pub async fn echo(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "WebSocket echo backend (plain ws://)");
    tokio::select! {
        () = echo_backend(listener) => {}
        () = shutdown => {}
    }
    Ok(())
}

/// A WebSocket echo server: text and binary come back as they were; closes are answered.
pub async fn echo_backend(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Runs the demo until `shutdown` completes.
pub async fn run(shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let cert = self_signed()?;
    let dir = std::env::temp_dir().join(format!("wsgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_path = dir.join("demo-ca.crt");
    std::fs::write(&ca_path, &cert.cert_pem)?;
    let root = cert.identity.chain[0].clone();

    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(echo_backend(echo));

    let issuer_listener = match TcpListener::bind("127.0.0.1:8080").await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let issuer_addr = issuer_listener.local_addr()?;
    let issuer_url = format!("http://127.0.0.1:{}/", issuer_addr.port());
    let issuer = Arc::new(
        DevIssuer::generate(&issuer_url, AUDIENCE).map_err(|e| Error::SelfCheck(e.to_string()))?,
    );

    let server = bind_preferring(cert.identity, echo_addr, issuer_addr).await?;
    let addr = server.local_addr();
    let admin = server.admin_addr();
    let running = tokio::spawn(server.run(shutdown));
    let url = format!("wss://localhost:{}/echo", addr.port());
    tokio::spawn(issuer.clone().serve(
        issuer_listener,
        Arc::from(issuer::page(&url, Some(config::DEFAULT_REFRESH_PREFIX))),
    ));

    wait_ready(admin).await?;
    let mint = |ttl| {
        issuer
            .token("alice", Duration::from_secs(ttl))
            .map_err(|e| Error::SelfCheck(e.to_string()))
    };
    let tokens = Tokens {
        first: mint(60)?,
        renewal: mint(120)?,
    };
    let (echoed, renewed) = self_check(addr, root.clone(), &url, Some(&tokens)).await?;
    let refused = match self_check(addr, root, &url, None).await {
        Err(Error::SelfCheck(why)) => why,
        Ok(_) => {
            return Err(Error::SelfCheck(
                "a session without a token was accepted".into(),
            ));
        }
        Err(other) => return Err(other),
    };
    print_instructions(&Shown {
        url: &url,
        addr,
        admin,
        issuer: issuer_addr,
        ca: &ca_path,
        echoed: &echoed,
        renewed: &renewed,
        refused: &refused,
    });
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

const AUDIENCE: &str = "wsgate-demo";

/// Waits (bounded) until the proxy has fetched the issuer's keys.
async fn wait_ready(admin: SocketAddr) -> Result<(), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..100 {
        if let Ok(mut tcp) = TcpStream::connect(admin).await {
            let _ = tcp
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::SelfCheck(
        "the proxy did not become ready within 5 s".into(),
    ))
}

/// The usual ports when free (8443, 9090), otherwise any free port.
async fn bind_preferring(
    identity: Identity,
    echo: SocketAddr,
    issuer: SocketAddr,
) -> Result<Server, server::Error> {
    let identity = Arc::new(identity);
    let issuer_url = format!("http://127.0.0.1:{}/", issuer.port());
    let jwks_url = format!("{issuer_url}.well-known/jwks.json");
    let page_origins = [
        format!("http://127.0.0.1:{}", issuer.port()),
        format!("http://localhost:{}", issuer.port()),
    ];
    let patterns: Vec<Pattern> = page_origins
        .iter()
        .filter_map(|o| Pattern::parse(o).ok())
        .collect();
    let config = |public: u16, admin: u16| Config {
        listen: Listen {
            address: SocketAddr::from(([127, 0, 0, 1], public)),
            tls: identity.clone(),
            handshake_timeout: config::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(2),
            busy_poll: config::DEFAULT_BUSY_POLL,
            ipv6_prefix: config::DEFAULT_IPV6_PREFIX,
            max_pending_per_ip: config::DEFAULT_MAX_PENDING_PER_IP,
        },
        trusted_proxies: Vec::new(),
        cluster: None,
        admin: Admin {
            address: SocketAddr::from(([127, 0, 0, 1], admin)),
            token: None,
        },
        providers: vec![Provider {
            name: "dev".to_owned(),
            issuer: issuer_url.clone(),
            jwks_url: reqwest::Url::parse(&jwks_url).expect("a URL built from an address parses"),
            audiences: vec![AUDIENCE.to_owned()],
            algorithms: vec![Algorithm::ES256],
            leeway: config::DEFAULT_LEEWAY,
            refresh_interval: config::DEFAULT_REFRESH_INTERVAL,
            refetch_cooldown: config::DEFAULT_REFETCH_COOLDOWN,
            max_stale: config::DEFAULT_MAX_STALE,
            ca_pem: None,
        }],
        routes: vec![Route {
            name: "echo".to_owned(),
            host: None,
            path: "/echo".to_owned(),
            backend: Backend {
                authority: echo.to_string(),
                path: "/".to_owned(),
                query: None,
            },
            auth: Auth {
                provider: 0,
                token_from: config::DEFAULT_TOKEN_FROM.to_vec(),
                query_param: config::DEFAULT_QUERY_PARAM.to_owned(),
                subprotocol_marker: config::DEFAULT_SUBPROTOCOL_MARKER.to_owned(),
                cookie_name: config::DEFAULT_COOKIE_NAME.to_owned(),
                require_claims: vec![("scope".to_owned(), vec!["chat:read".to_owned()])],
                forward_claims: vec![("sub".to_owned(), HeaderName::from_static("x-auth-subject"))],
                on_expiry: OnExpiry::Close,
                max_token_lifetime: None,
                refresh_prefix: Some(config::DEFAULT_REFRESH_PREFIX.to_owned()),
            },
            // The demo page's origin; command-line clients send no Origin.
            origins: Origins::Allow {
                patterns: patterns.clone(),
                allow_missing: true,
            },
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            messages: None,
        }],
    };
    match Server::bind(config(8443, 9090)).await {
        Ok(server) => Ok(server),
        Err(error) => {
            debug!(%error, "preferred demo ports are taken; using free ones");
            Server::bind(config(0, 0)).await
        }
    }
}

/// The self-check's tokens: one to open the session with, one to renew it in-band.
struct Tokens {
    first: String,
    renewal: String,
}

/// Opens a real WSS session through the proxy, sends a message and then an in-band refresh,
/// and returns the echo and the proxy's answer to the refresh.
async fn self_check(
    addr: SocketAddr,
    root: CertificateDer<'static>,
    url: &str,
    tokens: Option<&Tokens>,
) -> Result<(String, String), Error> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::SelfCheck(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(root)
        .map_err(|e| failed("trusting the demo certificate", &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("TLS set-up", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(|e| failed("server name", &e))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await?;
    let mut request = url
        .into_client_request()
        .map_err(|e| failed("request", &e))?;
    if let Some(tokens) = tokens {
        let value = format!("Bearer {}", tokens.first)
            .parse()
            .map_err(|e| failed("header", &e))?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| failed("upgrade", &e))?;
    let text = "hello through wsgate";
    ws.send(Message::text(text))
        .await
        .map_err(|e| failed("send", &e))?;
    let echoed = text_answer(&mut ws).await?;
    // Without tokens the upgrade was refused above; with them the session renews in-band.
    let renewal = tokens.map(|t| t.renewal.as_str()).unwrap_or_default();
    ws.send(Message::text(format!(
        "{}{renewal}",
        config::DEFAULT_REFRESH_PREFIX
    )))
    .await
    .map_err(|e| failed("send", &e))?;
    let renewed = text_answer(&mut ws).await?;
    let _ = ws.close(None).await;
    Ok((echoed, renewed))
}

/// The next message, which must be text.
async fn text_answer<S, E>(ws: &mut S) -> Result<String, Error>
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    match ws.next().await {
        Some(Ok(Message::Text(text))) => Ok(text.to_string()),
        other => Err(Error::SelfCheck(format!("unexpected answer {other:?}"))),
    }
}

struct Shown<'a> {
    url: &'a str,
    addr: SocketAddr,
    admin: SocketAddr,
    issuer: SocketAddr,
    ca: &'a Path,
    echoed: &'a str,
    renewed: &'a str,
    refused: &'a str,
}

fn print_instructions(shown: &Shown<'_>) {
    let Shown {
        url,
        addr,
        admin,
        issuer,
        ca,
        echoed,
        renewed,
        refused,
    } = shown;
    let port = addr.port();
    let ca = ca.display();
    println!(
        "\
wsgate demo is running (Ctrl-C to stop)

  proxy    {url}  (TLS, self-signed certificate for localhost)
  issuer   http://{issuer}/  (dev token issuer: JWKS, /token?sub=alice&ttl=60, a browser page)
  backend  an embedded WebSocket echo server on plain ws://
  admin    http://{admin}/metrics  /healthz  /readyz

Self-check:
  with a token:    sent \"hello through wsgate\", the echo came back: {echoed:?}
  in-band refresh: sent a new token as \"wsgate.refresh:<JWT>\", the proxy answered: {renewed:?}
  without a token: {refused}

Try it in a browser: open http://127.0.0.1:{issuer_port}/ (it fetches a token, connects
with new WebSocket(url, [\"bearer\", token]) and renews the 60-second token in-band before it
expires; accept the certificate at https://localhost:{port}/ first).

Or with curl:
  TOKEN=$(curl -s 'http://{issuer}/token?sub=alice&ttl=60')
  # authenticated upgrade: 101 (curl then waits on the open socket; it stops after 2 s)
  curl --cacert {ca} --http1.1 -i -N --max-time 2 -H \"Authorization: Bearer $TOKEN\" \\
       -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \\
       -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' https://localhost:{port}/echo
  # the same without a token: 401 with WWW-Authenticate: Bearer
  curl --cacert {ca} --http1.1 -i -H 'Connection: Upgrade' -H 'Upgrade: websocket' \\
       -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \\
       https://localhost:{port}/echo
  # what the proxy counted
  curl -s http://{admin}/metrics | grep '^wsgate_'
",
        issuer_port = issuer.port(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_files_are_written_once_and_then_kept() {
        let dir = std::env::temp_dir().join(format!("wsgate-self-signed-{}", std::process::id()));
        write_self_signed(&dir).expect("first write");
        let cert = std::fs::read_to_string(dir.join("server.crt")).expect("cert");
        let key = std::fs::read_to_string(dir.join("server.key")).expect("key");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.contains("PRIVATE KEY-----"), "{key}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("server.key"))
                .expect("meta")
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        write_self_signed(&dir).expect("second write");
        assert_eq!(
            std::fs::read_to_string(dir.join("server.crt")).expect("cert"),
            cert
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
