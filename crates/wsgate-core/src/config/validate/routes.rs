//! `routes`: each route with its match, backend, auth, origins, limits and timeouts, and the
//! rules across routes (unique names, no two routes on the same host and path).

use std::collections::HashSet;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::Validator;
use crate::config::origins::Pattern;
use crate::config::scalars::{
    backend_url, boolean, forward_header, host_match, message_size, on_expiry, on_limit,
    parse_rate, path_prefix, positive_count, positive_duration, positive_u32, refresh,
    refresh_prefix, route_name, token_name, transport,
};
use crate::config::{
    Auth, DEFAULT_COOKIE_NAME, DEFAULT_QUERY_PARAM, DEFAULT_REFRESH_PREFIX,
    DEFAULT_SUBPROTOCOL_MARKER, DEFAULT_TOKEN_FROM, Limits, OnExpiry, Origins, Route, Timeouts,
    Transport, raw,
};

impl Validator<'_> {
    pub(super) fn routes(
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

    pub(super) fn route(
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
        let messages = r
            .messages
            .as_ref()
            .map(|messages| self.messages(&format!("{path}.messages"), messages));
        Some(Route {
            name: name?,
            host,
            path: prefix?,
            backend: backend?,
            auth: auth?,
            origins: origins?,
            limits,
            timeouts,
            messages: messages.map(Arc::new),
        })
    }

    pub(super) fn limits(&mut self, path: &str, limits: Option<&Spanned<raw::Limits>>) -> Limits {
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
            message_size,
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
            on_limit: self.optional(&field("on_limit"), &l.on_limit, defaults.on_limit, on_limit),
            max_message_size,
        }
    }

    pub(super) fn timeouts(
        &mut self,
        path: &str,
        timeouts: Option<&Spanned<raw::Timeouts>>,
    ) -> Timeouts {
        let defaults = Timeouts::default();
        let Some(timeouts) = timeouts else {
            return defaults;
        };
        let t = &timeouts.value;
        let field = |name: &str| format!("{path}.timeouts.{name}");
        let max_session = t
            .max_session
            .as_ref()
            .and_then(|max| self.value(&field("max_session"), max, positive_duration));
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
            max_session,
        }
    }

    pub(super) fn auth(
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
        let on_expiry = self.optional(
            &field("on_expiry"),
            &a.on_expiry,
            OnExpiry::Close,
            on_expiry,
        );
        let max_token_lifetime = a
            .max_token_lifetime
            .as_ref()
            .and_then(|max| self.value(&field("max_token_lifetime"), max, positive_duration));
        let refresh = self.optional(&field("refresh"), &a.refresh, false, refresh);
        let prefix = self.optional(
            &field("refresh_prefix"),
            &a.refresh_prefix,
            DEFAULT_REFRESH_PREFIX.to_owned(),
            refresh_prefix,
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
            max_token_lifetime,
            refresh_prefix: refresh.then_some(prefix),
        })
    }

    pub(super) fn origins(
        &mut self,
        path: &str,
        origins: &Spanned<raw::Origins>,
    ) -> Option<Origins> {
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
