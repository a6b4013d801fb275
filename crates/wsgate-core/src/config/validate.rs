//! Walks the [`raw`](super::raw) structs, carrying the YAML path, and builds a typed
//! [`Config`]. Problems are collected rather than returned early, so an operator sees every
//! mistake in one run of `wsgate check`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::raw::{self, Scalar, Unsupported};
use super::{
    Admin, Backend, Config, DEFAULT_BACKEND_CONNECT, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SHUTDOWN_GRACE, Error, HostMatch,
    Listen, Problem, Route, units,
};
use crate::tls::{self, Identity};

/// Largest `max_message_size` accepted: a message is buffered whole before it is relayed.
const MAX_MESSAGE_SIZE_CEILING: u64 = 64 << 20;

pub(super) fn parse(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Error> {
    let root = deserialize(text).map_err(|problem| Error::Invalid(vec![problem]))?;
    let mut check = Validator {
        problems: Vec::new(),
        env,
        base,
    };
    let config = check.root(&root);
    match config {
        Some(config) if check.problems.is_empty() => Ok(config),
        _ => Err(Error::Invalid(check.problems)),
    }
}

/// Structural errors (unknown key, a list where a mapping belongs) stop serde at the first
/// one; everything else is left to the validator, which reports them all.
fn deserialize(text: &str) -> Result<raw::Root, Problem> {
    if text.trim().is_empty() {
        return Err(Problem {
            path: String::new(),
            line: 1,
            message: "the file is empty; listen, admin and routes are required".to_owned(),
        });
    }
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|error| {
            path = error.path().to_string();
            error.into_inner()
        })
    });
    result.map_err(|error| {
        let line = error.location().map_or(0, |loc| loc.line());
        let mut message = error.without_snippet().to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // `Spanned<T>` shows up in serde's path as a `value` field; users never wrote it.
        path = path.replace(".value", "");
        if path == "." || path == "value" {
            path.clear();
        }
        Problem {
            path,
            line,
            message,
        }
    })
}

struct Validator<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base: &'a Path,
}

