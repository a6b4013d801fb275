//! `check`: the 11 upgrade checks every target must pass before its figures count. One valid
//! upgrade (101, then an echo round trip) and ten that must be refused with an HTTP status:
//! no token, bad Origin, missing Origin, bad signature, expired, wrong audience, wrong issuer,
//! `alg: none`, HS256 signed with the public key as the secret (algorithm confusion), garbage.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::client::{self, Client};
use crate::net::{OpenError, Upgrade};
use crate::token::{self, Signer};

const BAD_ORIGIN: &str = "https://evil.example";
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of every check for one target (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub checks: Vec<Outcome>,
    /// Negotiated TLS version, cipher suite and key exchange of the valid upgrade.
    pub tls: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub expected: String,
    pub got: String,
    pub pass: bool,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.pass).count()
    }
}

pub async fn run(
    client: &Client,
    signer: &Signer,
    public_pem: &Path,
    label: &str,
) -> anyhow::Result<Report> {
    let origin = client
        .origin
        .clone()
        .context("check needs --origin (the allowed Origin)")?;
    let good = |bearer: String| Upgrade {
        bearer: Some(bearer),
        origin: Some(origin.clone()),
    };
    let (valid, tls) = valid(client, good(signer.mint())).await;
    let mut checks = vec![valid];
    for (name, upgrade) in refusals(signer, public_pem, &origin)? {
        let got = match client.open_with(&upgrade).await {
            Ok(ws) => {
                client::close(ws).await;
                "101".to_owned()
            }
            Err(OpenError::Refused(status)) => status.to_string(),
            Err(error) => error.to_string(),
        };
        let pass = got
            .parse::<u16>()
            .is_ok_and(|status| (400..500).contains(&status));
        checks.push(Outcome {
            name: name.to_owned(),
            expected: "refused (4xx)".to_owned(),
            got,
            pass,
        });
    }
    let report = Report {
        label: label.to_owned(),
        checks,
        tls,
    };
    for check in &report.checks {
        let mark = if check.pass { "pass" } else { "FAIL" };
        eprintln!(
            "[{label}] {mark} {:<18} expected {:<14} got {}",
            check.name, check.expected, check.got
        );
    }
    eprintln!(
        "[{label}] {} of {} checks passed",
        report.passed(),
        report.checks.len()
    );
    Ok(report)
}

/// The valid upgrade must give 101 and then echo a message.
async fn valid(client: &Client, upgrade: Upgrade) -> (Outcome, Option<String>) {
    let (got, tls) = match client.open_with(&upgrade).await {
        Ok(mut ws) => {
            let tls = ws.get_ref().tls_summary();
            let payload = Bytes::from_static(b"wsgate-bench check");
            let echoed = async {
                ws.send(Message::Binary(payload.clone())).await.ok()?;
                client::next_data(&mut ws).await
            };
            let got = match tokio::time::timeout(ECHO_TIMEOUT, echoed).await {
                Ok(Some(len)) if len == payload.len() => "101 + echo".to_owned(),
                _ => "101, but no echo".to_owned(),
            };
            client::close(ws).await;
            (got, tls)
        }
        Err(OpenError::Refused(status)) => (status.to_string(), None),
        Err(error) => (error.to_string(), None),
    };
    let outcome = Outcome {
        name: "valid".to_owned(),
        expected: "101 + echo".to_owned(),
        pass: got == "101 + echo",
        got,
    };
    (outcome, tls)
}

/// The ten requests that must be refused.
fn refusals(
    signer: &Signer,
    public_pem: &Path,
    origin: &str,
) -> anyhow::Result<Vec<(&'static str, Upgrade)>> {
    let with = |bearer: Option<String>, origin: Option<&str>| Upgrade {
        bearer,
        origin: origin.map(str::to_owned),
    };
    let rs256 = signer.header(Algorithm::RS256);
    let now = token::unix_now();

    let forged = token::sign_with(&rs256, &signer.claims(), &token::other_key()?)?;
    let mut expired = signer.claims();
    (expired.iat, expired.exp) = (now - 7200, now - 3600);
    let mut wrong_aud = signer.claims();
    wrong_aud.aud = "not-this-audience".to_owned();
    let mut wrong_iss = signer.claims();
    wrong_iss.iss = "https://not-this-issuer.example/".to_owned();
    let public = std::fs::read(public_pem)
        .with_context(|| format!("while reading {}", public_pem.display()))?;
    let confused = token::sign_with(
        &signer.header(Algorithm::HS256),
        &signer.claims(),
        &EncodingKey::from_secret(&public),
    )?;
    let kid = signer.header(Algorithm::RS256).kid.unwrap_or_default();

    Ok(vec![
        ("no token", with(None, Some(origin))),
        ("bad origin", with(Some(signer.mint()), Some(BAD_ORIGIN))),
        ("missing origin", with(Some(signer.mint()), None)),
        ("bad signature", with(Some(forged), Some(origin))),
        ("expired", with(Some(signer.sign(&expired)), Some(origin))),
        (
            "wrong audience",
            with(Some(signer.sign(&wrong_aud)), Some(origin)),
        ),
        (
            "wrong issuer",
            with(Some(signer.sign(&wrong_iss)), Some(origin)),
        ),
        (
            "alg none",
            with(Some(token::unsigned(&kid, &signer.claims())), Some(origin)),
        ),
        ("HS256 confusion", with(Some(confused), Some(origin))),
        ("garbage", with(Some("not.a.jwt".to_owned()), Some(origin))),
    ])
}
