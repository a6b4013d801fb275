//! Header attacks: keys or key URLs supplied by the token (`jwk`, `jku`, `x5u`, `x5c`), `kid`
//! tricks, and `crit` extensions.

use super::*;

/// A listener that must never be connected to: counts what is pending on it, without
/// accepting in the background (so there is no race with a connection still in flight).
struct Lure(std::net::TcpListener);

impl Lure {
    fn start() -> Lure {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind lure");
        listener.set_nonblocking(true).expect("nonblocking");
        Lure(listener)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.local_addr().expect("addr"))
    }

    /// Connections made to it so far.
    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

#[tokio::test]
async fn header_supplied_keys_are_never_used_or_fetched() {
    let mut arena = Arena::start().await;
    let lure = Lure::start();
    let jwks_url = arena.proxy.jwks.url.clone();
    let x5c = STANDARD.encode(Pki::new().ca.as_ref());
    let headers = [
        ("jwk: the attacker's key", json!({"jwk": attacker().jwk})),
        ("jwk: the provider's own key", json!({"jwk": rsa().jwk})),
        ("jku: a listener", json!({"jku": lure.url("/jwks.json")})),
        ("jku: the provider's own JWKS", json!({"jku": jwks_url})),
        ("x5u: a listener", json!({"x5u": lure.url("/cert.pem")})),
        ("x5c: a certificate chain", json!({"x5c": [x5c]})),
        (
            "jku and x5u",
            json!({"jku": lure.url("/a"), "x5u": lure.url("/b")}),
        ),
    ];
    for signer in [attacker(), rsa()] {
        for (name, extra) in &headers {
            let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid});
            for (k, v) in extra.as_object().expect("object") {
                header[k] = v.clone();
            }
            let token = sign_raw(signer, &header, &claims("alice"));
            arena
                .check(
                    &format!("{name}, signed by {}", signer.kid),
                    Via::Header,
                    &token,
                    Expect::InvalidToken("header_key"),
                )
                .await;
        }
    }
    // A kid that is a URL is only a name.
    let token = sign_raw(
        attacker(),
        &json!({"alg": "RS256", "kid": lure.url("/jwks.json")}),
        &claims("alice"),
    );
    arena
        .check(
            "kid: a listener's URL",
            Via::Header,
            &token,
            Expect::InvalidToken("unknown_key"),
        )
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    assert_eq!(lure.connections(), 0, "a header-supplied URL was fetched");
    // The count is real: a connection made now is seen.
    let _probe = std::net::TcpStream::connect(lure.0.local_addr().expect("addr")).expect("connect");
    assert_eq!(lure.connections(), 1, "the lure counts connections");
    arena.finish().await;
}

#[tokio::test]
async fn kid_tricks_find_no_key_and_refetch_at_most_once() {
    let mut arena = Arena::start().await;
    let fetched = arena.proxy.jwks.requests();
    let kids = [
        "../../../../etc/passwd",
        "/dev/null",
        "..\\..\\..\\windows\\win.ini",
        "rsa-1/../rsa-1",
        "rsa-1\u{0}",
        "rsa-1 ",
        " rsa-1",
        "RSA-1",
        "rsa-1\nrsa-1",
        "' OR '1'='1",
        "%72sa-1",
        "ec-1",
        "",
    ];
    for kid in kids {
        let token = sign_raw(
            rsa(),
            &json!({"alg": "RS256", "kid": kid}),
            &claims("alice"),
        );
        arena
            .check(
                &format!("kid {kid:?}"),
                Via::Header,
                &token,
                Expect::InvalidToken("unknown_key"),
            )
            .await;
    }
    for (kid, reason) in [(json!(7), "malformed"), (json!(["rsa-1"]), "malformed")] {
        let token = sign_raw(
            rsa(),
            &json!({"alg": "RS256", "kid": kid}),
            &claims("alice"),
        );
        arena
            .check(
                &format!("kid {kid}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    // 8 KiB: under the token cap, so it is looked up; 64 KiB: over the request head cap in
    // a header, over the token cap elsewhere.
    let long = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": "k".repeat(8 * 1024)}),
        &claims("alice"),
    );
    arena
        .check(
            "8 KiB kid",
            Via::Header,
            &long,
            Expect::InvalidToken("unknown_key"),
        )
        .await;
    let huge = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": "k".repeat(64 * 1024)}),
        &claims("alice"),
    );
    for via in EVERY_TRANSPORT {
        arena
            .check("64 KiB kid", via, &huge, Expect::TooLarge)
            .await;
    }
    // A null kid is no kid: the provider's only RS256 key answers (with two it would not).
    let token = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": null}),
        &claims("alice"),
    );
    arena
        .check("control: kid null", Via::Header, &token, Expect::Admitted)
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    let refetches = arena.proxy.jwks.requests() - fetched;
    assert!(
        refetches <= 1,
        "unknown kids made {refetches} JWKS requests within one refetch cooldown"
    );
    arena.finish().await;
}

#[tokio::test]
async fn crit_extensions_are_refused() {
    let mut arena = Arena::start().await;
    let cases = [
        (json!(["exp"]), "unknown_crit"),
        (json!(["b64"]), "unknown_crit"),
        (json!(["https://example.com/ext"]), "unknown_crit"),
        (json!([]), "unknown_crit"),
        (json!("exp"), "malformed"),
    ];
    for (crit, reason) in cases {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": rsa().kid, "crit": crit});
        if crit == json!(["b64"]) {
            header["b64"] = json!(false);
        }
        let token = sign_raw(rsa(), &header, &claims("alice"));
        arena
            .check(
                &format!("crit {crit}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    // A null member is an absent one (as for every optional header member).
    let token = sign_raw(
        rsa(),
        &json!({"alg": "RS256", "kid": rsa().kid, "crit": null}),
        &claims("alice"),
    );
    arena
        .check("control: crit null", Via::Header, &token, Expect::Admitted)
        .await;
    arena
        .check(
            "control",
            Via::Header,
            &sign(rsa(), &claims("alice")),
            Expect::Admitted,
        )
        .await;
    arena.finish().await;
}
