//! Finding the token in the upgrade request, in each transport a route allows, and removing
//! every trace of it before the request is forwarded.
//!
//! - `header`: `Authorization: Bearer <JWT>` (scheme case-insensitive). Other schemes are not
//!   a token (and are passed to the backend untouched).
//! - `subprotocol`: the marker entry followed by the token as its own entry, the form a
//!   browser can send: `new WebSocket(url, ["chat.v1", "bearer", jwt])`.
//! - `query`: `?access_token=<JWT>`.
//! - `cookie`: `Cookie: access_token=<JWT>`.
//!
//! A transport that carries two tokens, or transports that carry different tokens, make the
//! request ambiguous: it is refused rather than guessed at.

use hyper::header::{self, HeaderMap, HeaderValue};

use super::Error;
use crate::config::{Auth, Transport};

/// The token the request carries, if any.
pub fn extract(
    auth: &Auth,
    headers: &HeaderMap,
    query: Option<&str>,
    protocols: &[String],
) -> Result<Option<String>, Error> {
    let mut found: Option<String> = None;
    for transport in &auth.token_from {
        let token = match transport {
            Transport::Header => from_header(headers)?,
            Transport::Subprotocol => from_protocols(protocols, &auth.subprotocol_marker)?,
            Transport::Query => {
                from_pairs(query.unwrap_or("").split('&'), &auth.query_param, true)?
            }
            Transport::Cookie => {
                let cookies = cookie_pairs(headers).filter_map(|p| std::str::from_utf8(p).ok());
                from_pairs(cookies, &auth.cookie_name, false)?
            }
        };
        match (&found, token) {
            (_, None) => {}
            (None, Some(token)) => found = Some(token),
            (Some(first), Some(token)) if *first == token => {}
            (Some(_), Some(_)) => {
                return Err(Error::InvalidRequest(
                    "different tokens in several transports",
                ));
            }
        }
    }
    Ok(found)
}

fn from_header(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(header::AUTHORIZATION) {
            true => Err(Error::InvalidRequest("several Authorization headers")),
            false => Ok(None),
        };
    };
    if !is_bearer(value.as_bytes()) {
        return Ok(None);
    }
    let Some(token) = bearer(value.as_bytes()) else {
        // A bearer value that is not `Bearer <UTF-8>`: a token the proxy cannot compare with
        // the other transports' is refused rather than ignored.
        return Err(Error::InvalidRequest("malformed bearer credentials"));
    };
    if token.is_empty() {
        return Err(Error::InvalidRequest("empty bearer token"));
    }
    Ok(Some(token.to_owned()))
}

/// The credentials of a `Bearer` authorization value.
fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// True when the value's scheme (the bytes before the first space or tab) is `Bearer` in any
/// case, whatever follows: what is stripped before forwarding. Broader than [`bearer`], so
/// a value the proxy does not read as a token (not UTF-8, a tab separator, no credentials)
/// still never reaches a backend.
fn is_bearer(value: &[u8]) -> bool {
    let end = value
        .iter()
        .position(|b| matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    value[..end].eq_ignore_ascii_case(b"bearer")
}

fn from_protocols(protocols: &[String], marker: &str) -> Result<Option<String>, Error> {
    let mut markers = protocols.iter().enumerate().filter(|(_, p)| *p == marker);
    let Some((at, _)) = markers.next() else {
        return Ok(None);
    };
    if markers.next().is_some() {
        return Err(Error::InvalidRequest(
            "the subprotocol marker is offered twice",
        ));
    }
    match protocols.get(at + 1) {
        Some(token) => Ok(Some(token.clone())),
        None => Err(Error::InvalidRequest(
            "the subprotocol marker is not followed by a token",
        )),
    }
}

/// The percent-decoded value of query parameter `name`; `None` when absent, empty, repeated
/// or not decodable.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    from_pairs(query.split('&'), name, true).ok().flatten()
}

/// The value of `name` among `name=value` pairs from a query (percent-decoded) or a cookie
/// header; an error when it appears twice or does not decode.
fn from_pairs<'a>(
    pairs: impl Iterator<Item = &'a str>,
    name: &str,
    decode: bool,
) -> Result<Option<String>, Error> {
    let mut found = None;
    for pair in pairs {
        let (key, value) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(Error::InvalidRequest("the token parameter appears twice"));
        }
        let value = if decode {
            percent_decode(value)?
        } else {
            value.to_owned()
        };
        if value.is_empty() {
            return Err(Error::InvalidRequest("empty token"));
        }
        found = Some(value);
    }
    Ok(found)
}

fn percent_decode(text: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(Error::InvalidRequest("bad percent-encoding in the query"))?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::InvalidRequest("the query token is not UTF-8"))
}

/// The `name=value` pairs of every Cookie header, as bytes: a cookie value may hold any octet,
/// and a pair that is not UTF-8 must not hide the others (nor a copy of the token) from view.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
}

