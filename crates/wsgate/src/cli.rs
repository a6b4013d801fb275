//! The command line (docs/contract.md section 4, plus the demo's parts as their own subcommands for
//! the compose stack).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A TLS-terminating, authenticating reverse proxy for WebSockets.
#[derive(Parser)]
#[command(name = "wsgate", version)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy with a routing file.
    Run {
        #[arg(short, long, env = "WSGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a routing file, print every problem with its path and line; exit 0 or 64.
    Check {
        #[arg(short, long, env = "WSGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run an embedded demo on loopback: proxy, echo backend and a self-signed certificate.
    Demo,
    /// Run the demo's dev token issuer alone (JWKS, /token, a browser page). Development only:
    /// it signs a token for anyone who reaches it.
    Issuer {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The `iss` of its tokens (the provider's `issuer`).
        #[arg(long)]
        issuer: String,
        /// The `aud` of its tokens (one of the provider's `audiences`).
        #[arg(long)]
        audience: String,
        /// The WebSocket URL its browser page connects to.
        #[arg(long, default_value = "wss://localhost:8443/echo")]
        ws_url: String,
    },
    /// Run the demo's WebSocket echo backend alone (plain ws://).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Write a self-signed server.crt/server.key for localhost into DIR, unless both exist.
    SelfSigned {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
