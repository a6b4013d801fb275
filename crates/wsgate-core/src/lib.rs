//! wsgate: a TLS-terminating, authenticating reverse proxy for WebSockets.
//!
//! This library holds all runtime behaviour; the `wsgate` binary only parses the command line,
//! sets up logging and signals, and calls into it. Architecture, in the order a connection
//! meets it:
//!
//! - [`config`]: the YAML routing file, validated into a typed [`Config`].
//! - [`server`]: listeners, accept loop, the per-connection task and graceful shutdown.
//! - [`tls`]: the rustls configuration of the public listener.
//! - [`handshake`]: RFC 6455 checks on the client's upgrade request and every refusal status.
//! - [`router`]: host and path-prefix routing.
//! - [`backend`]: the proxy's own upgrade request to the plain `ws://` backend.
//! - [`relay`]: the live session, frames in both directions and close handling.
//! - [`frame`]: frame headers and RFC 6455 rules, checked as bytes pass through the relay.
//! - [`metrics`] and the admin listener: Prometheus metrics, `/healthz`, `/readyz`; `exposition`
//!   serves them as OpenMetrics to Prometheus and in the classic text format to anyone else.
//! - [`auth`]: token transports, JWKS providers, JWT verification and claim rules.
//! - [`origin`]: Origin allowlists.
//! - [`peer`]: the client address, `trusted_proxies` and `X-Forwarded-For`.
//! - [`registry`]: live sessions and revocations; state: hot reload.
//! - [`ratelimit`]: per-IP handshake rates, per-subject caps, message and byte rates.
//! - [`issuer`]: the development token issuer used by the demo.
//! - [`demo`]: `wsgate demo`, everything embedded on loopback.

pub mod auth;
mod busy;
pub mod config;
mod connection;
pub mod demo;
mod exposition;
pub mod frame;
pub mod issuer;
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
pub use server::{Error, Server};
