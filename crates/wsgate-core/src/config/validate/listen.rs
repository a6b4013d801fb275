//! `listen`, `admin` and `trusted_proxies`: where the proxy listens and whom it trusts.

use std::sync::Arc;

use serde_saphyr::Spanned;

use super::Validator;
use crate::config::scalars::{
    busy_poll, ipv6_prefix, parse_cidr, positive_count, positive_duration, socket_addr,
};
use crate::config::{
    Admin, Cidr, DEFAULT_BUSY_POLL, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IPV6_PREFIX,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PENDING_PER_IP, DEFAULT_SHUTDOWN_GRACE, Listen, Secret,
    raw, units,
};
use crate::tls::{self, Identity};

impl Validator<'_> {
    pub(super) fn trusted_proxies(
        &mut self,
        list: Option<&Spanned<Vec<raw::Scalar>>>,
    ) -> Vec<Cidr> {
        match list {
            Some(list) => self
                .list("trusted_proxies", list, parse_cidr)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    pub(super) fn listen(&mut self, listen: &Spanned<raw::Listen>) -> Option<Listen> {
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

    pub(super) fn tls(&mut self, tls: &Spanned<raw::Tls>) -> Option<Arc<Identity>> {
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

    pub(super) fn admin(&mut self, admin: &Spanned<raw::Admin>) -> Option<Admin> {
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
}
