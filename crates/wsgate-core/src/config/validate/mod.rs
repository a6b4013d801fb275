//! Walks the [`raw`](super::raw) structs, carrying the YAML path, and builds a typed
//! [`Config`]. Problems are collected rather than returned early, so an operator sees every
//! mistake in one run of `wsgate check`.
//!
//! This module holds the entry point, the [`Validator`] and its helpers for optional,
//! required and list values; the sections are walked in `listen.rs` (`listen`, `admin`,
//! `trusted_proxies`), `cluster.rs`, `providers.rs` and `routes.rs` (a route with its match,
//! backend, auth, origins, limits and timeouts; its message rules in `messages.rs`). What a
//! single scalar may hold is decided in
//! [`scalars`](super::scalars).

mod cluster;
mod listen;
mod messages;
mod providers;
mod routes;

use std::path::Path;

use serde_saphyr::{Location, Spanned};

use super::raw::{self, Scalar};
use super::{Config, Error, Problem};
use crate::config::scalars::substitute;

pub(super) fn parse(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Error> {
    let (root, structural) = super::structure::read(text).map_err(Error::Invalid)?;
    let mut check = Validator {
        problems: Vec::new(),
        env,
        base,
    };
    let config = check.root(&root);
    match config {
        Some(config) if check.problems.is_empty() && structural.is_empty() => Ok(config),
        _ => {
            let follows = |p: &Problem| super::structure::follows(&structural, p);
            let mut problems: Vec<Problem> = check.problems;
            problems.retain(|p| !follows(p));
            problems.extend(structural);
            problems.sort_by_key(|p| p.line);
            Err(Error::Invalid(problems))
        }
    }
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

    /// Every entry parsed; `None` (each problem reported) when any entry fails.
    fn list<T>(
        &mut self,
        path: &str,
        list: &Spanned<Vec<Scalar>>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let parsed: Vec<T> = list
            .value
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.value(&format!("{path}[{i}]"), item, &parse))
            .collect();
        (parsed.len() == list.value.len()).then_some(parsed)
    }

    /// A list that may not be empty; absent, it takes `default` (or is reported as required).
    fn non_empty_list<T>(
        &mut self,
        path: &str,
        parent: &Location,
        list: &Option<Spanned<Vec<Scalar>>>,
        default: Option<Vec<T>>,
        what: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        match list {
            None if default.is_none() => {
                self.fail(path, parent, "is required");
                None
            }
            None => default,
            Some(list) if list.value.is_empty() => {
                self.fail(
                    path,
                    &list.referenced,
                    format!("must list at least one {what}"),
                );
                None
            }
            Some(list) => self.list(path, list, parse),
        }
    }

    fn root(&mut self, root: &raw::Root) -> Option<Config> {
        let top = Location::UNKNOWN;
        let trusted_proxies = self.trusted_proxies(root.trusted_proxies.as_ref());
        let listen = self
            .section("listen", &top, &root.listen)
            .and_then(|listen| self.listen(listen));
        let admin = self
            .section("admin", &top, &root.admin)
            .and_then(|admin| self.admin(admin));
        let providers = self.providers(root.providers.as_ref());
        let names: Vec<String> = root
            .providers
            .iter()
            .flat_map(|list| list.value.iter())
            .map(|p| {
                p.value
                    .name
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_default()
            })
            .collect();
        let routes = self.routes(root.routes.as_ref(), &names);
        let cluster = root.cluster.as_ref().map(|cluster| self.cluster(cluster));
        // A `cluster` that failed leaves `None` inside: no Config (its problems are recorded).
        let cluster = match cluster {
            None => None,
            Some(cluster) => Some(cluster?),
        };
        Some(Config {
            listen: listen?,
            trusted_proxies,
            admin: admin?,
            providers,
            routes,
            cluster,
        })
    }
}
