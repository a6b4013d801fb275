//! Config parsing and validation from YAML text (config/): serde-saphyr, the raw structs,
//! every validator, `${VAR}` substitution, units, rates, URLs, CIDRs, and the TLS files.
//!
//! Input: the YAML text. `base` is a scratch directory holding `certs/server.crt` and
//! `certs/server.key`, so `listen.tls` can load. Inputs naming `/dev`, `/proc` or `/sys` are
//! skipped: reading a device as a certificate never ends, and that is the operator's file.
//!
//! Beyond "no panic", it checks the contract that a refused file names at least one problem,
//! each with a message, and that a valid config's routes point at existing providers.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wsgate_core::config::{self, Config, units};

static BASE: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::temp_dir().join(format!("wsgate-fuzz-config-{}", std::process::id()));
    wsgate_core::demo::write_self_signed(&base.join("certs")).expect("self-signed pair");
    base
});

fn env(name: &str) -> Option<String> {
    match name {
        "WSGATE_ADMIN_TOKEN" => Some("admin-secret".into()),
        "BACKEND" => Some("ws://127.0.0.1:9001/ws".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"]
        .iter()
        .any(|dir| text.contains(dir))
    {
        return;
    }
    let _ = units::duration(text);
    let _ = units::size(text);
    match Config::parse(text, &BASE, &env) {
        Ok(config) => {
            for route in &config.routes {
                assert!(route.auth.provider < config.providers.len());
            }
        }
        Err(config::Error::Invalid(problems)) => {
            assert!(!problems.is_empty(), "refused without naming a problem");
            for problem in &problems {
                assert!(!problem.message.is_empty(), "a problem without a message");
            }
            let _ = config::Error::Invalid(problems).to_string();
        }
        Err(error) => panic!("parse never reads the file itself: {error}"),
    }
});
