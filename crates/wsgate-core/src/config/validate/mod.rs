//! Walks the [`raw`](super::raw) structs, carrying the YAML path, and builds a typed
//! [`Config`]. Problems are collected rather than returned early, so an operator sees every
//! mistake in one run of `wsgate check`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use super::raw::{self, Scalar};
use super::scalars::*;
use super::*;
use crate::origin::Pattern;
use crate::tls::{self, Identity};

/// Largest `max_message_size` accepted: a message is buffered whole before it is relayed.
const MAX_MESSAGE_SIZE_CEILING: u64 = 64 << 20;

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
        let trusted_proxies = match &root.trusted_proxies {
            Some(list) => self
                .list("trusted_proxies", list, parse_cidr)
                .unwrap_or_default(),
            None => Vec::new(),
        };
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
        Some(Config {
            listen: listen?,
            trusted_proxies,
            admin: admin?,
            providers,
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
        let busy_poll = self.optional(
            "listen.busy_poll",
            &l.busy_poll,
            DEFAULT_BUSY_POLL,
            busy_poll,
        );
        let ipv6_prefix = self.optional(
            "listen.ipv6_prefix",
            &l.ipv6_prefix,
            DEFAULT_IPV6_PREFIX,
            ipv6_prefix,
        );
        let max_pending_per_ip = self.optional(
            "listen.max_pending_per_ip",
            &l.max_pending_per_ip,
            DEFAULT_MAX_PENDING_PER_IP,
            positive_count,
        );
        Some(Listen {
            address: address?,
            tls: tls?,
            handshake_timeout,
            max_connections,
            shutdown_grace,
            busy_poll,
            ipv6_prefix,
            max_pending_per_ip,
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
        let address = self.required("admin.address", &admin.referenced, &a.address, socket_addr);
        let token = a.token.as_ref().and_then(|token| {
            // Validated without echoing the value: it is a secret.
            let text = self.text("admin.token", token)?;
            if text.len() < 16 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                let message =
                    "must be at least 16 characters without spaces (the value is not shown)";
                self.fail("admin.token", &token.referenced, message);
                return None;
            }
            Some(Secret::new(text))
        });
        Some(Admin {
            address: address?,
            token,
        })
    }

    fn routes(
        &mut self,
        routes: Option<&Spanned<Vec<Spanned<raw::Route>>>>,
        providers: &[String],
    ) -> Vec<Route> {
        let Some(routes) = routes else {
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut matches = HashSet::new();
        let mut valid = Vec::new();
        for (i, route) in routes.value.iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(route) = self.route(&path, route, providers) else {
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

    fn route(
        &mut self,
        path: &str,
        route: &Spanned<raw::Route>,
        providers: &[String],
    ) -> Option<Route> {
        let at = &route.referenced;
        let r = &route.value;
        let auth = self
            .section(&format!("{path}.auth"), at, &r.auth)
            .and_then(|auth| self.auth(&format!("{path}.auth"), auth, providers));
        let origins = match &r.origins {
            Some(origins) => self.origins(&format!("{path}.origins"), origins),
            None => {
                let message = "is required: list the allowed browser origins, or write `origins: any` to opt out";
                self.fail(&format!("{path}.origins"), at, message);
                None
            }
        };
        if let (Some(auth), Some(Origins::Any)) = (&auth, &origins)
            && auth.token_from.contains(&Transport::Cookie)
        {
            let message =
                "a cookie token needs an Origin allowlist: browsers send cookies cross-site";
            self.fail(&format!("{path}.origins"), at, message);
        }
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
        let limits = self.limits(path, r.limits.as_ref());
        let timeouts = self.timeouts(path, r.timeouts.as_ref());
        Some(Route {
            name: name?,
            host,
            path: prefix?,
            backend: backend?,
            auth: auth?,
            origins: origins?,
            limits,
            timeouts,
        })
    }

    fn limits(&mut self, path: &str, limits: Option<&Spanned<raw::Limits>>) -> Limits {
        let defaults = Limits::default();
        let Some(limits) = limits else {
            return defaults;
        };
        let l = &limits.value;
        let field = |name: &str| format!("{path}.limits.{name}");
        let max_message_size = self.optional(
            &field("max_message_size"),
            &l.max_message_size,
            defaults.max_message_size,
            |text| {
                let size = units::size(text)?;
                if size == 0 || size > MAX_MESSAGE_SIZE_CEILING {
                    return Err("must be between 1B and 64MiB".to_owned());
                }
                usize::try_from(size).map_err(|_| "too large for this platform".to_owned())
            },
        );
        let byte_rate = l
            .byte_rate
            .as_ref()
            .and_then(|rate| self.value(&field("byte_rate"), rate, |t| parse_rate(t, true)));
        Limits {
            handshake_rate_per_ip: self.optional(
                &field("handshake_rate_per_ip"),
                &l.handshake_rate_per_ip,
                defaults.handshake_rate_per_ip,
                |t| parse_rate(t, false),
            ),
            handshake_burst_per_ip: self.optional(
                &field("handshake_burst_per_ip"),
                &l.handshake_burst_per_ip,
                defaults.handshake_burst_per_ip,
                positive_u32,
            ),
            max_connections_per_subject: self.optional(
                &field("max_connections_per_subject"),
                &l.max_connections_per_subject,
                defaults.max_connections_per_subject,
                positive_count,
            ),
            message_rate: self.optional(
                &field("message_rate"),
                &l.message_rate,
                defaults.message_rate,
                |t| parse_rate(t, false),
            ),
            message_burst: self.optional(
                &field("message_burst"),
                &l.message_burst,
                defaults.message_burst,
                positive_u32,
            ),
            byte_rate,
            on_limit: self.optional(&field("on_limit"), &l.on_limit, defaults.on_limit, |text| {
                match text {
                    "close" => Ok(OnLimit::Close),
                    "drop" => Ok(OnLimit::Drop),
                    _ => Err("expected close or drop".to_owned()),
                }
            }),
            max_message_size,
        }
    }

    fn timeouts(&mut self, path: &str, timeouts: Option<&Spanned<raw::Timeouts>>) -> Timeouts {
        let defaults = Timeouts::default();
        let Some(timeouts) = timeouts else {
            return defaults;
        };
        let t = &timeouts.value;
        let field = |name: &str| format!("{path}.timeouts.{name}");
        Timeouts {
            idle: self.optional(&field("idle"), &t.idle, defaults.idle, positive_duration),
            ping_interval: self.optional(
                &field("ping_interval"),
                &t.ping_interval,
                defaults.ping_interval,
                positive_duration,
            ),
            pong_timeout: self.optional(
                &field("pong_timeout"),
                &t.pong_timeout,
                defaults.pong_timeout,
                positive_duration,
            ),
            backend_connect: self.optional(
                &field("backend_connect"),
                &t.backend_connect,
                defaults.backend_connect,
                positive_duration,
            ),
        }
    }
}

impl Validator<'_> {
    fn providers(
        &mut self,
        providers: Option<&Spanned<Vec<Spanned<raw::Provider>>>>,
    ) -> Vec<Provider> {
        let mut names = HashSet::new();
        let mut valid = Vec::new();
        for (i, provider) in providers
            .iter()
            .flat_map(|list| list.value.iter())
            .enumerate()
        {
            let path = format!("providers[{i}]");
            if let Some(provider) = self.provider(&path, provider) {
                if !names.insert(provider.name.clone()) {
                    let message = format!("{:?} is used by an earlier provider", provider.name);
                    self.fail(
                        &format!("{path}.name"),
                        &providers_at(providers, i),
                        message,
                    );
                }
                valid.push(provider);
            }
        }
        valid
    }

    fn provider(&mut self, path: &str, provider: &Spanned<raw::Provider>) -> Option<Provider> {
        let at = &provider.referenced;
        let p = &provider.value;
        let field = |name: &str| format!("{path}.{name}");
        let name = self.required(&field("name"), at, &p.name, route_name);
        let issuer = self.required(&field("issuer"), at, &p.issuer, non_empty);
        let jwks_url = self.required(&field("jwks_url"), at, &p.jwks_url, jwks_url);
        let audiences = self.non_empty_list(
            &field("audiences"),
            at,
            &p.audiences,
            None,
            "audience",
            non_empty,
        );
        let algorithms = self.non_empty_list(
            &field("algorithms"),
            at,
            &p.algorithms,
            Some(DEFAULT_ALGORITHMS.to_vec()),
            "algorithm",
            algorithm,
        );
        let leeway = self.optional(&field("leeway"), &p.leeway, DEFAULT_LEEWAY, units::duration);
        let refresh_interval = self.optional(
            &field("refresh_interval"),
            &p.refresh_interval,
            DEFAULT_REFRESH_INTERVAL,
            positive_duration,
        );
        let refetch_cooldown = self.optional(
            &field("refetch_cooldown"),
            &p.refetch_cooldown,
            DEFAULT_REFETCH_COOLDOWN,
            units::duration,
        );
        let max_stale = self.optional(
            &field("max_stale"),
            &p.max_stale,
            DEFAULT_MAX_STALE,
            positive_duration,
        );
        let ca_pem = match &p.ca_file {
            None => None,
            Some(file) => {
                let base = self.base;
                let read = self.value(&field("ca_file"), file, |f| {
                    std::fs::read(base.join(f)).map_err(|e| format!("cannot read: {e}"))
                });
                read.as_ref()?;
                read
            }
        };
        Some(Provider {
            name: name?,
            issuer: issuer?,
            jwks_url: jwks_url?,
            audiences: audiences?,
            algorithms: algorithms?,
            leeway,
            refresh_interval,
            refetch_cooldown,
            max_stale,
            ca_pem,
        })
    }

    fn auth(
        &mut self,
        path: &str,
        auth: &Spanned<raw::Auth>,
        providers: &[String],
    ) -> Option<Auth> {
        let at = &auth.referenced;
        let a = &auth.value;
        let field = |name: &str| format!("{path}.{name}");
        let provider = self.required(&field("provider"), at, &a.provider, |name| {
            providers
                .iter()
                .position(|p| p == name)
                .ok_or_else(|| format!("no provider is named so (known: {})", providers.join(", ")))
        });
        let token_from = self.non_empty_list(
            &field("token_from"),
            at,
            &a.token_from,
            Some(DEFAULT_TOKEN_FROM.to_vec()),
            "transport",
            transport,
        );
        let query_param = self.optional(
            &field("query_param"),
            &a.query_param,
            DEFAULT_QUERY_PARAM.to_owned(),
            token_name,
        );
        let subprotocol_marker = self.optional(
            &field("subprotocol_marker"),
            &a.subprotocol_marker,
            DEFAULT_SUBPROTOCOL_MARKER.to_owned(),
            token_name,
        );
        let cookie_name = self.optional(
            &field("cookie_name"),
            &a.cookie_name,
            DEFAULT_COOKIE_NAME.to_owned(),
            token_name,
        );
        let mut require_claims = Vec::new();
        for (claim, values) in a.require_claims.iter().flat_map(|m| m.value.iter()) {
            if values.value.0.is_empty() || values.value.0.iter().any(String::is_empty) {
                let message = "expected a value or a list of non-empty values";
                self.fail(
                    &format!("{path}.require_claims.{claim}"),
                    &values.referenced,
                    message,
                );
            }
            require_claims.push((claim.clone(), values.value.0.clone()));
        }
        let mut forward_claims = Vec::new();
        for (claim, header) in a.forward_claims.iter().flat_map(|m| m.value.iter()) {
            if let Some(name) = self.value(
                &format!("{path}.forward_claims.{claim}"),
                header,
                forward_header,
            ) {
                forward_claims.push((claim.clone(), name));
            }
        }
        let on_expiry =
            self.optional(
                &field("on_expiry"),
                &a.on_expiry,
                OnExpiry::Close,
                |text| match text {
                    "close" => Ok(OnExpiry::Close),
                    "ignore" => Ok(OnExpiry::Ignore),
                    _ => Err("expected close or ignore".to_owned()),
                },
            );
        Some(Auth {
            provider: provider?,
            token_from: token_from?,
            query_param,
            subprotocol_marker,
            cookie_name,
            require_claims,
            forward_claims,
            on_expiry,
        })
    }

    fn origins(&mut self, path: &str, origins: &Spanned<raw::Origins>) -> Option<Origins> {
        match &origins.value {
            raw::Origins::Keyword(keyword) if keyword == "any" => Some(Origins::Any),
            raw::Origins::Keyword(other) => {
                let message = format!(
                    "{other:?}: expected `any` or a mapping with `allow` and `allow_missing`"
                );
                self.fail(path, &origins.referenced, message);
                None
            }
            raw::Origins::Rules(rules) => {
                let allow_missing = self.optional(
                    &format!("{path}.allow_missing"),
                    &rules.allow_missing,
                    false,
                    boolean,
                );
                let Some(allow) = &rules.allow else {
                    self.fail(
                        &format!("{path}.allow"),
                        &origins.referenced,
                        "is required (or write `origins: any`)",
                    );
                    return None;
                };
                let patterns = self.list(&format!("{path}.allow"), allow, Pattern::parse);
                if allow.value.is_empty() && !allow_missing {
                    self.fail(
                        &format!("{path}.allow"),
                        &allow.referenced,
                        "allows nothing: list origins",
                    );
                }
                patterns.map(|patterns| Origins::Allow {
                    patterns,
                    allow_missing,
                })
            }
        }
    }
}

fn providers_at(providers: Option<&Spanned<Vec<Spanned<raw::Provider>>>>, i: usize) -> Location {
    providers
        .and_then(|list| list.value.get(i))
        .map_or(Location::UNKNOWN, |p| p.referenced)
}
