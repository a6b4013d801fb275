//! `wsgate-bench`: the load generator, echo backend and test-token tools behind
//! `compare.sh` (wsgate against direct, HAProxy and nginx) and `callgrind.sh` (instructions
//! per message and per handshake), and `soak.sh` (`cycles`, `hold`, `bounce`: leaks and
//! faults). Every scenario prints one JSON line on stdout (see
//! `record.rs`) and a readable line on stderr; `report` turns the lines into markdown.

mod backend;
mod check;
mod cli;
mod client;
mod echo;
mod handshake;
mod idle;
mod jwks;
mod net;
mod pki;
mod proc;
mod record;
mod report;
mod sessions;
mod soak;
mod token;
mod window;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match cli.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::run(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsgate-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
