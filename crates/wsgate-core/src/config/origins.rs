//! The origin grammar, `scheme://host[:port]`, shared by `routes[].origins` entries and the
//! `Origin` header they are compared with. Origins are compared as scheme, host and port after
//! normalisation (lower case, default ports made explicit), never as strings, so
//! `https://app.example.com.evil.com`, `https://evilapp.example.com`, `http://` for `https://`
//! and `null` all fail to match `https://app.example.com`. Applying a route's rules to a
//! request is `check` in `origin.rs` at the crate root.

use std::fmt;

/// A normalised serialised origin: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// An allowlist entry: an exact origin or `scheme://*.suffix[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: Scheme,
    /// Exact host, or for a wildcard the suffix with its leading dot (`.example.com`).
    host: String,
    wildcard: bool,
    port: u16,
}

impl Origin {
    /// Parses an `Origin` header value; `None` for `null`, paths, user info or anything else
    /// that is not exactly `scheme://host[:port]`.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, host, port) = split(text)?;
        if host.contains('*') {
            return None;
        }
        Some(Origin { scheme, host, port })
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let expected = "expected scheme://host[:port] such as https://app.example.com or https://*.example.com (no path)";
        let (scheme, host, port) = split(text).ok_or(expected)?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.contains('*') && suffix.contains('.') => {
                (true, format!(".{suffix}"))
            }
            Some(_) => {
                return Err(
                    "a wildcard needs a domain of at least two labels, such as *.example.com"
                        .to_owned(),
                );
            }
            None if host.contains('*') => return Err(expected.to_owned()),
            None => (false, host),
        };
        Ok(Pattern {
            scheme,
            host,
            wildcard,
            port,
        })
    }

    pub fn matches(&self, origin: &Origin) -> bool {
        let host = if self.wildcard {
            origin.host.len() > self.host.len() && origin.host.ends_with(&self.host)
        } else {
            origin.host == self.host
        };
        host && self.scheme == origin.scheme && self.port == origin.port
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let star = if self.wildcard { "*" } else { "" };
        write!(f, "{scheme}://{star}{}:{}", self.host, self.port)
    }
}

/// `scheme://host[:port]` -> lower-case parts with the default port filled in.
fn split(text: &str) -> Option<(Scheme, String, u16)> {
    // ASCII whitespace only: `str::trim` would also drop Unicode spaces such as U+00A0, which
    // no origin contains.
    let lower = text.trim_ascii().to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return None;
    };
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            "" => (host, default_port),
            _ => (host, after.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (rest, default_port),
        }
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'[' | b']' | b':')
        })
        && !host.starts_with('.')
        && !host.ends_with('.');
    (valid_host && port != 0).then(|| (scheme, host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(pattern: &str, origin: &str) -> bool {
        let pattern = Pattern::parse(pattern).expect("pattern");
        Origin::parse(origin).is_some_and(|o| pattern.matches(&o))
    }

    #[test]
    fn exact_origins_match_after_normalisation() {
        assert!(allowed(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(allowed(
            "https://app.example.com",
            "HTTPS://App.Example.COM"
        ));
        assert!(allowed(
            "https://app.example.com",
            "https://app.example.com:443"
        ));
        assert!(allowed("http://localhost:3000", "http://localhost:3000"));
        assert!(allowed("https://[::1]:8443", "https://[::1]:8443"));
    }

    #[test]
    fn lookalikes_are_refused() {
        for origin in [
            "https://app.example.com.evil.com",
            "https://evilapp.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "null",
            "",
            "app.example.com",
            "wss://app.example.com",
            "https://app.example.com\r\nX: y",
        ] {
            assert!(
                !allowed("https://app.example.com", origin),
                "{origin:?} must be refused"
            );
        }
    }

    /// Found by the `origin_match` fuzz target (fuzz/regressions/origin_match/): `trim` took
    /// Unicode spaces off, so `https://43` followed by U+00A0 parsed as the origin
    /// `https://43:443`, while `check` refused the same header value.
    #[test]
    fn only_ascii_whitespace_is_trimmed() {
        assert_eq!(Origin::parse("https://43\u{a0}\u{a0}"), None);
        assert_eq!(Origin::parse("\u{2003}https://a.example.com"), None);
        assert!(Pattern::parse("https://a.example.com\u{a0}").is_err());
        assert!(allowed("https://a.example.com", " https://a.example.com\t"));
    }

    #[test]
    fn wildcards_need_a_label_and_the_same_scheme_and_port() {
        assert!(allowed("https://*.example.com", "https://a.example.com"));
        assert!(allowed("https://*.example.com", "https://a.b.example.com"));
        assert!(!allowed("https://*.example.com", "https://example.com"));
        assert!(!allowed("https://*.example.com", "https://aexample.com"));
        assert!(!allowed("https://*.example.com", "http://a.example.com"));
        assert!(!allowed(
            "https://*.example.com",
            "https://a.example.com.evil.com"
        ));
        for bad in [
            "https://*.com",
            "https://a.*.com",
            "https://*",
            "ftp://x.com",
            "https://x.com/path",
            "*.example.com",
        ] {
            assert!(
                Pattern::parse(bad).is_err(),
                "{bad:?} must not be a pattern"
            );
        }
    }
}
