//! The routing file: YAML -> [`raw`] structs (unknown keys refused) -> a validated, typed
//! [`Config`]. The rest of the library only ever sees a `Config`. Every problem names its
//! YAML path and line, and validation gathers all of them before failing.

pub mod cluster;
pub(crate) mod origins;
mod raw;
mod scalars;
mod structure;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
pub use jsonwebtoken::Algorithm;

pub use self::cluster::{Cluster, OnUnavailable};
use self::origins::Pattern;
use crate::messages::Rules;
use crate::tls::Identity;

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Connections one address may hold before their upgrade (TLS and the request head).
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 256;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);
/// The longest `listen.busy_poll` accepted: beyond it a wake-up is cheaper than the spin.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);
/// IPv6 clients are keyed by this many leading bits for every per-IP limit: one host is
/// usually given a whole /64, and could rotate through it.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
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
pub const DEFAULT_REFRESH_PREFIX: &str = "wsgate.refresh:";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// Peers allowed to set `X-Forwarded-For`; empty by default.
    pub trusted_proxies: Vec<Cidr>,
    pub admin: Admin,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
    /// The fleet's shared Redis; `None`: this instance keeps its own state.
    pub cluster: Option<Cluster>,
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
    /// A token whose `exp` is further than this after its `iat` (or after now) is refused;
    /// `None` (the default): no ceiling.
    pub max_token_lifetime: Option<Duration>,
    /// `refresh: message`: a client text message starting with this prefix hands the proxy a
    /// new token in-band; `None` (`refresh: off`, the default): no in-band refresh.
    pub refresh_prefix: Option<String>,
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
    /// How long a session keeps polling after it moved data while the proxy is nearly idle
    /// (zero: never).
    pub busy_poll: Duration,
    /// Leading bits of an IPv6 client address that key per-IP limits (IPv4 keys whole).
    pub ipv6_prefix: u8,
    /// Connections per client address (keyed as per-IP limits are) that have not upgraded yet;
    /// more are closed unanswered at accept, before any TLS work. Trusted proxies are exempt.
    pub max_pending_per_ip: usize,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
    /// Bearer token for `/admin/*`; without one every admin call is refused.
    pub token: Option<Secret>,
}

/// A secret from the configuration: never printed, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Compares SHA-256 digests in constant time, so neither content nor length leaks.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use aws_lc_rs::digest::{SHA256, digest};
        let ours = digest(&SHA256, self.0.as_bytes());
        let theirs = digest(&SHA256, candidate);
        aws_lc_rs::constant_time::verify_slices_are_equal(ours.as_ref(), theirs.as_ref()).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// `messages`: absent, messages are relayed as frames, unjudged.
    pub messages: Option<Arc<Rules>>,
}

/// `N` events per `per` (`100/s`, `20/m`, `1000/h`; bytes for `byte_rate`: `1MiB/s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLimit {
    /// Close the session with 1008 `rate limit`.
    Close,
    /// Drop the message and keep the session.
    Drop,
}

/// `routes[].limits`
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub handshake_rate_per_ip: Rate,
    pub handshake_burst_per_ip: u32,
    pub max_connections_per_subject: usize,
    /// Client-to-backend messages per connection.
    pub message_rate: Rate,
    pub message_burst: u32,
    /// Client-to-backend payload bytes per connection; off when absent.
    pub byte_rate: Option<Rate>,
    pub on_limit: OnLimit,
    pub max_message_size: usize,
}

pub const DEFAULT_HANDSHAKE_RATE_PER_IP: Rate = Rate {
    count: 20,
    per: Duration::from_secs(1),
};
pub const DEFAULT_HANDSHAKE_BURST_PER_IP: u32 = 40;
pub const DEFAULT_MAX_CONNECTIONS_PER_SUBJECT: usize = 10;
pub const DEFAULT_MESSAGE_RATE: Rate = Rate {
    count: 100,
    per: Duration::from_secs(1),
};
pub const DEFAULT_MESSAGE_BURST: u32 = 200;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_rate_per_ip: DEFAULT_HANDSHAKE_RATE_PER_IP,
            handshake_burst_per_ip: DEFAULT_HANDSHAKE_BURST_PER_IP,
            max_connections_per_subject: DEFAULT_MAX_CONNECTIONS_PER_SUBJECT,
            message_rate: DEFAULT_MESSAGE_RATE,
            message_burst: DEFAULT_MESSAGE_BURST,
            byte_rate: None,
            on_limit: OnLimit::Close,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// `routes[].timeouts`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No data frame in either direction for this long closes the session.
    pub idle: Duration,
    /// The proxy pings the client this often...
    pub ping_interval: Duration,
    /// ...and closes the session when no pong arrives within this. A client that accepts no
    /// data for this long is closed as well (it would hold the backend's output in memory).
    pub pong_timeout: Duration,
    pub backend_connect: Duration,
    /// A session is closed (1001 `session limit`) this long after it began, whatever its
    /// token says; `None` (the default): no cap.
    pub max_session: Option<Duration>,
}

pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            idle: DEFAULT_IDLE,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            backend_connect: DEFAULT_BACKEND_CONNECT,
            max_session: None,
        }
    }
}

/// A network in `trusted_proxies` (whether it holds an address is decided in `peer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: std::net::IpAddr,
    pub prefix: u8,
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
