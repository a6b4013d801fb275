//! Parsers for the plain scalars of the YAML file, one per kind of value: addresses and
//! networks, counts and rates, names, host and path matches, URLs, header names and the
//! `${VAR}` substitution every scalar goes through. Each takes the text and returns the typed
//! value or a message; [`validate`](super::validate) walks the file, calls them and says where.
//! Durations and sizes are in [`units`](super::units).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::header::HeaderName;

use super::{
    Algorithm, Backend, Cidr, HostMatch, MAX_BUSY_POLL, OnExpiry, OnLimit, Rate, Transport, units,
};
use crate::messages;
use crate::path::unsafe_path;

/// `N/s`, `N/m`, `N/h`; with `sizes`, N may carry a size unit (`1MiB/s`).
pub(super) fn parse_rate(text: &str, sizes: bool) -> Result<Rate, String> {
    let expected = if sizes {
        "expected a byte rate such as 1MiB/s or 64KiB/s"
    } else {
        "expected a rate such as 100/s, 20/m or 1000/h"
    };
    let (count, unit) = text.trim().rsplit_once('/').ok_or(expected)?;
    let per = match unit {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(expected.to_owned()),
    };
    let count = if sizes {
        units::size(count).map_err(|_| expected.to_owned())?
    } else {
        count
            .trim()
            .parse::<u64>()
            .map_err(|_| expected.to_owned())?
    };
    if count == 0 || count > u64::from(u32::MAX) {
        return Err(format!("{expected} (N from 1 to {})", u32::MAX));
    }
    Ok(Rate { count, per })
}

pub(super) fn ipv6_prefix(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(bits @ 1..=128) => Ok(bits),
        _ => Err("expected a prefix length from 1 to 128 (64: one /64 is one client)".to_owned()),
    }
}

pub(super) fn positive_u32(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err("expected a whole number from 1 to 4294967295".to_owned()),
        Ok(n) => Ok(n),
    }
}

pub(super) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let expected = "expected an address or a network such as 10.0.0.0/8 or fd00::/8";
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let network: IpAddr = addr.trim().parse().map_err(|_| expected.to_owned())?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or(expected)?,
    };
    Ok(Cidr { network, prefix })
}

pub(super) fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

pub(super) fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// A name that travels in a URL, a cookie or a subprotocol list: an HTTP token.
pub(super) fn token_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("expected 1 to 64 letters, digits, '-', '_' or '.'".to_owned())
    }
}

pub(super) fn transport(text: &str) -> Result<Transport, String> {
    match text {
        "header" => Ok(Transport::Header),
        "subprotocol" => Ok(Transport::Subprotocol),
        "query" => Ok(Transport::Query),
        "cookie" => Ok(Transport::Cookie),
        _ => Err("expected header, subprotocol, query or cookie".to_owned()),
    }
}

pub(super) fn algorithm(text: &str) -> Result<Algorithm, String> {
    use Algorithm::*;
    let allowed = [
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ];
    text.parse::<Algorithm>()
        .ok()
        .filter(|alg| allowed.contains(alg))
        .ok_or_else(|| "expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (never none or HS*)".to_owned())
}

pub(super) fn jwks_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let host = url.host_str().ok_or("needs a host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must be https:// (http:// only for loopback hosts)".to_owned()),
        _ => Err("must be an https:// URL".to_owned()),
    }
}

/// A header the backend receives from a claim; never one the proxy or the protocol owns.
pub(super) fn forward_header(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| "not a valid header name".to_owned())?;
    let reserved = [
        "host",
        "connection",
        "upgrade",
        "authorization",
        "cookie",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "forwarded",
    ];
    let lower = name.as_str();
    if reserved.contains(&lower)
        || lower.starts_with("sec-websocket-")
        || lower.starts_with("x-forwarded-")
    {
        return Err(
            "this header belongs to the proxy or the protocol; pick another (e.g. X-Auth-Subject)"
                .to_owned(),
        );
    }
    Ok(name)
}

