//! Picks the route for a request: the host decides first (exact name, then the longest
//! wildcard, then routes without `match.host`), and among those the longest path prefix,
//! matched on segment boundaries so that `/chat` never captures `/chatroom`.

use std::sync::Arc;

use crate::config::{HostMatch, Route};

/// Routes sorted from most to least specific, so the first match wins.
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<Arc<T>>,
}

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
        Router { entries }
    }

    /// `host` is lower-case without a port; `path` is the request path without the query.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<T>> {
        self.entries.iter().find(|entry| {
            let route: &Route = (***entry).as_ref();
            route.host.as_ref().is_none_or(|h| h.matches(host)) && prefix_matches(&route.path, path)
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

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
            },
            origins: Origins::Any,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
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
        let name = |host: &str, path: &str| router.find(host, path).map(|e| e.0.name.clone());
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
        assert!(strict.find("x", "/chatroom").is_none());
        assert!(strict.find("x", "/").is_none());
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
