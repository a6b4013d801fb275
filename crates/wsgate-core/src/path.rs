//! The rule every request path obeys before it is routed. The handshake refuses a request
//! whose path breaks it, and the configuration refuses a route prefix that breaks it (such a
//! prefix could never match).

/// Why `path` cannot be routed safely, if it cannot. Routes match prefixes of the path as it
/// arrived, while a backend may decode percent-escapes, fold backslashes, merge slashes or
/// resolve dot segments; any path on which the two could disagree (`/public/../admin`,
/// `/public/%2e%2e/admin`, `/public%2Fadmin`, `//admin`, `/%61dmin`) is refused rather than
/// normalised, since no normal form is guaranteed to be the backend's.
pub(crate) fn unsafe_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the request target must be an absolute path");
    }
    if path.contains('\\') {
        return Some("backslashes are not allowed in the path");
    }
    if path.contains("//") {
        return Some("empty path segments are not allowed");
    }
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        let escaped = rest
            .get(at + 1..at + 3)
            .filter(|hex| hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            None => return Some("invalid percent-encoding in the path"),
            // Unreserved characters have a literal form (RFC 3986 section 2.3); '/', '\', '%'
            // and NUL change the path's structure for whoever decodes them.
            Some(byte)
                if byte.is_ascii_alphanumeric()
                    || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%' | 0) =>
            {
                return Some(
                    "percent-encoded '/', '\\', '%', NUL or unreserved characters in the path",
                );
            }
            Some(_) => rest = &rest[at + 3..],
        }
    }
    // `;` starts path parameters, which some servers strip before resolving `..;`.
    let dot_segment = path.split('/').any(|segment| {
        let name = segment_name(segment);
        name == "." || name == ".."
    });
    dot_segment.then_some("dot segments are not allowed in the path")
}

/// A path segment without its `;parameters`, as Servlet containers read it.
pub(crate) fn segment_name(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_a_backend_could_read_otherwise_are_refused() {
        for (path, why) in [
            ("chat", "absolute path"),
            ("/a\\b", "backslashes"),
            ("/a//b", "empty path segments"),
            ("/a%2", "invalid percent-encoding"),
            ("/a%2Fb", "percent-encoded"),
            ("/a/..;x/b", "dot segments"),
        ] {
            let refused = unsafe_path(path).unwrap_or_default();
            assert!(refused.contains(why), "{path:?}: {refused:?}");
        }
        for path in ["/", "/chat/", "/a/..x/b", "/a%20b", "/chat;v=1"] {
            assert_eq!(unsafe_path(path), None, "{path:?}");
        }
    }
}
