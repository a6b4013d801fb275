//! Real parts for end-to-end tests, one file per concern: a generated CA and server
//! certificate ([`pki`]), an instrumented WebSocket echo backend and misbehaving backends
//! ([`backends`]), the proxy itself on 127.0.0.1:0 ([`proxy`]), TLS clients, a WebSocket one
//! and a raw one for malformed requests ([`clients`]), plain HTTP to the admin listener
//! ([`http`]), a real Redis server ([`redis`]), log capture ([`logs`]), the JWKS server and tokens ([`jwt`]) and the
//! suite-wide token-leakage check ([`leak`]). Everything is re-exported here, so a test
//! file needs only `use crate::support::*;`.
#![allow(dead_code)]

mod backends;
mod clients;
mod http;
mod jwt;
pub mod leak;
mod logs;
mod pki;
mod proxy;
mod redis;

// Each test binary (tests/e2e.rs, crates/wsgate/tests/cli.rs) uses its own part of these.
#[allow(unused_imports)]
pub use self::{backends::*, clients::*, http::*, jwt::*, logs::*, pki::*, proxy::*, redis::*};

use std::time::Duration;

/// Upper bound for any single wait in a test: reached only when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("timed out waiting")
}
