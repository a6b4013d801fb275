//! Picks the route for a request: the host decides first (exact name, then the longest
//! wildcard, then routes without `match.host`), and among those the longest path prefix,
//! matched on segment boundaries so that `/chat` never captures `/chatroom`.
//!
//! Backends do not all read a path the way the proxy does: Tomcat, Jetty and Spring strip
//! `;parameters` from each segment, and ASP.NET Core and SignalR ignore letter case. A path
//! whose route would change under either reading is refused, so that no stricter route can be
//! skipped by writing its path another way (`/ws/admin;x`, `/WS/ADMIN`).

use std::sync::Arc;

use crate::config::{HostMatch, Route};
use crate::path;

/// Routes sorted from most to least specific, so the first match wins.
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<Arc<T>>,
    /// Some route's path prefix has capitals: every request path is then also read folded.
    mixed_case: bool,
}

/// The request path picks different routes depending on how a backend reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

impl<T: AsRef<Route>> Router<T> {
    pub fn new(entries: impl IntoIterator<Item = T>) -> Router<T> {
        let mut entries: Vec<Arc<T>> = entries.into_iter().map(Arc::new).collect();
        entries.sort_by_key(|entry| {
            let route: &Route = (**entry).as_ref();
            let host_rank = match &route.host {
                Some(HostMatch::Exact(_)) => (2, 0),
                Some(HostMatch::Wildcard(suffix)) => (1, suffix.len()),
                None => (0, 0),
            };
            std::cmp::Reverse((host_rank, route.path.len()))
        });
        let mixed_case = entries.iter().any(|entry| {
            let route: &Route = (**entry).as_ref();
            route.path.bytes().any(|b| b.is_ascii_uppercase())
        });
        Router {
            entries,
            mixed_case,
        }
    }

