//! The command line: one subcommand per tool or scenario.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::net::Target;
use crate::proc::Tree;
use crate::record::Record;
use crate::soak::{self, bounce, cycles, hold};
use crate::token::{self, Signer};
use crate::window::Plan;
use crate::{backend, check, echo, handshake, idle, jwks, pki, report};

/// Load generator and tools for benchmarking wsgate against HAProxy and nginx (loopback only).
#[derive(Parser)]
#[command(name = "wsgate-bench", version)]
pub struct Cli {
    /// Runtime threads of this process (1: a single-threaded runtime, leaving the other cores
    /// to the proxy under test).
    #[arg(long, default_value_t = 1, global = true)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate an RSA-2048 key pair: jwt-private.pem, jwt-public.pem and jwks.json.
    Keys {
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "bench")]
        kid: String,
    },
    /// Generate a CA and an ECDSA server certificate for localhost / 127.0.0.1.
    Certs {
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Print a fresh RS256 token (for curl or a browser console).
    Token {
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Serve a JWKS file at http://LISTEN/jwks.json (prints the URL).
    JwksServe {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Fail in turns of this length: serve, 503, hang up, serve, ... (JWKS flapping).
        #[arg(long, value_parser = duration)]
        flap: Option<Duration>,
    },
    /// The plain ws:// echo backend every target relays to.
    Backend {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// The 11 upgrade checks (valid, and ten that must be refused); one JSON line.
    Check {
        #[command(flatten)]
        client: ClientArgs,
        /// The public key PEM the verifier uses (the HS256-confusion token is signed with it).
        #[arg(long)]
        token_public: PathBuf,
    },
    /// Closed-loop echo: N connections, one message in flight each.
    Echo {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        plan: PlanArgs,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Binary message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Send JSON text messages of `size` bytes (a chat message) instead of binary.
        #[arg(long)]
        json: bool,
    },
    /// Parallel loops of connect + TLS + upgrade (fresh token) + 101 + close.
    Handshake {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        plan: PlanArgs,
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// Open idle sessions in steps and read the proxy's memory per session (needs --pid).
    Idle {
        #[command(flatten)]
        client: ClientArgs,
        /// Cumulative session counts, ascending.
        #[arg(long, value_delimiter = ',', default_value = "5000,9000")]
        sessions: Vec<usize>,
        #[arg(long, default_value_t = crate::sessions::IN_FLIGHT)]
        in_flight: usize,
        /// Wait this long after each step before reading VmRSS.
        #[arg(long, value_parser = duration, default_value = "2s")]
        settle: Duration,
    },
    /// Soak: connect + upgrade + close loops, counting every outcome; one `done` JSON line.
    Cycles {
        #[command(flatten)]
        client: ClientArgs,
        /// Exactly this many attempts (shared by the loops)...
        #[arg(
            long,
            conflicts_with = "duration",
            required_unless_present = "duration"
        )]
        count: Option<u64>,
        /// ...or attempts until this much time has passed.
        #[arg(long, value_parser = duration)]
        duration: Option<Duration>,
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// Soak: open idle sessions, print `ready`, hold them until SIGUSR1, close them, print `done`.
    Hold {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        sessions: usize,
        #[arg(long, default_value_t = crate::sessions::IN_FLIGHT)]
        in_flight: usize,
        /// Close anyway after this long without SIGUSR1.
        #[arg(long, value_parser = duration, default_value = "5m")]
        max_hold: Duration,
    },
    /// Soak: echo loops that reconnect after a close (backend restarts), then hold one live
    /// session each: `ready`, SIGUSR1, `done` with close codes and refusals counted.
    Bounce {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Binary message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, value_parser = duration, default_value = "20s")]
        duration: Duration,
        /// After the duration, how long each loop may still try to get a live session.
        #[arg(long, value_parser = duration, default_value = "10s")]
        settle: Duration,
        /// Pause after a refused or failed upgrade.
        #[arg(long, value_parser = duration, default_value = "200ms")]
        retry_pause: Duration,
        #[arg(long, value_parser = duration, default_value = "5m")]
        max_hold: Duration,
    },
    /// Markdown tables (medians, ratios, checks, issue 6 thresholds) from the JSON lines.
    Report {
        /// Files of scenario records (JSON lines).
        #[arg(long, required = true)]
        results: Vec<PathBuf>,
        /// Files of check reports (JSON lines).
        #[arg(long)]
        checks: Vec<PathBuf>,
    },
}

/// Where to connect, what to send, and which process to measure.
#[derive(Args)]
pub struct ClientArgs {
    /// ws:// or wss:// URL on loopback.
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) to trust for wss://.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(flatten)]
    token: TokenArgs,
    /// Threads that sign tokens ahead of the connections.
    #[arg(long, default_value_t = 1)]
    mint_threads: usize,
    /// Origin header of every upgrade.
    #[arg(long)]
    origin: Option<String>,
    /// PID of the proxy: its process tree's CPU time (and memory) is measured.
    #[arg(long)]
    pid: Option<u32>,
    /// Target name in the records (e.g. wsgate, haproxy).
    #[arg(long, default_value = "target")]
    label: String,
    /// Run number in the records.
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// Bound on TCP + TLS + upgrade of one connection (default 30s).
    #[arg(long, value_parser = duration)]
    open_timeout: Option<Duration>,
}

/// How test tokens are signed.
#[derive(Args)]
pub struct TokenArgs {
    /// RSA private key (PEM) to sign a fresh RS256 token for every upgrade; none: no token.
    #[arg(long)]
    token_key: Option<PathBuf>,
    #[arg(long, default_value = "https://issuer.bench.example/")]
    issuer: String,
    #[arg(long, default_value = "bench")]
    audience: String,
    #[arg(long, default_value = "bench")]
    kid: String,
    /// Token lifetime.
    #[arg(long, value_parser = duration, default_value = "1h")]
    token_ttl: Duration,
}

