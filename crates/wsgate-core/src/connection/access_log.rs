//! The access log: one `wsgate::access` event per refused request and per closed session.
//! Tokens never reach it: a client may put its token anywhere in the path, so the logged path
//! has every JWT-shaped run replaced.

use std::net::SocketAddr;

use tracing::info;

use crate::relay;

/// A request refused before the 101 (by the proxy, or by the backend's own answer).
pub(super) fn refused(
    peer: SocketAddr,
    route: &str,
    path: &str,
    status: u16,
    result: &str,
    reason: &str,
) {
    info!(target: "wsgate::access", %peer, route, ?path, status, result, reason, "refused");
}

/// A session that ended.
pub(super) fn closed(
    peer: SocketAddr,
    route: &str,
    sub: &str,
    outcome: &relay::Outcome,
    lasted: std::time::Duration,
) {
    info!(target: "wsgate::access", %peer, route, ?sub, code = outcome.code, by = outcome.by,
        reason = outcome.reason, duration_ms = lasted.as_millis() as u64,
        messages_in = outcome.up.messages, bytes_in = outcome.up.bytes,
        messages_out = outcome.down.messages, bytes_out = outcome.down.bytes,
        dropped = outcome.dropped, rejected = outcome.rejected, "session closed");
}

/// An in-band refresh the proxy refused (the session goes on under its old token).
pub(super) fn refresh_refused(peer: SocketAddr, route: &str, session: u64, reason: &str) {
    info!(target: "wsgate::access", %peer, route, session, reason, "refresh refused");
}

/// Text from the request as the access log shows it: a client may put its token anywhere in
/// the path (it is then refused), so any JWT-shaped run (two base64url parts of 8 or more
/// characters and a third, joined by dots) is written as `[jwt]`, with its surroundings
/// (`t=[jwt]`, `[jwt];v=1`). Percent-escapes are read as the characters they encode, so
/// `%2E` dots or a token escaped character by character are found too.
pub(super) fn logged_path(path: &str) -> String {
    // A JWT needs dots, literal or escaped: most paths have neither and are written as they are.
    if !path.contains(['.', '%']) {
        return path.to_owned();
    }
    let bytes = path.as_bytes();
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    // (where the character starts in `path`, where it ends, the byte it stands for)
    let mut chars = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let escaped = (b == b'%')
            .then(|| Some(hex(*bytes.get(at + 1)?)? << 4 | hex(*bytes.get(at + 2)?)?))
            .flatten();
        match escaped {
            Some(decoded) => {
                chars.push((at, at + 3, decoded));
                at += 3;
            }
            None => {
                chars.push((at, at + 1, b));
                at += 1;
            }
        }
    }
    let in_token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let jwt = |run: &[u8]| {
        let parts: Vec<&[u8]> = run.split(|b| *b == b'.').collect();
        parts
            .windows(3)
            .any(|three| three[0].len() >= 8 && three[1].len() >= 8)
    };
    let (mut logged, mut copied, mut i) = (String::with_capacity(path.len()), 0, 0);
    while i < chars.len() {
        if !in_token(chars[i].2) {
            i += 1;
            continue;
        }
        let first = i;
        while i < chars.len() && in_token(chars[i].2) {
            i += 1;
        }
        let run: Vec<u8> = chars[first..i].iter().map(|c| c.2).collect();
        if jwt(&run) {
            logged.push_str(&path[copied..chars[first].0]);
            logged.push_str("[jwt]");
            copied = chars[i - 1].1;
        }
    }
    logged.push_str(&path[copied..]);
    logged
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[test]
    fn a_jwt_anywhere_in_the_logged_path_is_redacted() {
        let dots = JWT.replace('.', "%2E");
        let all: String = JWT.bytes().map(|b| format!("%{b:02x}")).collect();
        for (path, logged) in [
            (format!("/chat/{JWT}"), "/chat/[jwt]".to_owned()),
            (format!("/chat/t={JWT}"), "/chat/t=[jwt]".to_owned()),
            (format!("/chat/{JWT};v=1"), "/chat/[jwt];v=1".to_owned()),
            (format!("/chat/a{JWT}b/c"), "/chat/[jwt]/c".to_owned()),
            (format!("/chat/t={dots}/x"), "/chat/t=[jwt]/x".to_owned()),
            (format!("/chat/{all}"), "/chat/[jwt]".to_owned()),
            // Unsigned (empty signature) tokens too.
            (
                "/c/eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".to_owned(),
                "/c/[jwt]".to_owned(),
            ),
        ] {
            assert_eq!(logged_path(&path), logged, "{path}");
        }
        for path in [
            "/chat/room.v1.json",
            "/chat/a.b.c",
            "/%zz/x%2",
            "/chat/ünï.cödé",
        ] {
            assert_eq!(logged_path(path), path);
        }
    }
}
