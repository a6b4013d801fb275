//! `wsgate demo`: everything embedded and on loopback. A fresh self-signed certificate, a
//! WebSocket echo backend, and the proxy in front of it; the demo then proves the path with
//! a real WSS client before it hands over to the user.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::config::{self, Admin, Backend, Config, Listen, Route};
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
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        identity: Identity {
            chain: vec![cert.der().clone()],
            key,
        },
    })
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

    let server = bind_preferring(cert.identity, echo_addr).await?;
    let addr = server.local_addr();
    let admin = server.admin_addr();
    let running = tokio::spawn(server.run(shutdown));

    let url = format!("wss://localhost:{}/echo", addr.port());
    let echoed = self_check(addr, root, &url).await?;
    print_instructions(&url, addr, admin, &ca_path, &echoed);
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The usual ports when free (8443, 9090), otherwise any free port.
async fn bind_preferring(identity: Identity, echo: SocketAddr) -> Result<Server, server::Error> {
    let identity = Arc::new(identity);
    let config = |public: u16, admin: u16| Config {
        listen: Listen {
            address: SocketAddr::from(([127, 0, 0, 1], public)),
            tls: identity.clone(),
            handshake_timeout: config::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: std::time::Duration::from_secs(2),
        },
        admin: Admin {
            address: SocketAddr::from(([127, 0, 0, 1], admin)),
        },
        routes: vec![Route {
            name: "echo".to_owned(),
            host: None,
            path: "/echo".to_owned(),
            backend: Backend {
                authority: echo.to_string(),
                path: "/".to_owned(),
                query: None,
            },
            max_message_size: config::DEFAULT_MAX_MESSAGE_SIZE,
            backend_connect: config::DEFAULT_BACKEND_CONNECT,
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

/// Opens a real WSS session through the proxy and returns what came back.
async fn self_check(
    addr: SocketAddr,
    root: CertificateDer<'static>,
    url: &str,
) -> Result<String, Error> {
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
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .map_err(|e| failed("upgrade", &e))?;
    let text = "hello through wsgate";
    ws.send(Message::text(text))
        .await
        .map_err(|e| failed("send", &e))?;
    let echoed = match ws.next().await {
        Some(Ok(Message::Text(echoed))) => echoed.to_string(),
        other => return Err(Error::SelfCheck(format!("unexpected answer {other:?}"))),
    };
    let _ = ws.close(None).await;
    Ok(echoed)
}

fn print_instructions(url: &str, addr: SocketAddr, admin: SocketAddr, ca: &Path, echoed: &str) {
    let port = addr.port();
    println!(
        "\
wsgate demo is running (Ctrl-C to stop)

  proxy    {url}  (TLS, self-signed certificate for localhost)
  backend  an embedded WebSocket echo server on plain ws://
  admin    http://{admin}/metrics  /healthz  /readyz

Self-check: a WSS client sent \"hello through wsgate\" and the echo came back: {echoed:?}

Try it yourself:
  # the upgrade through the proxy (curl shows the 101 and then waits; it stops after 2 s)
  curl --cacert {ca} --http1.1 -i -N --max-time 2 \\
       -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \\
       -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' https://localhost:{port}/echo

  # a refusal: a plain GET is not a WebSocket upgrade (426)
  curl --cacert {ca} -i https://localhost:{port}/echo

  # what the proxy counted
  curl -s http://{admin}/metrics | grep '^wsgate_'
",
        ca = ca.display(),
    );
}
