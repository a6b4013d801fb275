//! The client's side of the opening handshake: RFC 6455 section 4.2.1 checks on the upgrade
//! request, and the HTTP answers for every refusal (docs/contract.md section 2). Nothing here does
//! I/O, so it is cheap and unit-tested.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};

use crate::auth::Error as AuthError;
use crate::path::unsafe_path;

/// Everything the proxy needs from a valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's `Sec-WebSocket-Key`, to answer with its accept value.
    pub key: HeaderValue,
    /// Lower-case host from the `Host` header, without its port.
    pub host: String,
    /// `Sec-WebSocket-Protocol` entries in the order the client offered them.
    pub protocols: Vec<String>,
}

/// Why a request gets no 101. `result()` is the metric label, `reason()` the log text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotUpgrade,
    Malformed(&'static str),
    WrongVersion,
    NoRoute,
    /// The client named one host in the TLS handshake (SNI) and another in `Host`.
    Misdirected,
    /// The Origin header is missing, repeated, `null` or not allowed.
    Origin(&'static str),
    Auth(crate::auth::Error),
    /// A rate or cap: 429 with `Retry-After` (seconds).
    RateLimited {
        kind: crate::ratelimit::Limit,
        retry_after: u64,
    },
    Overloaded,
    Draining,
    /// The fleet's Redis does not answer and `cluster.on_unavailable` is `refuse`.
    FleetUnavailable,
    BackendRefused,
    BackendTimeout,
    BackendInvalid(&'static str),
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NotUpgrade | Refusal::WrongVersion => StatusCode::UPGRADE_REQUIRED,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Origin(_) | Refusal::Auth(AuthError::InsufficientScope) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Auth(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
            Refusal::Overloaded | Refusal::Draining | Refusal::FleetUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::BackendRefused | Refusal::BackendInvalid(_) => StatusCode::BAD_GATEWAY,
            Refusal::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn result(self) -> &'static str {
        match self {
            Refusal::NotUpgrade => "not_upgrade",
            Refusal::Malformed(_) => "bad_request",
            Refusal::WrongVersion => "bad_version",
            Refusal::NoRoute => "no_route",
            Refusal::Misdirected => "misdirected",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Origin(_) => "origin",
            Refusal::Auth(AuthError::KeysUnavailable) => "keys_unavailable",
            Refusal::Auth(AuthError::InsufficientScope) => "forbidden",
            Refusal::Auth(_) => "unauthorized",
            Refusal::Overloaded => "overloaded",
            Refusal::Draining => "draining",
            Refusal::FleetUnavailable => "fleet_unavailable",
            Refusal::BackendRefused => "backend_refused",
            Refusal::BackendTimeout => "backend_timeout",
            Refusal::BackendInvalid(_) => "backend_invalid",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotUpgrade => "not a WebSocket upgrade",
            Refusal::Malformed(why) | Refusal::BackendInvalid(why) => why,
            Refusal::WrongVersion => "unsupported Sec-WebSocket-Version",
            Refusal::NoRoute => "no route matches",
            Refusal::Misdirected => "the Host header does not match the TLS server name",
            Refusal::RateLimited {
                kind: crate::ratelimit::Limit::Subject,
                ..
            } => "too many sessions for this subject",
            Refusal::RateLimited { .. } => "too many handshakes from this address",
            Refusal::Origin(why) => why,
            Refusal::Auth(AuthError::InvalidRequest(why)) => why,
            Refusal::Auth(error) => error.reason(),
            Refusal::Overloaded => "too many connections",
            Refusal::Draining => "shutting down",
            Refusal::FleetUnavailable => "fleet state unavailable",
            Refusal::BackendRefused => "backend unreachable",
            Refusal::BackendTimeout => "backend did not answer in time",
        }
    }

    /// The HTTP answer; the connection is closed after it.
    pub fn response(self) -> Response<Full<Bytes>> {
        let mut response = plain(self.status(), self.reason());
        let headers = response.headers_mut();
        match self {
            Refusal::NotUpgrade => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            Refusal::WrongVersion => {
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            Refusal::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            Refusal::Auth(error) => {
                if let Some(challenge) = error.challenge() {
                    headers.insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                }
            }
            _ => {}
        }
        response
    }
}

/// A small text response that closes the connection.
pub fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Checks the request against RFC 6455 section 4.2.1.
pub fn validate<B>(request: &Request<B>) -> Result<Upgrade, Refusal> {
    let headers = request.headers();
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(Refusal::NotUpgrade);
    }
    if request.method() != Method::GET {
        return Err(Refusal::Malformed("a WebSocket upgrade must be a GET"));
    }
    if request.version() != Version::HTTP_11 {
        return Err(Refusal::Malformed("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(Refusal::Malformed("Connection must include upgrade"));
    }
    if headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(Refusal::Malformed("an upgrade request has no body"));
    }
    let version = single(headers, &header::SEC_WEBSOCKET_VERSION)
        .map_err(|()| Refusal::Malformed("several Sec-WebSocket-Version headers"))?;
    if version.is_none_or(|v| v.as_bytes() != b"13") {
        return Err(Refusal::WrongVersion);
    }
    let key = match single(headers, &header::SEC_WEBSOCKET_KEY) {
        Ok(Some(key)) if is_valid_key(key.as_bytes()) => key.clone(),
        _ => return Err(Refusal::Malformed("missing or invalid Sec-WebSocket-Key")),
    };
    let host = match single(headers, &header::HOST) {
        Ok(Some(host)) => host_name(host).ok_or(Refusal::Malformed("invalid Host header"))?,
        _ => return Err(Refusal::Malformed("exactly one Host header is required")),
    };
    if let Some(authority) = request.uri().authority()
        && !same_host(authority.host(), &host)
    {
        return Err(Refusal::Malformed(
            "the request target names another host than Host",
        ));
    }
    if let Some(why) = unsafe_path(request.uri().path()) {
        return Err(Refusal::Malformed(why));
    }
    Ok(Upgrade {
        key,
        host,
        protocols: protocols(headers)
            .ok_or(Refusal::Malformed("invalid Sec-WebSocket-Protocol"))?,
    })
}

/// True when a comma-separated header contains `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// `Ok(None)` when absent, `Err` when repeated.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        Err(())
    } else {
        Ok(first)
    }
}

/// A key is the base64 encoding of 16 bytes: 22 significant characters and `==`, where the
/// last significant character carries only 2 bits.
fn is_valid_key(key: &[u8]) -> bool {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24
        && key[..22].iter().all(b64)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

/// Lower-cased host without the port; `None` for anything that is not a plausible host.
fn host_name(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let host = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        &text[..end + 2]
    } else {
        text.split(':').next()?
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then(|| host.to_ascii_lowercase())
}

/// True when the TLS server name (SNI) and the `Host` header name the same host: compared
/// case-insensitively, without the port (`host` has none) or a trailing dot. Without SNI (a
/// client that connected to an IP address) `Host` alone routes.
pub fn matches_server_name(server_name: Option<&str>, host: &str) -> bool {
    server_name.is_none_or(|name| same_host(name, host))
}

fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The offered subprotocols; `None` if a header is not a token list.
fn protocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut offered = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for item in value.to_str().ok()?.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            offered.push(item.to_owned());
        }
    }
    Some(offered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> hyper::http::request::Builder {
        Request::get("/chat")
            .header("host", "Chat.Example.com:8443")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    fn check(builder: hyper::http::request::Builder) -> Result<Upgrade, Refusal> {
        validate(&builder.body(()).expect("request"))
    }

    #[test]
    fn accepts_a_valid_upgrade() {
        let up = check(upgrade().header("sec-websocket-protocol", "chat.v1, x")).expect("valid");
        assert_eq!(up.host, "chat.example.com");
        assert_eq!(up.protocols, ["chat.v1", "x"]);
    }

    #[test]
    fn refusals() {
        let plain_get = Request::get("/").header("host", "x");
        assert_eq!(check(plain_get), Err(Refusal::NotUpgrade));
        let post = upgrade().method(Method::POST);
        assert!(matches!(check(post), Err(Refusal::Malformed(_))));
        let old = upgrade().version(Version::HTTP_10);
        assert!(matches!(check(old), Err(Refusal::Malformed(_))));
        let version = upgrade().header("sec-websocket-version", "8");
        assert!(
            matches!(check(version), Err(Refusal::Malformed(_))),
            "repeated version"
        );
        let mut wrong = upgrade().body(()).expect("request");
        wrong
            .headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(validate(&wrong), Err(Refusal::WrongVersion));
        for key in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            let mut bad = upgrade().body(()).expect("request");
            bad.headers_mut().insert(
                "sec-websocket-key",
                HeaderValue::from_str(key).expect("ascii"),
            );
            assert!(
                matches!(validate(&bad), Err(Refusal::Malformed(_))),
                "key {key:?}"
            );
        }
        let body = upgrade().header("content-length", "5");
        assert!(matches!(check(body), Err(Refusal::Malformed(_))));
        for path in [
            "/chat/../admin",
            "/chat/%2e%2E/admin",
            "/./chat",
            "/chat/..",
            "/chat/..;x/admin",
            "/chat/.%2e/admin",
            "/chat%2Fadmin",
            "/chat%2fadmin",
            "/chat%5Cadmin",
            "/chat%255C",
            "/chat/%00",
            "/%61dmin",
            "/chat%",
            "/chat%2",
            "/chat%+1",
            "//admin",
            "/chat//admin",
            "*",
        ] {
            assert!(
                matches!(check(upgrade().uri(path)), Err(Refusal::Malformed(_))),
                "{path}"
            );
        }
        let other = upgrade().uri("https://admin.example.com/chat");
        assert!(matches!(check(other), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn paths_that_mean_what_they_say_pass() {
        for path in [
            "/",
            "/chat/",
            "/chat/room.1/..x/.../a..b",
            "/chat/%20%0D%0A%1B%5B31m",
            "/chat;v=1",
        ] {
            assert!(check(upgrade().uri(path)).is_ok(), "{path}");
        }
        let same = upgrade().uri("https://CHAT.example.com:8443/chat");
        assert!(check(same).is_ok());
    }

    #[test]
    fn server_name_must_match_the_host() {
        assert!(matches_server_name(None, "chat.example.com"));
        assert!(matches_server_name(
            Some("Chat.Example.COM"),
            "chat.example.com"
        ));
        assert!(matches_server_name(
            Some("chat.example.com."),
            "chat.example.com"
        ));
        assert!(!matches_server_name(
            Some("chat.example.com"),
            "admin.example.com"
        ));
        assert!(!matches_server_name(
            Some("example.com"),
            "chat.example.com"
        ));
    }
}
