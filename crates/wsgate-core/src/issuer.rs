//! A development token issuer for `wsgate demo` (and for trying wsgate locally): a fresh
//! ES256 key, its JWKS at `/.well-known/jwks.json`, a token endpoint
//! (`/token?sub=alice&ttl=60`) and a small page that fetches a token and opens an
//! authenticated WebSocket through the proxy with the subprotocol transport. Loopback only:
//! it hands a token to anyone who asks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;

use crate::connection::handshake::plain;

/// Longest token lifetime the endpoint hands out.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the issuer key")]
    Key,
    #[error("cannot sign a token")]
    Sign,
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The issuer's key and identity.
pub struct DevIssuer {
    pub issuer: String,
    pub audience: String,
    kid: String,
    key: EncodingKey,
    jwks: String,
}

impl DevIssuer {
    pub fn generate(issuer: &str, audience: &str) -> Result<DevIssuer, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::Key)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| Error::Key)?;
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(Error::Key);
        }
        let kid = URL_SAFE_NO_PAD.encode(&point[1..9]);
        let jwks = serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }]
        })
        .to_string();
        Ok(DevIssuer {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            kid,
            jwks,
        })
    }

    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// A signed token for `sub` that lives `ttl`.
    pub fn token(&self, sub: &str, ttl: Duration) -> Result<String, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Sign)?
            .as_secs();
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": sub,
            "iat": now, "exp": now + ttl.as_secs(),
            "jti": URL_SAFE_NO_PAD.encode(now.to_le_bytes()) + sub,
            "scope": "chat:read chat:write",
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| Error::Sign)
    }

    /// Serves the JWKS, the token endpoint and `page` (HTML) until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, page: Arc<str>) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (issuer, page) = (self.clone(), page.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answer = issuer.answer(&request, &page);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    fn answer<B>(&self, request: &Request<B>, page: &str) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/.well-known/jwks.json" => body("application/json", self.jwks.clone()),
            "/token" => {
                let query = request.uri().query().unwrap_or("");
                let param = |name: &str| {
                    query
                        .split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(key, _)| *key == name)
                        .map(|(_, value)| value)
                };
                let sub = param("sub").unwrap_or("alice");
                let valid_sub = !sub.is_empty()
                    && sub.len() <= 64
                    && sub.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@')
                    });
                let ttl = param("ttl").map(str::parse::<u64>);
                let ttl = match ttl {
                    None => Some(DEFAULT_TTL),
                    Some(Ok(secs)) if secs > 0 => Some(Duration::from_secs(secs).min(MAX_TTL)),
                    Some(_) => None,
                };
                match (valid_sub, ttl) {
                    (true, Some(ttl)) => match self.token(sub, ttl) {
                        Ok(token) => body("text/plain; charset=utf-8", token),
                        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "signing failed"),
                    },
                    _ => plain(
                        StatusCode::BAD_REQUEST,
                        "sub: 1-64 of [A-Za-z0-9-_.@]; ttl: seconds > 0",
                    ),
                }
            }
            "/" => body("text/html; charset=utf-8", page.to_owned()),
            _ => plain(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

fn body(content_type: &'static str, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `wsgate issuer`: a fresh key for `issuer` and `audience`, served on `listen` until
/// `shutdown` completes. The page opens `ws_url` (the proxy route in front of an echo backend).
pub async fn run(
    listen: SocketAddr,
    issuer: &str,
    audience: &str,
    ws_url: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let dev = Arc::new(DevIssuer::generate(issuer, audience)?);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            address: listen,
            source,
        })?;
    let address = listener.local_addr().unwrap_or(listen);
    tracing::info!(%address, issuer, audience, "dev token issuer: /.well-known/jwks.json, /token, /");
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "the dev issuer signs a token for anyone who reaches it");
    }
    tokio::select! {
        () = dev.serve(listener, Arc::from(page(ws_url, None))) => {}
        () = shutdown => {}
    }
    Ok(())
}

/// The demo page: get a token, open `wss_url` with `["bearer", token]`, echo what is typed.
/// With `refresh_prefix` (the route has `auth.refresh: message`) the page hands the proxy a
/// fresh token in-band at 80 % of each token's life, so the session outlives its first token.
pub fn page(wss_url: &str, refresh_prefix: Option<&str>) -> String {
    // The prefix is a config value of printable ASCII without spaces; as a JS string literal
    // it needs only its quotes and backslashes escaped.
    let prefix = refresh_prefix
        .map(|p| format!("'{}'", p.replace('\\', "\\\\").replace('\'', "\\'")))
        .unwrap_or_else(|| "null".to_owned());
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>wsgate demo</title>
<style>body{{font:15px system-ui;margin:2em;max-width:46em}}pre{{background:#f4f4f4;padding:1em;min-height:8em}}</style>
<h1>wsgate demo</h1>
<p>This page asks the dev issuer for a token, then opens <code>{wss_url}</code> with the token
as a WebSocket subprotocol (<code>new WebSocket(url, ["bearer", token])</code>). The proxy checks
the token and the page's Origin, strips the token, and relays to an echo backend. Tokens live
60 seconds; where the route allows in-band refresh the page sends the proxy a fresh one before
each expires, and the session goes on without reconnecting.</p>
<p>If the connection fails at once, open <a href="{https_url}">{https_url}</a> once and accept
the self-signed certificate, then come back.</p>
<p><input id="msg" value="hello through wsgate"> <button id="send">Send</button>
<button id="bad">Try without a token</button></p>
<pre id="log"></pre>
<script>
const log = (line) => {{ document.getElementById('log').textContent += new Date().toLocaleTimeString() + '  ' + line + '\n'; }};
const PREFIX = {prefix};
const TTL = 60;
const token = async () => (await fetch('/token?sub=browser&ttl=' + TTL)).text();
let ws;
// Renew at 80 % of the life left before `exp` (Unix seconds).
const schedule = (exp) => setTimeout(renew, Math.max(1000, (exp * 1000 - Date.now()) * 0.8));
async function renew() {{
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(PREFIX + await token());
  log('refresh sent');
}}
async function open() {{
  ws = new WebSocket('{wss_url}', ['bearer', await token()]);
  ws.onopen = () => {{
    log('open (subprotocol: ' + ws.protocol + ')');
    if (PREFIX) schedule(Date.now() / 1000 + TTL);
    else log('this route has no in-band refresh: the session ends when its token expires');
  }};
  ws.onmessage = (e) => {{
    if (PREFIX && typeof e.data === 'string' && e.data.startsWith(PREFIX)) {{
      const [verdict, detail] = e.data.slice(PREFIX.length).split(' ');
      if (verdict === 'ok') {{
        log('refresh accepted: the session now lasts until ' + new Date(detail * 1000).toLocaleTimeString());
        schedule(Number(detail));
      }} else {{
        log('refresh refused (' + detail + '): the session ends at the old expiry');
      }}
      return;
    }}
    log('echo: ' + e.data);
  }};
  ws.onclose = (e) => log('closed ' + e.code + ' ' + e.reason);
}}
document.getElementById('send').onclick = () => ws && ws.send(document.getElementById('msg').value);
document.getElementById('bad').onclick = () => {{
  const anon = new WebSocket('{wss_url}');
  anon.onerror = () => log('without a token: refused, as it should be');
  anon.onopen = () => log('without a token: OPEN (this should not happen)');
}};
open();
</script>
"#,
        https_url = wss_url.replacen("wss://", "https://", 1),
    )
}
