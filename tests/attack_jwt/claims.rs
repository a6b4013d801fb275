//! Claim attacks: `exp` and `nbf` of the wrong type or size, and repeated member names.

use super::*;

#[tokio::test]
async fn exp_and_nbf_of_the_wrong_type_are_refused() {
    let mut arena = Arena::start().await;
    let soon = now() + 300;
    let past = now() - 60;
    let exps = [
        ("string", json!(soon.to_string()), "missing_claim"),
        ("float", json!(soon as f64 + 0.5), "malformed"),
        ("float without fraction", json!(soon as f64), "malformed"),
        ("1e30", json!(1e30), "missing_claim"),
        ("u64::MAX", json!(u64::MAX), "malformed"),
        ("2^63", json!(1u64 << 63), "malformed"),
        ("year 10000", json!(253_402_300_800u64), "malformed"),
        ("negative", json!(-1), "missing_claim"),
        ("zero", json!(0), "expired"),
        ("null", json!(null), "missing_claim"),
        ("true", json!(true), "missing_claim"),
        // Past jsonwebtoken's lenient number parser only as far as the JSON itself breaks.
        ("array", json!([soon]), "malformed"),
        ("object", json!({"$date": soon}), "malformed"),
    ];
    for (name, exp, reason) in exps {
        let token = sign(rsa(), &claims_with("exp", exp));
        arena
            .check(
                &format!("exp {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken(reason),
            )
            .await;
    }
    let nbfs = [
        ("string", json!(past.to_string())),
        ("float", json!(past as f64 + 0.5)),
        ("1e30", json!(1e30)),
        ("negative", json!(-1)),
        ("null", json!(null)),
        ("true", json!(true)),
        ("array", json!([past])),
    ];
    for (name, nbf) in nbfs {
        let token = sign(rsa(), &claims_with("nbf", nbf));
        arena
            .check(
                &format!("nbf {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken("malformed"),
            )
            .await;
    }
    for (name, nbf) in [
        ("in an hour", json!(now() + 3600)),
        ("u64::MAX", json!(u64::MAX)),
    ] {
        let token = sign(rsa(), &claims_with("nbf", nbf));
        arena
            .check(
                &format!("nbf {name}"),
                Via::Header,
                &token,
                Expect::InvalidToken("not_yet_valid"),
            )
            .await;
    }
    let token = sign(rsa(), &claims_with("exp", json!(253_402_300_799u64)));
    arena
        .check(
            "control: exp 9999-12-31",
            Via::Header,
            &token,
            Expect::Admitted,
        )
        .await;
    let token = sign(rsa(), &claims_with("nbf", json!(past)));
    arena
        .check(
            "control: nbf in the past",
            Via::Header,
            &token,
            Expect::Admitted,
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
    arena.finish().await;
}

#[tokio::test]
async fn duplicate_json_members_are_refused() {
    let mut arena =
        Arena::start_with("      require_claims:\n        scope: [chat:admin]\n", "").await;
    let kid = &rsa().kid;
    let (soon, past) = (now() + 300, now() - 600);
    let body = |extra: &str| {
        format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","jti":"dup","exp":{soon},{extra}}}"#
        )
    };
    let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
    let admin = body(r#""scope":"chat:admin""#);
    let cases = [
        (
            "two alg, none last",
            format!(r#"{{"alg":"RS256","kid":"{kid}","alg":"none"}}"#),
            admin.clone(),
        ),
        (
            "two alg, none first",
            format!(r#"{{"alg":"none","kid":"{kid}","alg":"RS256"}}"#),
            admin.clone(),
        ),
        (
            "two kid",
            format!(r#"{{"alg":"RS256","kid":"nope","kid":"{kid}"}}"#),
            admin.clone(),
        ),
        (
            "two typ",
            format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
            admin.clone(),
        ),
        (
            "two exp, expired last",
            header.clone(),
            body(&format!(r#""scope":"chat:admin","exp":{past}"#)),
        ),
        (
            "two exp, expired first",
            header.clone(),
            format!(
                r#"{{"exp":{past},"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{soon},"scope":"chat:admin"}}"#
            ),
        ),
        (
            "two sub",
            header.clone(),
            body(r#""scope":"chat:admin","sub":"root""#),
        ),
        (
            "two scope, the wider last",
            header.clone(),
            body(r#""scope":"chat:read","scope":"chat:admin""#),
        ),
        (
            "two scope, the wider first",
            header.clone(),
            body(r#""scope":"chat:admin","scope":"chat:read""#),
        ),
        (
            "two aud",
            header.clone(),
            body(r#""scope":"chat:admin","aud":"other""#),
        ),
        (
            "escaped twin",
            header.clone(),
            body(r#""scope":"chat:read","sc\u006fpe":"chat:admin""#),
        ),
        (
            "nested twin",
            header.clone(),
            body(r#""scope":"chat:admin","ctx":{"a":1,"a":2}"#),
        ),
    ];
    for (name, header, claims) in &cases {
        let token = sign_text(rsa(), header, claims);
        arena
            .check(name, Via::Header, &token, Expect::InvalidToken("malformed"))
            .await;
    }
    let token = sign_text(rsa(), &header, &body(r#""scope":"chat:read""#));
    arena
        .check(
            "control: a narrower scope",
            Via::Header,
            &token,
            Expect::InsufficientScope,
        )
        .await;
    let token = sign_text(rsa(), &header, &admin);
    arena
        .check("control", Via::Header, &token, Expect::Admitted)
        .await;
    arena.finish().await;
}