impl TokenArgs {
    fn signer(&self) -> anyhow::Result<Option<Signer>> {
        self.token_key
            .as_ref()
            .map(|key| Signer::load(key, &self.kid, &self.issuer, &self.audience, self.token_ttl))
            .transpose()
    }
}

#[derive(Args)]
pub struct PlanArgs {
    /// Measured window.
    #[arg(long, value_parser = duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured warm-up before the window.
    #[arg(long, value_parser = duration, default_value = "2s")]
    warmup: Duration,
    /// Run exactly this many operations instead (no warm-up, no window): for instruction counts.
    #[arg(long)]
    count: Option<u64>,
}

impl PlanArgs {
    fn plan(&self) -> Plan {
        match self.count {
            Some(count) => Plan::Count(count),
            None => Plan::Timed {
                warmup: self.warmup,
                duration: self.duration,
            },
        }
    }
}

impl ClientArgs {
    fn signer(&self) -> anyhow::Result<Option<Signer>> {
        self.token.signer()
    }

    fn client(&self) -> anyhow::Result<Client> {
        let target = Target::new(&self.url, self.ca.as_deref())?;
        let signer = self.signer()?.map(Arc::new);
        let client = Client::new(target, self.origin.clone(), signer, self.mint_threads);
        Ok(match self.open_timeout {
            Some(bound) => client.with_open_timeout(bound),
            None => client,
        })
    }

    fn tree(&self) -> anyhow::Result<Option<Tree>> {
        self.pid.map(Tree::new).transpose()
    }

    fn record(&self, scenario: String) -> Record {
        Record::new(&self.label, self.run, scenario)
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keys { out_dir, kid } => print_paths(token::write_keys(&out_dir, &kid)?),
        Command::Certs { out_dir } => print_paths(pki::write(&out_dir)?),
        Command::Token { token } => {
            let signer = token.signer()?.context("token needs --token-key")?;
            println!("{}", signer.mint());
        }
        Command::JwksServe { file, listen, flap } => jwks::serve(&file, listen, flap).await?,
        Command::Backend { listen } => backend::serve(listen).await?,
        Command::Check {
            client,
            token_public,
        } => {
            let signer = client
                .signer()?
                .context("check needs --token-key (to sign the valid and forged tokens)")?;
            let target = Target::new(&client.url, client.ca.as_deref())?;
            let probe = Client::new(target, client.origin.clone(), None, 0);
            let report = check::run(&probe, &signer, &token_public, &client.label).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Echo {
            client,
            plan,
            conns,
            size,
            json,
        } => {
            let record = client.record(echo::scenario(conns, size, json));
            let params = echo::Params {
                conns,
                size,
                json,
                plan: plan.plan(),
            };
            let tree = client.tree()?;
            let record = echo::run(Arc::new(client.client()?), params, tree, record).await?;
            record.emit();
        }
        Command::Handshake {
            client,
            plan,
            parallel,
        } => {
            let record = client.record(handshake::scenario(parallel));
            let tree = client.tree()?;
            let target = client.client()?;
            let record =
                handshake::run(Arc::new(target), parallel, plan.plan(), tree, record).await?;
            record.emit();
        }
        Command::Idle {
            client,
            sessions,
            in_flight,
            settle,
        } => {
            let tree = client
                .tree()?
                .context("idle needs --pid (the proxy to measure)")?;
            let target = client.client()?;
            idle::run(
                &target,
                &sessions,
                in_flight,
                settle,
                tree,
                &client.label,
                client.run,
            )
            .await?;
        }
        Command::Cycles {
            client,
            count,
            duration,
            parallel,
        } => {
            let amount = match (count, duration) {
                (Some(count), _) => cycles::Amount::Count(count),
                (None, Some(d)) => cycles::Amount::Until(tokio::time::Instant::now() + d),
                (None, None) => bail!("cycles needs --count or --duration"),
            };
            let tally = cycles::run(Arc::new(client.client()?), parallel, amount).await?;
            soak::emit("done", &tally, serde_json::json!({}));
        }
        Command::Hold {
            client,
            sessions,
            in_flight,
            max_hold,
        } => {
            let go = soak::Go::install()?;
            hold::run(&client.client()?, sessions, in_flight, max_hold, go).await?;
        }
        Command::Bounce {
            client,
            conns,
            size,
            duration,
            settle,
            retry_pause,
            max_hold,
        } => {
            let go = soak::Go::install()?;
            let params = bounce::Params {
                conns,
                size,
                duration,
                settle,
                retry_pause,
                max_hold,
            };
            bounce::run(Arc::new(client.client()?), params, go).await?;
        }
        Command::Report { results, checks } => {
            let records: Vec<Record> = read_lines(&results)?;
            let checks: Vec<check::Report> = read_lines(&checks)?;
            print!("{}", report::render(&records, &checks));
        }
    }
    Ok(())
}

fn print_paths(paths: Vec<PathBuf>) {
    for path in paths {
        println!("{}", path.display());
    }
}

/// Every non-empty line of every file as one JSON value.
fn read_lines<T: serde::de::DeserializeOwned>(files: &[PathBuf]) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("while reading {}", file.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a record", file.display(), n + 1))?,
            );
        }
    }
    Ok(out)
}

/// `500ms`, `5s`, `2m`, `1h`, or bare (fractional) seconds.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration such as 500ms or 5s"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("{text:?}: unknown unit {unit:?} (ms, s, m, h)"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(duration("1.5").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(duration("2m").ok(), Some(Duration::from_secs(120)));
        assert!(duration("5 parsecs").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
