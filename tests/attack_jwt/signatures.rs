//! Signature attacks: stripped, tampered or borrowed signatures, and ECDSA edge cases (zero,
//! out-of-range and DER-encoded signatures; the malleable high-S twin).

use super::*;

#[tokio::test]
async fn stripped_and_tampered_signatures_are_refused() {
    let mut arena = Arena::start().await;
    let honest = sign(rsa(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let other = sign(rsa(), &claims("bob"));
    let (_, other_payload, other_signature) = split(&other);
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    flipped[17] ^= 0x01;
    let flipped = URL_SAFE_NO_PAD.encode(&flipped);
    let standard = STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).expect("base64url"));
    // Re-encoded, so the text stays canonical base64url whatever the signature's bits.
    let short = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let short = URL_SAFE_NO_PAD.encode(&short[..short.len() - 3]);
    let attacks = [
        (
            "stripped, trailing dot",
            format!("{header}.{payload}."),
            "malformed",
        ),
        (
            "stripped, two segments",
            format!("{header}.{payload}"),
            "malformed",
        ),
        (
            "signature of another token",
            format!("{header}.{payload}.{other_signature}"),
            "bad_signature",
        ),
        (
            "claims of another token",
            format!("{header}.{other_payload}.{signature}"),
            "bad_signature",
        ),
        (
            "one bit flipped",
            format!("{header}.{payload}.{flipped}"),
            "bad_signature",
        ),
        (
            "signature three bytes short",
            format!("{header}.{payload}.{short}"),
            "bad_signature",
        ),
        (
            "signature doubled",
            format!("{header}.{payload}.{signature}{signature}"),
            "bad_signature",
        ),
        (
            "standard base64 with padding",
            format!("{header}.{payload}.{standard}"),
            "malformed",
        ),
        (
            "empty header",
            format!(".{payload}.{signature}"),
            "malformed",
        ),
        (
            "empty claims",
            format!("{header}..{signature}"),
            "malformed",
        ),
    ];
    for (name, token, reason) in &attacks {
        leak::register(token);
        arena
            .check(name, Via::Header, token, Expect::InvalidToken(reason))
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    arena.finish().await;
}

/// The order of the P-256 group.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `a - b` for 256-bit big-endian numbers, `a >= b`.
fn sub256(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "a < b");
    out
}

/// An ASN.1 INTEGER for an unsigned big-endian number.
fn der_uint(n: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        vec![0u8]
    } else {
        Vec::new()
    };
    content.extend(trimmed);
    der(0x02, &content)
}

#[tokio::test]
async fn ecdsa_signature_edge_cases() {
    let mut arena = Arena::start_with("", "").await;
    let honest = sign(ec(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let raw = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    assert_eq!(raw.len(), 64, "ES256 signatures are r || s");
    let r: [u8; 32] = raw[..32].try_into().expect("r");
    let s: [u8; 32] = raw[32..].try_into().expect("s");
    let zero = [0u8; 32];
    let with =
        |r: &[u8], s: &[u8]| assemble(&[header, payload, &URL_SAFE_NO_PAD.encode([r, s].concat())]);
    let der_signature = der(0x30, &[der_uint(&r), der_uint(&s)].concat());
    let attacks = [
        ("r = s = 0", with(&zero, &zero)),
        ("r = 0", with(&zero, &s)),
        ("s = 0", with(&r, &zero)),
        ("r = n", with(&P256_N, &s)),
        ("s = n", with(&r, &P256_N)),
        ("r = s = n", with(&P256_N, &P256_N)),
        ("all ones", with(&[0xff; 32], &[0xff; 32])),
        ("r and s swapped", with(&s, &r)),
        (
            "DER-encoded",
            assemble(&[header, payload, &URL_SAFE_NO_PAD.encode(&der_signature)]),
        ),
        (
            "63 bytes",
            assemble(&[header, payload, &URL_SAFE_NO_PAD.encode(&raw[..63])]),
        ),
        (
            "65 bytes",
            assemble(&[
                header,
                payload,
                &URL_SAFE_NO_PAD.encode([&raw[..], &[0]].concat()),
            ]),
        ),
    ];
    for (name, token) in &attacks {
        arena
            .check(
                name,
                Via::Header,
                token,
                Expect::InvalidToken("bad_signature"),
            )
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    // (r, n - s) verifies for the same key and claims: ECDSA signatures are malleable and
    // ES256 (RFC 7518) does not ask for low S; signers produce either half, so refusing one
    // half would refuse honest tokens. The twin is the same principal: revoking its jti
    // refuses both forms.
    let twin = with(&r, &sub256(&P256_N, &s));
    arena
        .check("high/low-S twin", Via::Header, &twin, Expect::Admitted)
        .await;
    let mut revocable = claims("carol");
    revocable["jti"] = json!("attack-jwt-malleable");
    let carol = sign(ec(), &revocable);
    let (h, p, sig) = split(&carol);
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
    let s2: [u8; 32] = sig[32..].try_into().expect("s");
    let carol_twin = assemble(&[
        h,
        p,
        &URL_SAFE_NO_PAD.encode([&sig[..32], &sub256(&P256_N, &s2)].concat()),
    ]);
    let (code, body) = admin_call(
        arena.proxy.admin,
        "POST",
        "/admin/revoke",
        Some(ADMIN_TOKEN),
        r#"{"jti": "attack-jwt-malleable"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for token in [&carol, &carol_twin] {
        arena
            .check(
                "revoked jti, either S",
                Via::Header,
                token,
                Expect::InvalidToken("revoked"),
            )
            .await;
    }
    arena.finish().await;
}
