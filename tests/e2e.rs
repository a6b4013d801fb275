//! End-to-end tests over real sockets: a real TLS listener on 127.0.0.1:0, a real WebSocket
//! echo backend and real clients. Helpers live in `support`.

mod support;

mod admission;
mod attack_http;
mod attack_jwt;
mod attack_tls;
mod auth;
mod busy_poll;
mod config;
mod fleet;
mod forwarding;
mod jwks;
mod leakage;
mod lifecycle;
mod lifetime;
mod messages;
mod origins;
mod refresh;
mod refusals;
mod relay;
mod sessions;
