//! The `wsgate` binary: command line, logging, signals and exit codes. Everything the proxy
//! does lives in `wsgate-core`.

mod cli;
mod signals;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsgate_core::config::{self, Config};
use wsgate_core::{Server, demo, issuer};

use cli::{Cli, Command, LogFormat};

/// Exit code for a configuration that does not validate (EX_USAGE-like, as `sysexits.h`'s
/// EX_USAGE is 64).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(loaded) => {
                println!(
                    "{}: valid ({} routes)",
                    config.display(),
                    loaded.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config: path } => match load(&path) {
            Ok(loaded) => exit(run(loaded, path)),
            Err(code) => code,
        },
        Command::Demo => until_signal("the demo", demo::run(signals::shutdown())),
        Command::Issuer {
            listen,
            issuer: iss,
            audience,
            ws_url,
        } => until_signal(
            "the issuer",
            issuer::run(listen, &iss, &audience, &ws_url, signals::shutdown()),
        ),
        Command::Echo { listen } => {
            until_signal("the echo backend", demo::echo(listen, signals::shutdown()))
        }
        Command::SelfSigned { dir } => {
            exit(demo::write_self_signed(&dir).context("while writing the certificate"))
        }
    }
}

/// Runs a long-lived subcommand until it fails or a shutdown signal ends it.
fn until_signal<E>(what: &str, task: impl Future<Output = Result<(), E>>) -> ExitCode
where
    E: std::error::Error + Send + Sync + 'static,
{
    exit(runtime().and_then(|rt| {
        rt.block_on(task)
            .with_context(|| format!("while running {what}"))
    }))
}

/// Loads the file, printing every problem as `file: path (line N): message`.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        let problems = match &error {
            config::Error::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        };
        for problem in problems {
            eprintln!("{}: {problem}", path.display());
        }
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let server = Server::bind(config)
            .await
            .context("while starting")?
            .with_source(path)
            .watching();
        tokio::spawn(signals::reload_on_hangup(server.reloader()));
        server.run(signals::shutdown()).await;
        Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// tungstenite's client handshake traces the whole request, a bearer token included. Only the
/// demo's self-check runs that code (the proxy's own backend handshake is hyper's), and tokens
/// are never logged, so it stays off whatever `RUST_LOG` says.
const TOKEN_TRACING_TARGET: &str = "tungstenite::handshake::client=off";

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            TOKEN_TRACING_TARGET
                .parse()
                .expect("a constant, valid directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
