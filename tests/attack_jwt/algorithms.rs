//! `alg` attacks: `none` in every spelling, and HMAC keyed with the provider's public key
//! (PEM, DER, JWK and other forms) for HS256, HS384 and HS512.

use super::*;

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused() {
    let mut arena = Arena::start().await;
    let payload = b64(&claims("alice"));
    let honest = sign(rsa(), &claims("alice"));
    let (_, _, rs_signature) = split(&honest);
    let algs = [
        json!("none"),
        json!("None"),
        json!("NONE"),
        json!("nOnE"),
        json!("none "),
        json!(" none"),
        json!("none\u{0}"),
        json!(""),
        json!(null),
        json!(["none"]),
        json!({"none": true}),
    ];
    for via in EVERY_TRANSPORT {
        for alg in &algs {
            let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": rsa().kid}));
            // No signature at all, junk, and the honest RS256 signature of other input.
            for signature in ["", "AAAAAAAAAAAAAAAAAAAAAA", rs_signature] {
                let token = assemble(&[&header, &payload, signature]);
                arena
                    .check(
                        &format!("alg {alg} sig {}", signature.len()),
                        via,
                        &token,
                        Expect::InvalidToken("malformed"),
                    )
                    .await;
            }
            // The header signed for real by the provider's key: still not RS256.
            let token = sign_raw(
                rsa(),
                &json!({"alg": alg, "kid": rsa().kid}),
                &claims("alice"),
            );
            arena
                .check(
                    &format!("alg {alg}, signed"),
                    via,
                    &token,
                    Expect::InvalidToken("malformed"),
                )
                .await;
        }
        // No alg member at all.
        let token = sign_raw(rsa(), &json!({"kid": rsa().kid}), &claims("alice"));
        arena
            .check("no alg", via, &token, Expect::InvalidToken("malformed"))
            .await;
        arena.check("control", via, &honest, Expect::Admitted).await;
    }
    arena.finish().await;
}

/// SubjectPublicKeyInfo around a raw public key.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    der(0x30, &[der(0x30, algorithm), der(0x03, &bits)].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Every form of a public key someone might feed to HMAC as the secret.
fn public_key_forms(key: &TestKey) -> Vec<(String, Vec<u8>)> {
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const EC_P256: &[u8] = &[
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
        0x3d, 0x03, 0x01, 0x07,
    ];
    let algorithm = if key.jwk["kty"] == "RSA" {
        RSA_ENCRYPTION
    } else {
        EC_P256
    };
    let spki = spki(algorithm, &key.public);
    let mut forms = vec![
        (
            "raw public key (DER / EC point)".to_owned(),
            key.public.clone(),
        ),
        ("SPKI DER".to_owned(), spki.clone()),
        ("SPKI PEM".to_owned(), pem("PUBLIC KEY", &spki).into_bytes()),
        (
            "SPKI PEM, no final newline".to_owned(),
            pem("PUBLIC KEY", &spki).trim_end().as_bytes().to_vec(),
        ),
        ("JWK".to_owned(), key.jwk.to_string().into_bytes()),
        (
            "JWKS".to_owned(),
            json!({"keys": [key.jwk]}).to_string().into_bytes(),
        ),
    ];
    if key.jwk["kty"] == "RSA" {
        forms.push((
            "PKCS#1 PEM".to_owned(),
            pem("RSA PUBLIC KEY", &key.public).into_bytes(),
        ));
        let n = key.jwk["n"].as_str().expect("n");
        forms.push(("modulus".to_owned(), URL_SAFE_NO_PAD.decode(n).expect("n")));
    }
    forms
}

/// An HMAC-signed token (HS256, HS384 or HS512) with `secret`.
fn sign_hmac(alg: &str, secret: &[u8], header: &Value, claims: &Value) -> String {
    let algorithm = match alg {
        "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
        "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
        _ => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let input = format!("{}.{}", b64(header), b64(claims));
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(algorithm, secret),
        input.as_bytes(),
    );
    assemble(&[&input, &URL_SAFE_NO_PAD.encode(tag.as_ref())])
}

#[tokio::test]
async fn hmac_with_the_public_key_as_the_secret_is_refused() {
    let mut arena = Arena::start().await;
    for key in [rsa(), ec()] {
        for (form, secret) in public_key_forms(key) {
            for alg in ["HS256", "HS384", "HS512"] {
                let token = sign_hmac(
                    alg,
                    &secret,
                    &json!({"alg": alg, "typ": "JWT", "kid": key.kid}),
                    &claims("alice"),
                );
                arena
                    .check(
                        &format!("{alg} with {}'s {form}", key.kid),
                        Via::Header,
                        &token,
                        Expect::InvalidToken("bad_algorithm"),
                    )
                    .await;
            }
        }
        arena
            .check(
                "control",
                Via::Header,
                &sign(key, &claims("alice")),
                Expect::Admitted,
            )
            .await;
    }
    arena.finish().await;
}
