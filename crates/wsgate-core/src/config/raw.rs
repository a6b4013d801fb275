//! The YAML file as written: every scalar is kept as a located string so that validation can
//! parse all of them, report every bad value with its path and line, and substitute `${VAR}`
//! inside a single scalar (never across YAML structure). Unknown keys are refused here.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A scalar with the place it was written.
pub type Scalar = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub listen: Option<Spanned<Listen>>,
    pub trusted_proxies: Option<Spanned<Vec<Scalar>>>,
    pub admin: Option<Spanned<Admin>>,
    pub providers: Option<Spanned<Vec<Spanned<Provider>>>>,
    pub routes: Option<Spanned<Vec<Spanned<Route>>>>,
    pub cluster: Option<Spanned<Cluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: Option<Scalar>,
    pub tls: Option<Spanned<Tls>>,
    pub handshake_timeout: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub shutdown_grace: Option<Scalar>,
    pub busy_poll: Option<Scalar>,
    pub ipv6_prefix: Option<Scalar>,
    pub max_pending_per_ip: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<Scalar>,
    pub key: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Option<Scalar>,
    pub token: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub redis: Option<Scalar>,
    pub key_prefix: Option<Scalar>,
    pub instance: Option<Scalar>,
    pub lease: Option<Scalar>,
    pub on_unavailable: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<Scalar>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<Match>>,
    pub backend: Option<Scalar>,
    pub auth: Option<Spanned<Auth>>,
    pub origins: Option<Spanned<Origins>>,
    pub limits: Option<Spanned<Limits>>,
    pub timeouts: Option<Spanned<Timeouts>>,
    pub messages: Option<Spanned<Messages>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    pub text: Option<Scalar>,
    pub binary: Option<Scalar>,
    pub max_depth: Option<Scalar>,
    pub schema: Option<Scalar>,
    pub on_invalid: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub host: Option<Scalar>,
    pub path: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub handshake_rate_per_ip: Option<Scalar>,
    pub handshake_burst_per_ip: Option<Scalar>,
    pub max_connections_per_subject: Option<Scalar>,
    pub message_rate: Option<Scalar>,
    pub message_burst: Option<Scalar>,
    pub byte_rate: Option<Scalar>,
    pub on_limit: Option<Scalar>,
    pub max_message_size: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub idle: Option<Scalar>,
    pub ping_interval: Option<Scalar>,
    pub pong_timeout: Option<Scalar>,
    pub backend_connect: Option<Scalar>,
    pub max_session: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: Option<Scalar>,
    pub issuer: Option<Scalar>,
    pub jwks_url: Option<Scalar>,
    pub audiences: Option<Spanned<Vec<Scalar>>>,
    pub algorithms: Option<Spanned<Vec<Scalar>>>,
    pub leeway: Option<Scalar>,
    pub refresh_interval: Option<Scalar>,
    pub refetch_cooldown: Option<Scalar>,
    pub max_stale: Option<Scalar>,
    pub ca_file: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub provider: Option<Scalar>,
    pub token_from: Option<Spanned<Vec<Scalar>>>,
    pub query_param: Option<Scalar>,
    pub subprotocol_marker: Option<Scalar>,
    pub cookie_name: Option<Scalar>,
    pub require_claims: Option<Spanned<BTreeMap<String, Spanned<OneOrMany>>>>,
    pub forward_claims: Option<Spanned<BTreeMap<String, Scalar>>>,
    pub on_expiry: Option<Scalar>,
    pub max_token_lifetime: Option<Scalar>,
    pub refresh: Option<Scalar>,
    pub refresh_prefix: Option<Scalar>,
}

/// `origins: any`, or a mapping with `allow` and `allow_missing`.
#[derive(Debug)]
pub enum Origins {
    Keyword(String),
    Rules(OriginRules),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginRules {
    pub allow: Option<Spanned<Vec<Scalar>>>,
    pub allow_missing: Option<Scalar>,
}

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OriginsVisitor;
        impl<'de> Visitor<'de> for OriginsVisitor {
            type Value = Origins;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`any` or a mapping with `allow` and `allow_missing`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Origins, E> {
                Ok(Origins::Keyword(value.to_owned()))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Origins, M::Error> {
                OriginRules::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Origins::Rules)
            }
        }
        deserializer.deserialize_any(OriginsVisitor)
    }
}

/// A claim requirement: one value or a list of values.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_owned()]))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<OneOrMany, S::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(OneOrMany(values))
            }
        }
        deserializer.deserialize_any(ValuesVisitor)
    }
}
