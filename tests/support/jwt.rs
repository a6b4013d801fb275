//! A real JWKS HTTP server on 127.0.0.1:0 whose keys and failures the test controls and which
//! counts its requests, and the keys and tokens to go with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ISSUER: &str = "https://issuer.test/";
pub const AUDIENCE: &str = "wsgate-test";

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as the DER `RSAPublicKey` / EC point, for algorithm-confusion attacks.
    pub public: Vec<u8>,
}

fn rsa(kid: &str) -> TestKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa key");
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
        .expect("pkcs8");
    let public = pair.public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(pkcs1_from_pkcs8(der.as_ref())),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}),
        public: public.as_ref().to_vec(),
    }
}

/// jsonwebtoken signs RSA with a PKCS#1 key; aws-lc-rs exports PKCS#8, whose last field
/// (an OCTET STRING) holds exactly that PKCS#1 key.
fn pkcs1_from_pkcs8(der: &[u8]) -> &[u8] {
    /// One DER element: (tag, contents, rest).
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            short if short < 0x80 => (short as usize, 2),
            long => {
                let n = (long & 0x7f) as usize;
                let len = input[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + n)
            }
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, info, _) = tlv(der); // PrivateKeyInfo SEQUENCE
    let (_, _, rest) = tlv(info); // version INTEGER
    let (_, _, rest) = tlv(rest); // AlgorithmIdentifier SEQUENCE
    let (tag, key, _) = tlv(rest); // privateKey OCTET STRING
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    key
}

fn es256(kid: &str) -> TestKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("ec key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("ec pair");
    let point = pair.public_key().as_ref().to_vec();
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
        public: point,
    }
}

/// Keys are expensive to generate; every test in the process shares these.
pub fn keys() -> &'static [TestKey; 4] {
    static KEYS: OnceLock<[TestKey; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            rsa("rsa-1"),
            rsa("rsa-2"),
            es256("ec-1"),
            rsa("other-provider"),
        ]
    })
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Valid claims for `sub`, expiring in five minutes.
pub fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 300, "iat": now(), "jti": format!("jti-{sub}"), "scope": "chat:read chat:write"})
}

/// Signs `claims` with `key` (its kid in the header).
pub fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign");
    super::leak::register(&token);
    token
}

/// Signs with a hand-written header, for tokens no honest library would make.
pub fn sign_raw(key: &TestKey, header: &Value, claims: &Value) -> String {
    sign_text(key, &header.to_string(), &claims.to_string())
}

/// Signs header and claims JSON text exactly as written (duplicate members, which a `Value`
/// cannot hold).
pub fn sign_text(key: &TestKey, header: &str, claims: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.encoding, key.alg).expect("sign");
    let token = format!("{signing_input}.{signature}");
    super::leak::register(&token);
    token
}

/// HS256 over a header and claims with `secret` as the HMAC key.
pub fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    super::leak::register(&token);
    token
}

/// A token segment: base64url of the JSON (registered with the leakage check, since tests
/// build hand-made tokens from these).
pub fn b64(value: &Value) -> String {
    let segment = URL_SAFE_NO_PAD.encode(value.to_string());
    super::leak::register(&segment);
    segment
}

/// How the JWKS endpoint answers.
#[derive(Clone, Debug)]
pub enum Mode {
    Serve,
    Status(u16),
    Html,
    NotJson,
    Huge,
    /// Accepts and never answers.
    Hang,
    /// 302 to another host.
    RedirectAway,
    /// 302 to this URL.
    RedirectTo(String),
}

struct State {
    keys: Vec<TestKey>,
    mode: Mode,
}

/// The identity provider's JWKS endpoint.
pub struct JwksServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(keys: &[TestKey]) -> JwksServer {
        JwksServer::serve(keys, None).await
    }

    /// The same over HTTPS, with a certificate from `tls` (for `ca_file` tests).
    pub async fn start_tls(keys: &[TestKey], tls: Arc<rustls::ServerConfig>) -> JwksServer {
        JwksServer::serve(keys, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(keys: &[TestKey], tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}/jwks.json",
            listener.local_addr().expect("addr")
        );
        let state = Arc::new(Mutex::new(State {
            keys: keys.to_vec(),
            mode: Mode::Serve,
        }));
        let requests: Arc<AtomicUsize> = Arc::default();
        let (task_state, count) = (state.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (state, count, tls) = (task_state.clone(), count.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, &state, &count).await;
                            }
                        }
                        None => answer(tcp, &state, &count).await,
                    }
                });
            }
        });
        JwksServer {
            url,
            state,
            requests,
            task,
        }
    }

    pub fn publish(&self, keys: &[TestKey]) {
        self.state.lock().expect("lock").keys = keys.to_vec();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request head and answers as the current mode says.
async fn answer<S>(mut stream: S, state: &Mutex<State>, count: &AtomicUsize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let (mode, body) = {
        let state = state.lock().expect("lock");
        let jwks = json!({"keys": state.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        (state.mode.clone(), jwks.to_string())
    };
    let answer = match mode {
        Mode::Serve => response(200, "application/json", &body),
        Mode::Status(code) => response(code, "text/plain", "nope"),
        Mode::Html => response(200, "text/html", "<html><body>login</body></html>"),
        Mode::NotJson => response(200, "application/json", "{\"keys\": [ {\"kty\": "),
        Mode::Huge => response(200, "application/json", &format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(2 << 20))),
        Mode::Hang => return std::future::pending::<()>().await,
        Mode::RedirectAway => "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:1/jwks.json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        Mode::RedirectTo(url) => format!("HTTP/1.1 302 Found\r\nLocation: {url}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn response(status: u16, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
