//! The backend's side of the opening handshake. The proxy makes its own upgrade request to the
//! plain `ws://` backend (fresh key, hop-by-hop headers and extensions removed, forwarding
//! headers set), all within `timeouts.backend_connect`, and checks the 101 as a client must.
//! A non-101 answer is handed back to be relayed as it is, and no tunnel is opened.

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::FusedFuture;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::handshake::{Refusal, has_token};
use crate::config::Route;

/// The most of a refusing backend's body that is relayed to the client.
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// Response head cap for the backend's answer (hyper's minimum is 8 KiB).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Headers that belong to one hop and are never copied to the next one.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers of the WebSocket handshake itself, or that the proxy sets, never copied.
const PROXY_OWNED: [HeaderName; 11] = [
    header::SEC_WEBSOCKET_PROTOCOL,
    header::HOST,
    header::CONTENT_LENGTH,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
];

/// What the backend answered.
pub enum Answer {
    /// 101: the upgraded connection and the subprotocol the backend chose.
    Upgraded {
        io: TokioIo<Upgraded>,
        protocol: Option<HeaderValue>,
    },
    /// Anything else, ready to be relayed to the client as it is.
    Refused(Response<Full<Bytes>>),
}

/// What the proxy asks of the backend: the request target, the client's end-to-end headers
/// (after authentication has removed every trace of the token and added identity headers),
/// and the subprotocols to offer.
pub struct Outgoing {
    pub target: String,
    pub headers: HeaderMap,
    pub protocols: Vec<String>,
    /// The client's `Host`, sent on as `X-Forwarded-Host`.
    pub client_host: Option<HeaderValue>,
    /// The `X-Forwarded-For` value (see [`crate::peer::forwarded_for`]).
    pub forwarded_for: String,
}

impl Outgoing {
    /// Whether `text` appears anywhere in what would be sent (the search is linear in the
    /// request's size, whatever the two hold).
    pub fn carries(&self, text: &str) -> bool {
        self.target.contains(text)
            || self.forwarded_for.contains(text)
            || self
                .protocols
                .iter()
                .any(|protocol| protocol.contains(text))
            || self
                .headers
                .values()
                .chain(&self.client_host)
                .any(|value| String::from_utf8_lossy(value.as_bytes()).contains(text))
    }
}

/// The client's headers that may travel to the backend: no hop-by-hop headers, none that the
/// `Connection` header names, none that belong to the handshake or that the proxy sets.
pub fn end_to_end(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_end_to_end(client, &mut headers, &PROXY_OWNED);
    headers
}

/// Connects and performs the upgrade, all before `timeouts.backend_connect` runs out.
pub async fn open(route: &Route, outgoing: Outgoing) -> Result<Answer, Refusal> {
    let deadline = Instant::now() + route.timeouts.backend_connect;
    timeout_at(deadline, open_inner(route, outgoing))
        .await
        .unwrap_or(Err(Refusal::BackendTimeout))
}

async fn open_inner(route: &Route, outgoing: Outgoing) -> Result<Answer, Refusal> {
    let tcp = TcpStream::connect(route.backend.authority.as_str())
        .await
        .map_err(|_| Refusal::BackendRefused)?;
    // Messages are small and latency matters more than segment count on both legs.
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(|_| Refusal::BackendRefused)?;
    // The connection future must be polled for anything to move; it may finish (handing the
    // socket to the upgrade) before the response future does, hence fused.
    let mut conn = conn.with_upgrades().fuse();

    let key = generate_key();
    let offered = outgoing.protocols.clone();
    let request = request(route, outgoing, &key)?;
    let mut response = alongside(&mut conn, sender.send_request(request))
        .await
        .map_err(|_| Refusal::BackendInvalid("backend closed before answering"))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return relay_refusal(response, &mut conn).await;
    }
    let protocol = check_accept(response.headers(), &key, &offered)?;
    let upgraded = alongside(&mut conn, hyper::upgrade::on(&mut response))
        .await
        .map_err(|_| Refusal::BackendInvalid("backend upgrade failed"))?;
    Ok(Answer::Upgraded {
        io: TokioIo::new(upgraded),
        protocol,
    })
}