impl Validator<'_> {
    fn fail(&mut self, path: &str, at: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            // Keys missing at the top level have no node of their own: point at the start.
            line: at.line().max(1),
            message: message.into(),
        });
    }

    /// The scalar's text with `${VAR}` substituted.
    fn text(&mut self, path: &str, scalar: &Scalar) -> Option<String> {
        match substitute(&scalar.value, self.env) {
            Ok(text) => Some(text),
            Err(message) => {
                self.fail(path, &scalar.referenced, message);
                None
            }
        }
    }

    fn value<T>(
        &mut self,
        path: &str,
        scalar: &Scalar,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(path, scalar)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(message) => {
                self.fail(path, &scalar.referenced, format!("{text:?}: {message}"));
                None
            }
        }
    }

    fn optional<T>(
        &mut self,
        path: &str,
        scalar: &Option<Scalar>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match scalar {
            None => default,
            Some(scalar) => self.value(path, scalar, parse).unwrap_or(default),
        }
    }

    fn required<T>(
        &mut self,
        path: &str,
        parent: &Location,
        scalar: &Option<Scalar>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match scalar {
            Some(scalar) => self.value(path, scalar, parse),
            None => {
                self.fail(path, parent, "is required");
                None
            }
        }
    }

    fn section<'s, T>(
        &mut self,
        path: &str,
        parent: &Location,
        section: &'s Option<Spanned<T>>,
    ) -> Option<&'s Spanned<T>> {
        if section.is_none() {
            self.fail(path, parent, "is required");
        }
        section.as_ref()
    }

    fn unsupported(&mut self, path: &str, key: &Unsupported, arrives_with: &str) {
        if let Some(key) = key {
            self.fail(
                path,
                &key.referenced,
                format!(
                    "not supported yet by this version of wsgate ({arrives_with}); remove the key"
                ),
            );
        }
    }

    fn root(&mut self, root: &raw::Root) -> Option<Config> {
        let top = Location::UNKNOWN;
        self.unsupported(
            "trusted_proxies",
            &root.trusted_proxies,
            "admission control",
        );
        self.unsupported("providers", &root.providers, "JWT authentication");
        let listen = self
            .section("listen", &top, &root.listen)
            .and_then(|listen| self.listen(listen));
        let admin = self
            .section("admin", &top, &root.admin)
            .and_then(|admin| self.admin(admin));
        let routes = self.routes(root.routes.as_ref());
        Some(Config {
            listen: listen?,
            admin: admin?,
            routes,
        })
    }

    fn listen(&mut self, listen: &Spanned<raw::Listen>) -> Option<Listen> {
        let at = &listen.referenced;
        let l = &listen.value;
        let address = self.required("listen.address", at, &l.address, socket_addr);
        let tls = self
            .section("listen.tls", at, &l.tls)
            .and_then(|tls| self.tls(tls));
        let handshake_timeout = self.optional(
            "listen.handshake_timeout",
            &l.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
            positive_duration,
        );
        let max_connections = self.optional(
            "listen.max_connections",
            &l.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            positive_count,
        );
        let shutdown_grace = self.optional(
            "listen.shutdown_grace",
            &l.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
            units::duration,
        );
        Some(Listen {
            address: address?,
            tls: tls?,
            handshake_timeout,
            max_connections,
            shutdown_grace,
        })
    }

    fn tls(&mut self, tls: &Spanned<raw::Tls>) -> Option<Arc<Identity>> {
        let at = &tls.referenced;
        let cert = self.required("listen.tls.cert", at, &tls.value.cert, |p| Ok(p.to_owned()));
        let key = self.required("listen.tls.key", at, &tls.value.key, |p| Ok(p.to_owned()));
        let (cert_path, key_path) = (self.base.join(cert?), self.base.join(key?));
        match Identity::from_pem_files(&cert_path, &key_path) {
            Ok(identity) => Some(Arc::new(identity)),
            Err(error) => {
                // Point at the file that is wrong, or at the pair when they do not match.
                let (path, scalar) = match error {
                    tls::Error::Cert { .. } | tls::Error::NoCert { .. } => {
                        ("listen.tls.cert", &tls.value.cert)
                    }
                    tls::Error::Key { .. } => ("listen.tls.key", &tls.value.key),
                    tls::Error::Rustls(_) => ("listen.tls", &None),
                };
                let line = scalar.as_ref().map_or(at, |s| &s.referenced);
                self.fail(path, line, error.to_string());
                None
            }
        }
    }

    fn admin(&mut self, admin: &Spanned<raw::Admin>) -> Option<Admin> {
        let a = &admin.value;
        self.unsupported("admin.token", &a.token, "the admin API");
        let address = self.required("admin.address", &admin.referenced, &a.address, socket_addr);
        Some(Admin { address: address? })
    }

    fn routes(&mut self, routes: Option<&Spanned<Vec<Spanned<raw::Route>>>>) -> Vec<Route> {
        let Some(routes) = routes else {
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut matches = HashSet::new();
        let mut valid = Vec::new();
        for (i, route) in routes.value.iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(route) = self.route(&path, route) else {
                continue;
            };
            let at = &routes.value[i].referenced;
            if !names.insert(route.name.clone()) {
                self.fail(
                    &format!("{path}.name"),
                    at,
                    format!("{:?} is used by an earlier route", route.name),
                );
            }
            if !matches.insert((route.host.clone(), route.path.clone())) {
                self.fail(
                    &format!("{path}.match"),
                    at,
                    "an earlier route has the same host and path",
                );
            }
            valid.push(route);
        }
        valid
    }

    fn route(&mut self, path: &str, route: &Spanned<raw::Route>) -> Option<Route> {
        let at = &route.referenced;
        let r = &route.value;
        self.unsupported(&format!("{path}.auth"), &r.auth, "JWT authentication");
        self.unsupported(&format!("{path}.origins"), &r.origins, "admission control");
        let name = self.required(&format!("{path}.name"), at, &r.name, route_name);
        let matcher = self.section(&format!("{path}.match"), at, &r.matcher);
        let (host, prefix) = match matcher {
            Some(m) => {
                let host =
                    m.value.host.as_ref().and_then(|host| {
                        self.value(&format!("{path}.match.host"), host, host_match)
                    });
                let prefix = self.required(
                    &format!("{path}.match.path"),
                    &m.referenced,
                    &m.value.path,
                    path_prefix,
                );
                (host, prefix)
            }
            None => (None, None),
        };
        let backend = self.required(&format!("{path}.backend"), at, &r.backend, backend_url);
        let max_message_size = self.limits(path, r.limits.as_ref());
        let backend_connect = match &r.timeouts {
            Some(t) => {
                let tp = format!("{path}.timeouts");
                self.unsupported(&format!("{tp}.idle"), &t.value.idle, "idle timeouts");
                self.unsupported(
                    &format!("{tp}.ping_interval"),
                    &t.value.ping_interval,
                    "keep-alive pings",
                );
                self.unsupported(
                    &format!("{tp}.pong_timeout"),
                    &t.value.pong_timeout,
                    "keep-alive pings",
                );
                self.optional(
                    &format!("{tp}.backend_connect"),
                    &t.value.backend_connect,
                    DEFAULT_BACKEND_CONNECT,
                    positive_duration,
                )
            }
            None => DEFAULT_BACKEND_CONNECT,
        };
        Some(Route {
            name: name?,
            host,
            path: prefix?,
            backend: backend?,
            max_message_size,
            backend_connect,
        })
    }

    fn limits(&mut self, path: &str, limits: Option<&Spanned<raw::Limits>>) -> usize {
        let Some(limits) = limits else {
            return DEFAULT_MAX_MESSAGE_SIZE;
        };
        let l = &limits.value;
        let lp = format!("{path}.limits");
        let unsupported = [
            ("handshake_rate_per_ip", &l.handshake_rate_per_ip),
            ("handshake_burst_per_ip", &l.handshake_burst_per_ip),
            (
                "max_connections_per_subject",
                &l.max_connections_per_subject,
            ),
            ("message_rate", &l.message_rate),
            ("message_burst", &l.message_burst),
            ("byte_rate", &l.byte_rate),
            ("on_limit", &l.on_limit),
        ];
        for (key, value) in unsupported {
            self.unsupported(&format!("{lp}.{key}"), value, "admission control");
        }
        self.optional(
            &format!("{lp}.max_message_size"),
            &l.max_message_size,
            DEFAULT_MAX_MESSAGE_SIZE,
            |text| {
                let size = units::size(text)?;
                if size == 0 || size > MAX_MESSAGE_SIZE_CEILING {
                    return Err("must be between 1B and 64MiB".to_owned());
                }
                usize::try_from(size).map_err(|_| "too large for this platform".to_owned())
            },
        )
    }
}

/// Replaces every `${NAME}` with the variable's value; an unset variable is an error.
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        "expected an IP address and port, such as 0.0.0.0:8443 or [::]:8443".to_owned()
    })
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match units::duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

fn positive_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err("expected a whole number greater than zero".to_owned()),
        Ok(count) => Ok(count),
    }
}

fn route_name(text: &str) -> Result<String, String> {
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

fn host_match(text: &str) -> Result<HostMatch, String> {
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

fn path_prefix(text: &str) -> Result<String, String> {
    let valid = text.starts_with('/')
        && !text.contains(['?', '#', '%', ' '])
        && !text
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    if !valid {
        return Err(
            "expected an absolute path prefix such as /chat (no query, '%' or dot segments)"
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

fn backend_url(text: &str) -> Result<Backend, String> {
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
}