/// Replaces every `${NAME}` with the variable's value; an unset variable is an error.
pub(super) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "${{{name}}} is not a valid environment variable reference"
            ));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        "expected an IP address and port, such as 0.0.0.0:8443 or [::]:8443".to_owned()
    })
}

pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    match units::duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

pub(super) fn busy_poll(text: &str) -> Result<Duration, String> {
    match units::duration(text)? {
        window if window > MAX_BUSY_POLL => {
            Err("must be at most 1ms (0s turns busy polling off)".to_owned())
        }
        window => Ok(window),
    }
}

pub(super) fn positive_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err("expected a whole number greater than zero".to_owned()),
        Ok(count) => Ok(count),
    }
}

pub(super) fn route_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("expected 1 to 64 letters, digits, '-', '_' or '.' (it is a metric label)".to_owned())
    }
}

pub(super) fn host_match(text: &str) -> Result<HostMatch, String> {
    let host = text.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err("expected a host name such as chat.example.com or *.example.com".to_owned());
    }
    Ok(if wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(host)
    })
}

pub(super) fn path_prefix(text: &str) -> Result<String, String> {
    // Requests with a path the handshake refuses never reach routing, so such a prefix could
    // never match; a query, a fragment or any escape has no place in a prefix either, nor a
    // `;` (requests whose route changes once `;parameters` are stripped are refused).
    if text.contains(['?', '#', '%', ' ', ';']) || unsafe_path(text).is_some() {
        return Err(
            "expected an absolute path prefix such as /chat (no query, ';', '%', '\\', '//' or dot segments)"
                .to_owned(),
        );
    }
    // `/chat/` and `/chat` mean the same prefix.
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

pub(super) fn backend_url(text: &str) -> Result<Backend, String> {
    let not_ws = "is not a ws:// URL (wsgate speaks plain WebSocket to its backends)";
    let rest = text.strip_prefix("ws://").ok_or(not_ws)?;
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#']) {
        return Err("expected ws://host:port/path".to_owned());
    }
    let authority = if authority.starts_with('[') {
        if authority.ends_with(']') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        }
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err("expected ws://host:port/path with a port from 1 to 65535".to_owned());
    }
    if path_query.contains('#') {
        return Err("a backend URL has no #fragment".to_owned());
    }
    let (path, query) = match path_query.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (path_query, None),
    };
    let trimmed = path.trim_end_matches('/');
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    Ok(Backend {
        authority,
        path: path.to_owned(),
        query,
    })
}

/// Largest `max_message_size` accepted. The proxy never holds a whole message: frames are
/// forwarded as they arrive, and a message is refused (1009) at the first frame header that
/// takes its length past the limit. The ceiling bounds what a route lets one message carry to
/// a backend, which may well assemble it.
const MAX_MESSAGE_SIZE_CEILING: u64 = 64 << 20;

pub(super) fn message_size(text: &str) -> Result<usize, String> {
    let size = units::size(text)?;
    if size == 0 || size > MAX_MESSAGE_SIZE_CEILING {
        return Err("must be between 1B and 64MiB".to_owned());
    }
    usize::try_from(size).map_err(|_| "too large for this platform".to_owned())
}

pub(super) fn on_limit(text: &str) -> Result<OnLimit, String> {
    match text {
        "close" => Ok(OnLimit::Close),
        "drop" => Ok(OnLimit::Drop),
        _ => Err("expected close or drop".to_owned()),
    }
}

pub(super) fn message_text(text: &str) -> Result<messages::Text, String> {
    match text {
        "any" => Ok(messages::Text::Any),
        "json" => Ok(messages::Text::Json),
        _ => Err("expected any or json".to_owned()),
    }
}

pub(super) fn message_binary(text: &str) -> Result<messages::Binary, String> {
    match text {
        "allow" => Ok(messages::Binary::Allow),
        "refuse" => Ok(messages::Binary::Refuse),
        _ => Err("expected allow or refuse".to_owned()),
    }
}

pub(super) fn on_invalid(text: &str) -> Result<messages::OnInvalid, String> {
    match text {
        "close" => Ok(messages::OnInvalid::Close),
        "drop" => Ok(messages::OnInvalid::Drop),
        _ => Err("expected close or drop".to_owned()),
    }
}

