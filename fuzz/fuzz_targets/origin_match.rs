//! Origin normalisation and allowlist matching (config/origins.rs) and the request check
//! (origin.rs).
//!
//! Input: `pattern\norigin` (UTF-8). Beyond "no panic", it checks that a pattern prints as
//! text that parses back to itself; that every valid origin is a valid exact pattern matching
//! itself; that an exact pattern matches only its own normalised origin and a wildcard only
//! hosts with at least one more label; and that `origin::check` on the header agrees.
#![no_main]

use hyper::header::{self, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wsgate_core::config::Origins;
use wsgate_core::origin::{self, Origin, Pattern};

/// `scheme://host:port` of a parsed pattern's text, split as (scheme, host, port).
fn parts(printed: &str) -> (&str, &str, &str) {
    let (scheme, rest) = printed.split_once("://").expect("printed with a scheme");
    let (host, port) = rest.rsplit_once(':').expect("printed with a port");
    (scheme, host, port)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern_text, origin_text) = text.split_once('\n').unwrap_or((text, ""));
    let pattern = Pattern::parse(pattern_text);
    let origin = Origin::parse(origin_text);

    if let Ok(pattern) = &pattern {
        let printed = pattern.to_string();
        assert_eq!(
            Pattern::parse(&printed).as_ref(),
            Ok(pattern),
            "{printed:?} does not parse back"
        );
    }
    if let Some(origin) = &origin {
        let exact = Pattern::parse(origin_text).expect("a valid origin is a valid pattern");
        assert!(
            exact.matches(origin),
            "{origin_text:?} does not match itself"
        );
        assert!(!exact.to_string().contains('*'));
    }
    if let (Ok(pattern), Some(origin)) = (&pattern, &origin) {
        if pattern.matches(origin) {
            let printed = pattern.to_string();
            let own = Pattern::parse(origin_text)
                .expect("checked above")
                .to_string();
            let (scheme, host, port) = parts(&printed);
            let (own_scheme, own_host, own_port) = parts(&own);
            assert_eq!((scheme, port), (own_scheme, own_port));
            match host.strip_prefix('*') {
                Some(suffix) => assert!(
                    own_host.len() > suffix.len() && own_host.ends_with(suffix),
                    "{own:?} matched {printed:?}"
                ),
                None => {
                    assert_eq!(host, own_host);
                    assert_eq!(Origin::parse(pattern_text).as_ref(), Some(origin));
                }
            }
        }
        // The request-level check agrees with the parts.
        if let Ok(value) = HeaderValue::from_str(origin_text) {
            let mut headers = HeaderMap::new();
            headers.insert(header::ORIGIN, value);
            let origins = Origins::Allow {
                patterns: vec![pattern.clone()],
                allow_missing: false,
            };
            let allowed = origin::check(&origins, &headers).is_ok();
            assert_eq!(
                allowed,
                pattern.matches(origin),
                "check disagrees on {origin_text:?}"
            );
        }
    } else if let (Ok(pattern), Ok(value)) = (&pattern, HeaderValue::from_str(origin_text)) {
        // An origin that does not parse is never allowed.
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, value);
        let origins = Origins::Allow {
            patterns: vec![pattern.clone()],
            allow_missing: true,
        };
        assert!(origin::check(&origins, &headers).is_err());
    }
});
