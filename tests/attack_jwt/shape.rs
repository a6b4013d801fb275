//! Token shape and transport attacks: JWE and other segment counts, oversized tokens in every
//! transport, and two Authorization headers.

use super::*;

#[tokio::test]
async fn jwe_and_other_segment_counts_are_refused() {
    let mut arena = Arena::start().await;
    let honest = sign(rsa(), &claims("alice"));
    let (header, payload, signature) = split(&honest);
    let jwe_header = b64(&json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa().kid}));
    let random =
        |n: usize| URL_SAFE_NO_PAD.encode((0..n).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
    let (key, iv, text, tag) = (random(256), random(12), random(64), random(16));
    let tokens = [
        (
            "5-segment JWE",
            assemble(&[&jwe_header, &key, &iv, &text, &tag]),
        ),
        (
            "JWE, direct encryption",
            assemble(&[
                &b64(&json!({"alg": "dir", "enc": "A256GCM"})),
                "",
                &iv,
                &text,
                &tag,
            ]),
        ),
        (
            "a valid JWS then two more segments",
            assemble(&[header, payload, signature, &iv, &tag]),
        ),
        (
            "four segments",
            assemble(&[header, payload, signature, &tag]),
        ),
        ("one segment", assemble(&[payload])),
        ("only dots", "....".to_owned()),
        ("a valid JWS twice", assemble(&[&honest, &honest])),
    ];
    for (name, token) in &tokens {
        arena
            .check(name, Via::Header, token, Expect::InvalidToken("malformed"))
            .await;
    }
    arena
        .check("control", Via::Header, &honest, Expect::Admitted)
        .await;
    arena.finish().await;
}

#[tokio::test]
async fn oversized_tokens_in_every_transport() {
    let mut arena = Arena::start().await;
    // 1 MiB: the request head is over its 32 KiB cap, which is checked before the request is
    // routed, so every transport gets the same 431 (a status line has no room for finer).
    let mib = sign(rsa(), &claims_with("pad", json!("p".repeat(1 << 20))));
    // 17 KiB: within the head cap, over the 16 KiB token cap.
    let big = sign(rsa(), &claims_with("pad", json!("p".repeat(17 * 1024))));
    for via in EVERY_TRANSPORT {
        arena
            .check("1 MiB token", via, &mib, Expect::TooLarge)
            .await;
        arena
            .check("17 KiB token", via, &big, Expect::InvalidToken("too_long"))
            .await;
        arena
            .check(
                "control",
                via,
                &sign(rsa(), &claims("alice")),
                Expect::Admitted,
            )
            .await;
    }
    arena.finish().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let mut arena = Arena::start().await;
    let alice = sign(rsa(), &claims("alice"));
    let bob = sign(rsa(), &claims("bob"));
    let cases = [
        (
            "the same token twice",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "two different tokens",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {bob}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "a token and junk",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer x.y.z\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "junk and a token",
            format!("Authorization: Bearer x.y.z\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "Bearer and Basic",
            format!("Authorization: Bearer {alice}\r\nAuthorization: Basic YTpi\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "Basic and Bearer",
            format!("Authorization: Basic YTpi\r\nAuthorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "a token and an empty header",
            format!("Authorization: Bearer {alice}\r\nAuthorization: \r\n"),
            Expect::InvalidRequest,
        ),
        (
            "differently cased names",
            format!("authorization: Bearer {alice}\r\nAUTHORIZATION: Bearer {bob}\r\n"),
            Expect::InvalidRequest,
        ),
        (
            "two tokens in one header",
            format!("Authorization: Bearer {alice}, Bearer {bob}\r\n"),
            Expect::InvalidToken("malformed"),
        ),
        (
            "the header and a different query token",
            format!("Authorization: Bearer {alice}\r\n"),
            Expect::InvalidRequest,
        ),
    ];
    for (i, (name, headers, expect)) in cases.iter().enumerate() {
        let path = if i == cases.len() - 1 {
            format!("/echo?access_token={bob}")
        } else {
            "/echo".to_owned()
        };
        arena
            .check_request(name, upgrade_request(&path, headers), *expect)
            .await;
    }
    arena
        .check_request(
            "control: the header and the same query token",
            upgrade_request(
                &format!("/echo?access_token={alice}"),
                &format!("Authorization: Bearer {alice}\r\n"),
            ),
            Expect::Admitted,
        )
        .await;
    arena
        .check("control", Via::Header, &alice, Expect::Admitted)
        .await;
    arena.finish().await;
}