/// `messages.max_depth`: serde_json builds values no deeper than [`messages::json::MAX_DEPTH`].
pub(super) fn max_depth(text: &str) -> Result<usize, String> {
    let most = messages::json::MAX_DEPTH;
    match text.parse::<usize>() {
        Ok(depth) if (1..=most).contains(&depth) => Ok(depth),
        _ => Err(format!("expected a whole number from 1 to {most}")),
    }
}

pub(super) fn on_expiry(text: &str) -> Result<OnExpiry, String> {
    match text {
        "close" => Ok(OnExpiry::Close),
        "ignore" => Ok(OnExpiry::Ignore),
        _ => Err("expected close or ignore".to_owned()),
    }
}

/// `auth.refresh`: true for `message`.
pub(super) fn refresh(text: &str) -> Result<bool, String> {
    match text {
        "off" => Ok(false),
        "message" => Ok(true),
        _ => Err("expected off or message".to_owned()),
    }
}

/// `auth.refresh_prefix`: printable ASCII without spaces, so that no ordinary message starts
/// with it by accident and it survives every client library's text handling.
pub(super) fn refresh_prefix(text: &str) -> Result<String, String> {
    let ok = (4..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(text.to_owned())
    } else {
        Err("expected 4 to 64 printable ASCII characters without spaces".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let env = |name: &str| (name == "HOME_DIR").then(|| "/srv".to_owned());
        assert_eq!(substitute("${HOME_DIR}/x", &env), Ok("/srv/x".to_owned()));
        assert_eq!(substitute("a$b", &env), Ok("a$b".to_owned()));
        assert!(
            substitute("${MISSING}", &env)
                .expect_err("refused")
                .contains("MISSING is not set")
        );
        assert!(
            substitute("${HOME_DIR", &env)
                .expect_err("refused")
                .contains("unterminated")
        );
        assert!(
            substitute("${1X}", &env)
                .expect_err("refused")
                .contains("not a valid")
        );
    }

    #[test]
    fn backend_urls() {
        let b = backend_url("ws://127.0.0.1:9001/ws").expect("valid");
        assert_eq!(
            (b.authority.as_str(), b.path.as_str(), b.query),
            ("127.0.0.1:9001", "/ws", None)
        );
        let b = backend_url("ws://echo/").expect("valid");
        assert_eq!((b.authority.as_str(), b.path.as_str()), ("echo:80", "/"));
        let b = backend_url("ws://[::1]:9/a/?v=1").expect("valid");
        assert_eq!(
            (b.authority.as_str(), b.path.as_str(), b.query.as_deref()),
            ("[::1]:9", "/a", Some("v=1"))
        );
        for bad in [
            "wss://x:1/",
            "http://x/",
            "ws://",
            "ws://x:0/",
            "ws://x:99999/",
            "ws://u@x:1/",
            "ws://x:1/#f",
        ] {
            assert!(backend_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(
            host_match("Chat.Example.com"),
            Ok(HostMatch::Exact("chat.example.com".into()))
        );
        let wildcard = host_match("*.example.com").expect("valid");
        assert!(wildcard.matches("a.example.com"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("a.example.com.evil"));
        for bad in ["", "*.", "a..b", "a b", "*.*.x", "x:80"] {
            assert!(host_match(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(path_prefix("/chat/"), Ok("/chat".to_owned()));
        assert_eq!(path_prefix("/"), Ok("/".to_owned()));
        for bad in ["chat", "/a/../b", "/a?b", "/%2e"] {
            assert!(path_prefix(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refresh_modes_and_prefixes() {
        assert_eq!(refresh("off"), Ok(false));
        assert_eq!(refresh("message"), Ok(true));
        assert!(refresh("header").is_err());
        assert_eq!(
            refresh_prefix("wsgate.refresh:"),
            Ok("wsgate.refresh:".to_owned())
        );
        for bad in ["abc", "with space:", "t\u{e9}l\u{e9}:", &"x".repeat(65)] {
            assert!(refresh_prefix(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
