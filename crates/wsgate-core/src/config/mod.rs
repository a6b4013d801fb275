//! The routing file: YAML -> [`raw`] structs (unknown keys refused) -> a validated, typed
//! [`Config`]. The rest of the library only ever sees a `Config`. Every problem names its
//! YAML path and line, and validation gathers all of them before failing.

mod raw;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
pub use jsonwebtoken::Algorithm;

use crate::origin::Pattern;
use crate::tls::Identity;

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_BACKEND_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TOKEN_FROM: [Transport; 3] =
    [Transport::Header, Transport::Subprotocol, Transport::Query];
pub const DEFAULT_QUERY_PARAM: &str = "access_token";
pub const DEFAULT_SUBPROTOCOL_MARKER: &str = "bearer";
pub const DEFAULT_COOKIE_NAME: &str = "access_token";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
}

/// A JWT issuer and where its keys are published.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    /// https, or http for loopback hosts only.
    pub jwks_url: reqwest::Url,
    pub audiences: Vec<String>,
    /// Allowlist; never `none` or HS*.
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub refresh_interval: Duration,
    pub refetch_cooldown: Duration,
    pub max_stale: Duration,
    /// PEM CA certificates to trust for the JWKS instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Where a route looks for the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Authorization: Bearer <JWT>`
    Header,
    /// `Sec-WebSocket-Protocol: <marker>, <JWT>`
    Subprotocol,
    /// `?access_token=<JWT>`
    Query,
    /// `Cookie: access_token=<JWT>`
    Cookie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    Close,
    Ignore,
}

/// `routes[].auth`
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub token_from: Vec<Transport>,
    pub query_param: String,
    pub subprotocol_marker: String,
    pub cookie_name: String,
    /// Claim name and the values it must all contain.
    pub require_claims: Vec<(String, Vec<String>)>,
    /// Claim name and the header it is forwarded in.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub on_expiry: OnExpiry,
}

/// `routes[].origins`
#[derive(Debug, Clone, PartialEq)]
pub enum Origins {
    /// The explicit opt-out.
    Any,
    Allow {
        patterns: Vec<Pattern>,
        allow_missing: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub address: SocketAddr,
    pub tls: Arc<Identity>,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    /// Path prefix, matched on segment boundaries (`/chat` matches `/chat/x`, not `/chatx`).
    pub path: String,
    pub backend: Backend,
    pub auth: Auth,
    pub origins: Origins,
    pub max_message_size: usize,
    pub backend_connect: Duration,
}

/// `match.host`: an exact host name or a `*.suffix` wildcard (which needs at least one label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// The suffix including its leading dot, e.g. `.example.com`.
    Wildcard(String),
}

impl HostMatch {
    /// `host` must already be lower-case and without a port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(exact) => host == exact,
            HostMatch::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// A plain `ws://` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `host:port` to connect to (IPv6 hosts keep their brackets).
    pub authority: String,
    /// Path on the backend, without a trailing slash unless it is `/`.
    pub path: String,
    /// Query written in the backend URL, if any (without `?`).
    pub query: Option<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One thing wrong with the file, at a YAML path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "{} (line {}): {}", self.path, self.line, self.message)
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a file; relative certificate paths are resolved against the
    /// file's directory, and `${VAR}` comes from the process environment.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, &|name| std::env::var(name).ok())
    }

    /// Validates YAML text. `env` answers `${VAR}` look-ups; `base` anchors relative paths.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        validate::parse(text, base, env)
    }
}
