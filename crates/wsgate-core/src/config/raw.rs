//! The YAML file as written: every scalar is kept as a located string so that validation can
//! parse all of them, report every bad value with its path and line, and substitute `${VAR}`
//! inside a single scalar (never across YAML structure). Unknown keys are refused here.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

/// A scalar with the place it was written.
pub type Scalar = Spanned<String>;
/// A key that the schema knows but that this version cannot honour yet.
pub type Unsupported = Option<Spanned<IgnoredAny>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub listen: Option<Spanned<Listen>>,
    pub trusted_proxies: Unsupported,
    pub admin: Option<Spanned<Admin>>,
    pub providers: Unsupported,
    pub routes: Option<Spanned<Vec<Spanned<Route>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: Option<Scalar>,
    pub tls: Option<Spanned<Tls>>,
    pub handshake_timeout: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub shutdown_grace: Option<Scalar>,
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
    pub token: Unsupported,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<Scalar>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<Match>>,
    pub backend: Option<Scalar>,
    pub auth: Unsupported,
    pub origins: Unsupported,
    pub limits: Option<Spanned<Limits>>,
    pub timeouts: Option<Spanned<Timeouts>>,
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
    pub handshake_rate_per_ip: Unsupported,
    pub handshake_burst_per_ip: Unsupported,
    pub max_connections_per_subject: Unsupported,
    pub message_rate: Unsupported,
    pub message_burst: Unsupported,
    pub byte_rate: Unsupported,
    pub on_limit: Unsupported,
    pub max_message_size: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub idle: Unsupported,
    pub ping_interval: Unsupported,
    pub pong_timeout: Unsupported,
    pub backend_connect: Option<Scalar>,
}