/// Runs `work` while also polling the backend connection, which drives its I/O.
async fn alongside<C, T>(conn: &mut C, work: impl Future<Output = T>) -> T
where
    C: FusedFuture + Unpin,
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = &mut *conn, if !conn.is_terminated() => {}
        }
    }
}

/// The proxy's own upgrade request.
fn request(route: &Route, outgoing: Outgoing, key: &str) -> Result<Request<Empty<Bytes>>, Refusal> {
    let value =
        |text: &str| HeaderValue::from_str(text).map_err(|_| Refusal::Malformed("invalid header"));
    let mut request = Request::get(outgoing.target.as_str())
        .body(Empty::new())
        .map_err(|_| Refusal::Malformed("the path cannot be forwarded"))?;
    let mut headers = outgoing.headers;
    headers.insert(header::HOST, value(&route.backend.authority)?);
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    headers.insert(header::SEC_WEBSOCKET_KEY, value(key)?);
    headers.insert("x-forwarded-for", value(&outgoing.forwarded_for)?);
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Some(host) = outgoing.client_host {
        headers.insert("x-forwarded-host", host);
    }
    if !outgoing.protocols.is_empty() {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            value(&outgoing.protocols.join(", "))?,
        );
    }
    *request.headers_mut() = headers;
    Ok(request)
}

/// Copies every header except hop-by-hop ones, those the `Connection` header names, and
/// `skip`.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap, skip: &[HeaderName]) {
    let named_by_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let dropped = HOP_BY_HOP.contains(name)
            || skip.contains(name)
            || named_by_connection.iter().any(|n| n == name.as_str());
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Validates the backend's 101 as RFC 6455 section 4.1 requires of a client.
fn check_accept(
    headers: &HeaderMap,
    key: &str,
    offered: &[String],
) -> Result<Option<HeaderValue>, Refusal> {
    if !has_token(headers, &header::UPGRADE, "websocket")
        || !has_token(headers, &header::CONNECTION, "upgrade")
    {
        return Err(Refusal::BackendInvalid(
            "backend 101 lacks Upgrade/Connection",
        ));
    }
    let expected = derive_accept_key(key.as_bytes());
    let accept = headers.get(header::SEC_WEBSOCKET_ACCEPT);
    if accept.is_none_or(|accept| accept.as_bytes() != expected.as_bytes()) {
        return Err(Refusal::BackendInvalid(
            "backend Sec-WebSocket-Accept does not match",
        ));
    }
    if headers.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(Refusal::BackendInvalid(
            "backend chose an extension nobody offered",
        ));
    }
    let mut chosen = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    let protocol = chosen.next().cloned();
    if chosen.next().is_some() {
        return Err(Refusal::BackendInvalid(
            "backend chose several subprotocols",
        ));
    }
    if let Some(protocol) = &protocol {
        let offered = protocol
            .to_str()
            .is_ok_and(|p| offered.iter().any(|o| o == p));
        if !offered {
            return Err(Refusal::BackendInvalid(
                "backend chose a subprotocol nobody offered",
            ));
        }
    }
    Ok(protocol)
}

/// Reads a refusing backend's body (bounded) and builds the answer for the client.
async fn relay_refusal<C>(response: Response<Incoming>, conn: &mut C) -> Result<Answer, Refusal>
where
    C: FusedFuture + Unpin,
{
    let (parts, body) = response.into_parts();
    let body = alongside(conn, Limited::new(body, MAX_REFUSAL_BODY).collect())
        .await
        .map_err(|_| Refusal::BackendInvalid("backend refusal body unreadable or too large"))?
        .to_bytes();
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = parts.status;
    copy_end_to_end(
        &parts.headers,
        answer.headers_mut(),
        &[header::CONTENT_LENGTH],
    );
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(Answer::Refused(answer))
}
