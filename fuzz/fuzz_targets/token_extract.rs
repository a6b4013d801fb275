//! Token extraction from an upgrade request, in every transport (header, subprotocol, query,
//! cookie) and every order of them, then the stripping that builds the backend's request.
//!
//! Input: byte 0 picks the route's `token_from` (which transports, in which order); the rest
//! is a request head: the first line is the request target (`/path?query`), every further
//! line a `Name: value` header. The upgrade headers a valid request needs are added when the
//! input does not carry them, so most inputs reach extraction.
//!
//! Beyond "no panic", it checks the promise that no token reaches the backend: once a token
//! was found, the forwarded headers, subprotocols and query carry no token in any transport
//! the route reads, no copy of it in any transport at all (as wsgate would read it), no
//! `Authorization: Bearer` value, and no subprotocol entry equal to it.
#![no_main]

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use wsgate_core::auth::token;
use wsgate_core::config::{Auth, OnExpiry, Transport};
use wsgate_core::{backend, handshake};

const TRANSPORTS: [Transport; 4] = [
    Transport::Header,
    Transport::Subprotocol,
    Transport::Query,
    Transport::Cookie,
];

/// Low 4 bits: which transports; high bits: a rotation of their order.
fn auth(selector: u8) -> Auth {
    let mut token_from: Vec<Transport> = TRANSPORTS
        .iter()
        .enumerate()
        .filter(|(i, _)| selector & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect();
    if token_from.is_empty() {
        token_from = TRANSPORTS.to_vec();
    }
    let len = token_from.len();
    token_from.rotate_left(usize::from(selector >> 4) % len);
    if selector & 0x40 != 0 {
        token_from.reverse();
    }
    Auth {
        provider: 0,
        token_from,
        query_param: "access_token".into(),
        subprotocol_marker: "bearer".into(),
        cookie_name: "access_token".into(),
        require_claims: Vec::new(),
        forward_claims: vec![("sub".into(), HeaderName::from_static("x-auth-subject"))],
        on_expiry: OnExpiry::Close,
    }
}

/// Leading and trailing spaces and tabs, which the HTTP/1 parser drops from header values.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn request(head: &[u8]) -> Option<Request<()>> {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let uri = Uri::try_from(lines.next()?.to_vec()).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(trim_ows(&line[colon + 1..])),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let defaults = [
        (header::HOST, "chat.example.com"),
        (header::UPGRADE, "websocket"),
        (header::CONNECTION, "Upgrade"),
        (header::SEC_WEBSOCKET_VERSION, "13"),
        (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// `Bearer` as the scheme of an Authorization value, in any case, before whitespace or the end.
fn is_bearer(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.len() >= 6
        && bytes[..6].eq_ignore_ascii_case(b"bearer")
        && bytes.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let auth = auth(selector);
    let Some(request) = request(head) else {
        return;
    };
    let Ok(upgrade) = handshake::validate(&request) else {
        return;
    };
    let headers = request.headers();
    let query = request.uri().query();
    let Ok(Some(found)) = token::extract(&auth, headers, query, &upgrade.protocols) else {
        return;
    };
    assert!(!found.is_empty(), "an empty token was accepted");

    // What server.rs forwards to the backend.
    let mut forwarded = backend::end_to_end(headers);
    token::strip_headers(&auth, &found, &mut forwarded);
    let mut protocols = upgrade.protocols.clone();
    token::strip_protocols(&auth, &found, &mut protocols);
    let rest = token::strip_query(&auth, &found, query);
    let again = token::extract(&auth, &forwarded, rest.as_deref(), &protocols);
    assert_eq!(again, Ok(None), "a token survives stripping: {found:?}");
    // Nor does a copy in a transport the route does not read.
    for transport in TRANSPORTS {
        let mut only = auth.clone();
        only.token_from = vec![transport];
        let copy = token::extract(&only, &forwarded, rest.as_deref(), &protocols);
        assert_ne!(
            copy,
            Ok(Some(found.clone())),
            "a copy survives in {transport:?}"
        );
    }
    for value in forwarded.get_all(header::AUTHORIZATION) {
        assert!(
            !is_bearer(value),
            "a bearer Authorization is forwarded: {value:?}"
        );
    }
    assert!(
        !protocols.contains(&found),
        "the token is still offered as a subprotocol"
    );
});
