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

use crate::tls::Identity;

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_BACKEND_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub routes: Vec<Route>,
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
