//! `providers`: the JWT issuers and where their keys are published.

use std::collections::HashSet;

use serde_saphyr::{Location, Spanned};

use super::Validator;
use crate::config::scalars::{algorithm, jwks_url, non_empty, positive_duration, route_name};
use crate::config::{
    DEFAULT_ALGORITHMS, DEFAULT_LEEWAY, DEFAULT_MAX_STALE, DEFAULT_REFETCH_COOLDOWN,
    DEFAULT_REFRESH_INTERVAL, Provider, raw, units,
};

impl Validator<'_> {
    pub(super) fn providers(
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

    pub(super) fn provider(
        &mut self,
        path: &str,
        provider: &Spanned<raw::Provider>,
    ) -> Option<Provider> {
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
}

fn providers_at(providers: Option<&Spanned<Vec<Spanned<raw::Provider>>>>, i: usize) -> Location {
    providers
        .and_then(|list| list.value.get(i))
        .map_or(Location::UNKNOWN, |p| p.referenced)
}
