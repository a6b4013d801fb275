//! Origin allowlists against cross-site WebSocket hijacking: a route's `origins` rules
//! applied to a request. What an origin is, and when a pattern matches one, is decided with
//! the configuration that holds the patterns ([`Pattern`]).

use hyper::header::{self, HeaderMap};

use crate::config::Origins;
pub use crate::config::origins::{Origin, Pattern};

/// Applies a route's `origins` rules to the request's `Origin` header(s).
pub fn check(origins: &Origins, headers: &HeaderMap) -> Result<(), &'static str> {
    let Origins::Allow {
        patterns,
        allow_missing,
    } = origins
    else {
        return Ok(());
    };
    let mut values = headers.get_all(header::ORIGIN).iter();
    let origin = match (values.next(), values.next()) {
        (None, _) if *allow_missing => return Ok(()),
        (None, _) => return Err("an Origin header is required"),
        (Some(_), Some(_)) => return Err("several Origin headers"),
        (Some(value), None) => value,
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(Origin::parse)
        .ok_or("the Origin is not a valid origin")?;
    if patterns.iter().any(|pattern| pattern.matches(&origin)) {
        Ok(())
    } else {
        Err("the Origin is not allowed")
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn origins(allow_missing: bool) -> Origins {
        Origins::Allow {
            patterns: vec![Pattern::parse("https://*.example.com").expect("pattern")],
            allow_missing,
        }
    }

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ORIGIN, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn one_allowed_origin_header_passes() {
        let allowed = headers(&["https://app.example.com"]);
        assert_eq!(check(&origins(false), &allowed), Ok(()));
        let other = headers(&["https://app.example.org"]);
        assert_eq!(
            check(&origins(true), &other),
            Err("the Origin is not allowed")
        );
        assert_eq!(
            check(&origins(true), &headers(&["null"])),
            Err("the Origin is not a valid origin")
        );
        assert_eq!(check(&Origins::Any, &headers(&["null"])), Ok(()));
    }

    #[test]
    fn a_missing_origin_passes_only_when_allowed_and_two_never_do() {
        assert_eq!(
            check(&origins(false), &headers(&[])),
            Err("an Origin header is required")
        );
        assert_eq!(check(&origins(true), &headers(&[])), Ok(()));
        let two = headers(&["https://a.example.com", "https://a.example.com"]);
        assert_eq!(check(&origins(true), &two), Err("several Origin headers"));
    }
}
