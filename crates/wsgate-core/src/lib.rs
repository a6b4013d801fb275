//! wsgate: a TLS-terminating, authenticating reverse proxy for WebSockets.
//!
//! This library holds all runtime behaviour; the `wsgate` binary only parses the command line,
//! sets up logging and signals, and calls into it. What users rely on (statuses, close codes,
//! metric names, the admin API) is written down in `docs/contract.md`.
//!
//! # The map: a connection's life, and where each stage lives
//!
//! ```text
//! process    server/          bind, accept loop, drain; admin listener; file watch
//!              accept.rs      per-address cap on connections not upgraded yet, global cap
//!            shared.rs        what every task shares (configuration in force, metrics,
//!                             registry, drain signal, permits)
//!            state.rs         one configuration generation, ready to serve, and its reload
//! connection connection/      one task per connection, inside its tracing span
//!              mod.rs         TLS under the handshake deadline, HTTP/1.1 through hyper
//!              handshake.rs   RFC 6455 checks on the upgrade request; every refusal's answer
//!              admit.rs       the ordered checks: route -> rate -> Origin -> token -> claims
//!                             -> per-subject cap -> backend (admit() is the whole pipeline)
//!              backend.rs     the proxy's own upgrade request to the plain ws:// backend
//!              respond.rs     the HTTP answer: refusal, the backend's refusal, or the 101
//!              session.rs     register, relay, wrap up (metrics, registry, subject slot)
//!              access_log.rs  one line per refusal and per closed session, tokens redacted
//! session    relay/           the live session: frames both ways, limits, ping/idle, expiry,
//!                             kicks, the close sequence
//!              mod.rs         run(), Policy, Outcome
//!              session.rs     the two pumps, the timers, the close sequence
//!              pump.rs        one direction; state.rs: its state machine (Mode, Sink, Stop)
//!              frame.rs       frame headers and RFC 6455 rules, checked as bytes pass
//!                             (with violation.rs and utf8.rs)
//!              own.rs         the proxy's own frames; outside.rs: drain and kick wake-ups
//!              busy.rs        busy polling on a nearly idle proxy (direct socket reads)
//! policy     auth/            token transports, JWKS providers, JWT verification, claims
//!            origin.rs        the Origin check          peer.rs    client address, XFF
//!            router.rs        host + path-prefix routes path.rs    the request path rule
//!            ratelimit.rs     rates and caps (ratelimit::Limit names every kind)
//!            messages/        message rules: a bounded JSON check (json.rs), schemas
//!                             (schema.rs), judged on messages the up pump holds whole
//!            registry/        live sessions (sessions.rs) and revocations (revocations.rs)
//!            cluster/         with a `cluster` block only: the fleet's shared state in Redis
//!                             (one script call per handshake; supervisor.rs keeps the
//!                             connection, the lease, the listing and the event channel)
//! ground     config/          the YAML file -> a validated Config (raw, structure, validate/
//!                             by section, scalars, units, origins)
//!            tls/             the listener's rustls configuration (mod.rs) and its
//!                             connections over rustls's unbuffered API (stream.rs)
//!            metrics.rs       Prometheus families; exposition.rs: their text formats
//! extras     demo.rs, issuer.rs   `wsgate demo` and its development token issuer
//! ```
//!
//! Each layer imports only the layers below it: the process starts connections, a connection
//! runs a session, both consult the policy modules, and everything reads the configuration.
//! The fleet (`cluster/`) stands beside the registry: it mirrors the fleet's revocations into
//! `registry::Revocations` (so the handshake's check stays a local look-up) and adds one
//! Redis call to `admit()` after the local caps. Message rules and in-band token refresh are
//! steps of the relay's client-to-backend direction (relay/gather.rs holds such messages).
//! Where the next capabilities go: WebSockets over HTTP/2 (RFC 8441)
//! is a second way into `connection/` (an extended CONNECT in `handshake.rs`, hyper's HTTP/2
//! server in `mod.rs`) that hands the same `admit()` and session the request.

pub mod auth;
mod cluster;
pub mod config;
mod connection;
pub mod demo;
mod exposition;
pub mod issuer;
pub mod messages;
pub mod metrics;
pub mod origin;
mod path;
mod peer;
mod ratelimit;
mod registry;
mod relay;
mod router;
pub mod server;
mod shared;
mod state;
pub mod tls;

pub use config::Config;
/// Frame headers and RFC 6455 rules (public for the fuzz targets).
pub use relay::frame;
pub use server::{Error, Server};
