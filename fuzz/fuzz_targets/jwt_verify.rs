//! JWT parsing up to and through verification (auth/mod.rs): the precheck, header and claims
//! decoding, the header-key and `crit` refusals, key lookup, signature and claim validation,
//! then what the server does with a verified token (session expiry, claim rules, forwarded
//! claim headers, which must hold no control character and no space at either end).
//!
//! Input: byte 0 picks the mode.
//! - even: the rest is the token text, verified as it is (reaches everything up to the
//!   signature check);
//! - odd: the rest is `header JSON\nclaims JSON`; the target signs it with a fixed local
//!   Ed25519 key published in the provider's key set, so the fuzzer controls every byte of a
//!   correctly signed token and reaches claim validation and everything after it.
//!
//! The provider's key set is installed locally (`KeyStore::install`); its `jwks_url` is a
//! closed loopback port and `refetch_cooldown` a day, so an unknown `kid` costs one refused
//! loopback connect per process and nothing more.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderName;
use libfuzzer_sys::fuzz_target;
use wsgate_core::auth::jwks::KeyStore;
use wsgate_core::auth::{self, Authenticator};
use wsgate_core::config::{Algorithm, Auth, OnExpiry, Provider, Transport};
use wsgate_core::metrics::Metrics;

const LEEWAY: Duration = Duration::from_secs(30);

struct World {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
    signer: Ed25519KeyPair,
    auth: Auth,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let signer = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("ed25519 seed");
    let x = URL_SAFE_NO_PAD.encode(signer.public_key().as_ref());
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"fuzz-ed","use":"sig","alg":"EdDSA"}}]}}"#
    );
    let provider = Provider {
        name: "fuzz".into(),
        issuer: "https://issuer.fuzz/".into(),
        jwks_url: "http://127.0.0.1:9/jwks.json".parse().expect("url"),
        audiences: vec!["fuzz".into()],
        algorithms: vec![Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
        leeway: LEEWAY,
        refresh_interval: Duration::from_secs(600),
        refetch_cooldown: Duration::from_secs(24 * 3600),
        max_stale: Duration::from_secs(24 * 3600),
        ca_pem: None,
    };
    let metrics = Arc::new(Metrics::new());
    let store = KeyStore::new(provider, metrics.provider("fuzz")).expect("key store");
    store.install(jwks.as_bytes()).expect("the local key set");
    let auth = Auth {
        provider: 0,
        token_from: vec![Transport::Header],
        query_param: "access_token".into(),
        subprotocol_marker: "bearer".into(),
        cookie_name: "access_token".into(),
        require_claims: vec![("scope".into(), vec!["chat:read".into()])],
        forward_claims: vec![
            ("sub".into(), HeaderName::from_static("x-auth-subject")),
            ("roles".into(), HeaderName::from_static("x-auth-roles")),
        ],
        on_expiry: OnExpiry::Close,
    };
    World {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        authenticator: Authenticator::new(vec![Arc::new(store)]),
        signer,
        auth,
    }
});

fn signed(world: &World, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = world.signer.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let world = &*WORLD;
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        let at = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let (header, claims) = rest.split_at(at);
        signed(world, header, claims.get(1..).unwrap_or_default())
    };
    let verified = world
        .runtime
        .block_on(world.authenticator.verify(0, &token));
    let Ok(principal) = verified else {
        return;
    };
    // What the server does next with a verified token.
    let _ = principal.expires_at(LEEWAY);
    let _ = auth::check_claims(&world.auth, &principal.claims);
    if let Ok(headers) = auth::forward_headers(&world.auth, &principal.claims) {
        for (_, value) in headers {
            let bytes = value.as_bytes();
            assert!(
                bytes.iter().all(|b| *b >= 0x20 && *b != 0x7f),
                "control character forwarded: {value:?}"
            );
            assert!(
                !bytes.starts_with(b" ") && !bytes.ends_with(b" "),
                "the backend would trim {value:?}"
            );
        }
    }
});