/// Removes `Authorization: Bearer` (always: no bearer token of any kind goes to a backend),
/// the route's token cookie, any cookie whose value is the request's `token` (a copy in a
/// transport the route does not read), and the client's copies of forwarded-claim headers.
pub fn strip_headers(auth: &Auth, token: &str, headers: &mut HeaderMap) {
    let keep: Vec<_> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|value| !is_bearer(value.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for value in keep {
        headers.append(header::AUTHORIZATION, value);
    }
    let transport = auth.token_from.contains(&Transport::Cookie);
    let carries = |pair: &[u8]| {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        (transport && name == auth.cookie_name.as_bytes()) || value == token.as_bytes()
    };
    if (transport && headers.contains_key(header::COOKIE)) || cookie_pairs(headers).any(carries) {
        let rest: Vec<&[u8]> = cookie_pairs(headers)
            .filter(|pair| !pair.is_empty() && !carries(pair))
            .collect();
        let rest = rest.join(&b"; "[..]);
        headers.remove(header::COOKIE);
        if let Ok(value) = HeaderValue::from_bytes(&rest)
            && !rest.is_empty()
        {
            headers.insert(header::COOKIE, value);
        }
    }
    for (_, name) in &auth.forward_claims {
        headers.remove(name);
    }
}

/// Removes the marker and the token entry that follows it, and any entry that is the
/// request's `token` (offered without the marker, or on a route that does not read
/// subprotocols); true when the marker was offered to a route that reads it.
pub fn strip_protocols(auth: &Auth, token: &str, protocols: &mut Vec<String>) -> bool {
    let marker = auth.token_from.contains(&Transport::Subprotocol)
        && match protocols.iter().position(|p| *p == auth.subprotocol_marker) {
            Some(at) => {
                let end = (at + 2).min(protocols.len());
                protocols.drain(at..end);
                true
            }
            None => false,
        };
    protocols.retain(|p| p != token);
    marker
}

/// The query without the token parameter, nor any parameter whose (decoded) value is the
/// request's `token` (`None` when nothing is left).
pub fn strip_query(auth: &Auth, token: &str, query: Option<&str>) -> Option<String> {
    let query = query?;
    let transport = auth.token_from.contains(&Transport::Query);
    let carries = |pair: &str| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (transport && key == auth.query_param)
            || percent_decode(value).is_ok_and(|value| value == token)
    };
    if !transport && !query.split('&').any(carries) {
        return Some(query.to_owned());
    }
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !carries(pair))
        .collect();
    (!rest.is_empty()).then(|| rest.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TOKEN_FROM, OnExpiry};
    use hyper::header::HeaderValue;

    fn auth(token_from: &[Transport]) -> Auth {
        Auth {
            provider: 0,
            token_from: token_from.to_vec(),
            query_param: "access_token".into(),
            subprotocol_marker: "bearer".into(),
            cookie_name: "access_token".into(),
            require_claims: Vec::new(),
            forward_claims: vec![(
                "sub".into(),
                header::HeaderName::from_static("x-auth-subject"),
            )],
            on_expiry: OnExpiry::Close,
            max_token_lifetime: None,
            refresh_prefix: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn protocols(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn each_transport_yields_its_token() {
        let all = auth(&[
            Transport::Header,
            Transport::Subprotocol,
            Transport::Query,
            Transport::Cookie,
        ]);
        let found = |h: &HeaderMap, q: Option<&str>, p: &[String]| extract(&all, h, q, p);
        assert_eq!(
            found(&headers(&[("authorization", "bEaReR a.b.c")]), None, &[]),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            found(
                &HeaderMap::new(),
                None,
                &protocols(&["chat", "bearer", "a.b.c"])
            ),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            found(&HeaderMap::new(), Some("x=1&access_token=a.b.c"), &[]),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            found(
                &headers(&[("cookie", "x=1; access_token=a.b.c")]),
                None,
                &[]
            ),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            found(&headers(&[("authorization", "Basic dTpw")]), None, &[]),
            Ok(None)
        );
        assert_eq!(found(&HeaderMap::new(), None, &[]), Ok(None));
    }

    #[test]
    fn transports_outside_token_from_are_ignored() {
        let header_only = auth(&[Transport::Header]);
        assert_eq!(
            extract(
                &header_only,
                &HeaderMap::new(),
                Some("access_token=a.b.c"),
                &[]
            ),
            Ok(None)
        );
    }

    #[test]
    fn ambiguity_is_refused() {
        let all = auth(&DEFAULT_TOKEN_FROM);
        let two = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer a.b.c"),
        ]);
        assert!(matches!(
            extract(&all, &two, None, &[]),
            Err(Error::InvalidRequest(_))
        ));
        let differ = headers(&[("authorization", "Bearer a.b.c")]);
        assert!(matches!(
            extract(&all, &differ, Some("access_token=x.y.z"), &[]),
            Err(Error::InvalidRequest(_))
        ));
        assert_eq!(
            extract(&all, &differ, Some("access_token=a.b.c"), &[]),
            Ok(Some("a.b.c".into()))
        );
        assert!(matches!(
            extract(&all, &HeaderMap::new(), None, &protocols(&["bearer"])),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            extract(
                &all,
                &HeaderMap::new(),
                Some("access_token=a&access_token=a"),
                &[]
            ),
            Err(Error::InvalidRequest(_))
        ));
    }

    /// Found by the `token_extract` fuzz target (fuzz/regressions/token_extract/): a bearer
    /// value that is not UTF-8 was neither read as a token nor stripped, so with the token in
    /// another transport the request was admitted and the header forwarded to the backend.
    #[test]
    fn unreadable_bearer_values_are_refused_and_never_forwarded() {
        let all = auth(&[Transport::Header, Transport::Query, Transport::Subprotocol]);
        let mut not_utf8 = HeaderMap::new();
        not_utf8.append(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"bearer eyJhbGci\xcfiJSUzI1NiJ9.e30.c2ln").expect("obs-text"),
        );
        let tab = headers(&[("authorization", "Bearer\ta.b.c")]);
        let bare = headers(&[("authorization", "BEARER")]);
        for h in [&not_utf8, &tab, &bare] {
            assert_eq!(
                extract(&all, h, Some("access_token=a.b.c"), &[]),
                Err(Error::InvalidRequest("malformed bearer credentials")),
                "{h:?}"
            );
            let mut forwarded = h.clone();
            forwarded.append(
                header::AUTHORIZATION,
                HeaderValue::from_static("Basic dTpw"),
            );
            strip_headers(&all, "a.b.c", &mut forwarded);
            let left: Vec<_> = forwarded.get_all(header::AUTHORIZATION).iter().collect();
            assert_eq!(left, ["Basic dTpw"], "{h:?}");
        }
        // Schemes that merely start with "bearer" are other schemes.
        let other = headers(&[("authorization", "Bearerx a.b.c")]);
        assert_eq!(extract(&all, &other, None, &[]), Ok(None));
    }

    #[test]
    fn stripping_leaves_no_token() {
        let all = auth(&[
            Transport::Header,
            Transport::Subprotocol,
            Transport::Query,
            Transport::Cookie,
        ]);
        let mut h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "theme=dark; access_token=a.b.c"),
            ("x-auth-subject", "spoofed"),
        ]);
        strip_headers(&all, "a.b.c", &mut h);
        assert!(h.get("authorization").is_none());
        assert_eq!(
            h.get("cookie").map(|v| v.to_str().expect("ascii")),
            Some("theme=dark")
        );
        assert!(h.get("x-auth-subject").is_none());
        let mut p = protocols(&["chat.v1", "bearer", "a.b.c", "chat.v2"]);
        assert!(strip_protocols(&all, "a.b.c", &mut p));
        assert_eq!(p, ["chat.v1", "chat.v2"]);
        assert_eq!(
            strip_query(&all, "a.b.c", Some("access_token=a.b.c&room=1")),
            Some("room=1".into())
        );
        assert_eq!(strip_query(&all, "a.b.c", Some("access_token=a.b.c")), None);
    }

    /// Found by the `token_extract` fuzz target (fuzz/regressions/token_extract/): the token
    /// also offered as a plain subprotocol entry (or, on a route that reads the header only,
    /// as `bearer, <JWT>`, `?access_token=` or a cookie) was forwarded to the backend.
    #[test]
    fn copies_of_the_token_in_other_transports_are_stripped() {
        let header_only = auth(&[Transport::Header]);
        let mut p = protocols(&["chat.v1", "bearer", "a.b.c"]);
        assert!(!strip_protocols(&header_only, "a.b.c", &mut p));
        assert_eq!(p, ["chat.v1", "bearer"]);
        let mut p = protocols(&["b%arer", "a.b.c", "x"]);
        assert!(!strip_protocols(
            &auth(&DEFAULT_TOKEN_FROM),
            "a.b.c",
            &mut p
        ));
        assert_eq!(p, ["b%arer", "x"]);
        assert_eq!(
            strip_query(
                &header_only,
                "a.b.c",
                Some("room=1&access_token=a%2Eb.c&t=a.b.cd")
            ),
            Some("room=1&t=a.b.cd".into())
        );
        // Queries without a copy are forwarded exactly as they came.
        assert_eq!(
            strip_query(&header_only, "a.b.c", Some("a=1&&access_token=x")),
            Some("a=1&&access_token=x".into())
        );
        let mut h = headers(&[
            ("cookie", "session=s1; jwt=a.b.c"),
            ("cookie", "access_token=other"),
        ]);
        strip_headers(&header_only, "a.b.c", &mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["session=s1; access_token=other"]
        );
        let mut untouched = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        strip_headers(&header_only, "a.b.c", &mut untouched);
        assert_eq!(untouched.get_all("cookie").iter().count(), 2);
    }
}
