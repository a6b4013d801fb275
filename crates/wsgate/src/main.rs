//! The `wsgate` binary: command line, logging, signals and exit codes. Everything the proxy
//! does lives in `wsgate-core`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use wsgate_core::config::{self, Config};
use wsgate_core::{Server, demo};

/// Exit code for a configuration that does not validate (EX_USAGE-like, as `sysexits.h`'s
/// EX_USAGE is 64).
const EXIT_BAD_CONFIG: u8 = 64;

/// A TLS-terminating, authenticating reverse proxy for WebSockets.
#[derive(Parser)]
#[command(name = "wsgate", version)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

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
        Command::Demo => exit(runtime().and_then(|rt| {
            rt.block_on(demo::run(shutdown_signal()))
                .context("while running the demo")
        })),
    }
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
        let reloader = server.reloader();
        tokio::spawn(async move {
            // SIGHUP: reload; a broken file is logged and the running configuration stays.
            #[cfg(unix)]
            if let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                while hangups.recv().await.is_some() {
                    let _ = reloader.reload();
                }
            }
        });
        server.run(shutdown_signal()).await;
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

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