    /// The route for a request: `host` is lower-case without a port; `path` is the request
    /// path without the query. `Err(Ambiguous)` when the path would pick another route (or
    /// none) with its `;parameters` stripped or its letter case ignored.
    pub fn find(&self, host: &str, path: &str) -> Result<Option<&Arc<T>>, Ambiguous> {
        let found = self.first(host, |prefix| prefix_matches(prefix, path, false));
        let has_params = path.contains(';');
        if !has_params && !self.mixed_case && !path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(found);
        }
        let stripped = has_params.then(|| strip_params(path));
        let stripped = stripped.as_deref().unwrap_or(path);
        let readings = [
            self.first(host, |prefix| prefix_matches(prefix, stripped, false)),
            self.first(host, |prefix| prefix_matches(prefix, path, true)),
            self.first(host, |prefix| prefix_matches(prefix, stripped, true)),
        ];
        let same = |other: &Option<&Arc<T>>| match (found, other) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if readings.iter().all(same) {
            Ok(found)
        } else {
            Err(Ambiguous)
        }
    }

    /// The most specific route for `host` whose path prefix passes `matches`.
    fn first(&self, host: &str, matches: impl Fn(&str) -> bool) -> Option<&Arc<T>> {
        self.entries.iter().find(|entry| {
            let route: &Route = (***entry).as_ref();
            route.host.as_ref().is_none_or(|h| h.matches(host)) && matches(&route.path)
        })
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<T>> {
        self.entries
            .iter()
            .find(|entry| (***entry).as_ref().name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.entries.iter()
    }
}

/// `prefix` is a path prefix of `path` on a segment boundary; with `fold`, without regard to
/// ASCII letter case (as case-insensitive backends match).
fn prefix_matches(prefix: &str, path: &str, fold: bool) -> bool {
    let head = path.get(..prefix.len());
    let same = if fold {
        head.is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    } else {
        head == Some(prefix)
    };
    prefix == "/"
        || same
            && path
                .get(prefix.len()..)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path with every segment's `;parameters` removed, as Servlet containers read it.
fn strip_params(path: &str) -> String {
    path.split('/')
        .map(path::segment_name)
        .collect::<Vec<_>>()
        .join("/")
}

/// The backend request target: the backend path, then what the route prefix left of the
/// client's path, then both queries.
pub fn backend_target(route: &Route, path: &str, query: Option<&str>) -> String {
    let rest = if route.path == "/" {
        path
    } else {
        &path[route.path.len().min(path.len())..]
    };
    let mut target = match (route.backend.path.as_str(), rest) {
        ("/", "") => "/".to_owned(),
        ("/", rest) => rest.to_owned(),
        (base, rest) => format!("{base}{rest}"),
    };
    let queries: Vec<&str> = [route.backend.query.as_deref(), query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    if !queries.is_empty() {
        target.push('?');
        target.push_str(&queries.join("&"));
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, Backend, DEFAULT_TOKEN_FROM, Limits, OnExpiry, Origins, Timeouts};

    fn route(name: &str, host: Option<HostMatch>, path: &str, backend_path: &str) -> Route {
        Route {
            name: name.to_owned(),
            host,
            path: path.to_owned(),
            backend: Backend {
                authority: "127.0.0.1:1".to_owned(),
                path: backend_path.to_owned(),
                query: None,
            },
            auth: Auth {
                provider: 0,
                token_from: DEFAULT_TOKEN_FROM.to_vec(),
                query_param: "access_token".into(),
                subprotocol_marker: "bearer".into(),
                cookie_name: "access_token".into(),
                require_claims: Vec::new(),
                forward_claims: Vec::new(),
                on_expiry: OnExpiry::Close,
                max_token_lifetime: None,
                refresh_prefix: None,
            },
            origins: Origins::Any,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            messages: None,
        }
    }

    struct Entry(Route);
    impl AsRef<Route> for Entry {
        fn as_ref(&self) -> &Route {
            &self.0
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let router = Router::new([
            Entry(route("root", None, "/", "/")),
            Entry(route("chat", None, "/chat", "/")),
            Entry(route("chat-rooms", None, "/chat/rooms", "/")),
            Entry(route(
                "wild",
                Some(HostMatch::Wildcard(".example.com".into())),
                "/",
                "/",
            )),
            Entry(route(
                "exact",
                Some(HostMatch::Exact("a.example.com".into())),
                "/chat",
                "/",
            )),
        ]);
        let name = |host: &str, path: &str| {
            router
                .find(host, path)
                .expect("unambiguous")
                .map(|e| e.0.name.clone())
        };
        assert_eq!(
            name("other", "/chat/rooms/1").as_deref(),
            Some("chat-rooms")
        );
        assert_eq!(name("other", "/chat").as_deref(), Some("chat"));
        assert_eq!(name("other", "/chatroom").as_deref(), Some("root"));
        assert_eq!(name("b.example.com", "/chat").as_deref(), Some("wild"));
        assert_eq!(name("a.example.com", "/chat/x").as_deref(), Some("exact"));
        assert_eq!(name("a.example.com", "/other").as_deref(), Some("wild"));
        let strict = Router::new([Entry(route("chat", None, "/chat", "/"))]);
        assert_eq!(strict.find("x", "/chatroom").map(|e| e.is_none()), Ok(true));
        assert_eq!(strict.find("x", "/").map(|e| e.is_none()), Ok(true));
    }

    #[test]
    fn paths_read_otherwise_by_backends_must_pick_the_same_route() {
        let router = Router::new([
            Entry(route("ws", None, "/ws", "/")),
            Entry(route("admin", None, "/ws/admin", "/")),
        ]);
        let name = |path: &str| router.find("x", path).map(|e| e.map(|e| e.0.name.clone()));
        for path in ["/ws/admin;x", "/ws/admin;a/b", "/ws/ADMIN", "/ws/ADMIN/x"] {
            assert_eq!(name(path), Err(Ambiguous), "{path}");
        }
        assert_eq!(name("/ws/admin/;x"), Ok(Some("admin".into())));
        assert_eq!(name("/ws/x;y"), Ok(Some("ws".into())));
        assert_eq!(
            name("/WS/x"),
            Ok(None),
            "no route under the literal reading"
        );
        assert_eq!(name("/ws;a/admin"), Ok(None));
        assert_eq!(name("/Ws"), Ok(None));
        // A prefix written with capitals is matched literally and, folded, still the same.
        let upper = Router::new([Entry(route("chat", None, "/Chat", "/"))]);
        assert_eq!(upper.find("x", "/Chat/1").map(|e| e.is_some()), Ok(true));
        assert_eq!(upper.find("x", "/chat").map(|e| e.is_some()), Ok(false));
        assert_eq!(strip_params("/a;x/b;y=1;z/c"), "/a/b/c");
        assert!(prefix_matches("/ws/Admin", "/WS/admin/x", true));
        assert!(!prefix_matches("/ws", "/wsx", true));
        assert!(!prefix_matches("/wsé", "/ws", true));
    }

    #[test]
    fn backend_targets() {
        let r = route("r", None, "/chat", "/ws");
        assert_eq!(backend_target(&r, "/chat", None), "/ws");
        assert_eq!(
            backend_target(&r, "/chat/room/1", Some("a=1")),
            "/ws/room/1?a=1"
        );
        let root = route("r", None, "/", "/");
        assert_eq!(backend_target(&root, "/x/y", None), "/x/y");
        let mut q = route("r", None, "/chat", "/");
        q.backend.query = Some("v=2".into());
        assert_eq!(backend_target(&q, "/chat/", Some("a=1")), "/?v=2&a=1");
        assert_eq!(backend_target(&q, "/chat", None), "/?v=2");
    }
}
