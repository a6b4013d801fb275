//! The configuration contract: the example parses, and every bad snippet is refused with a
//! message that names its path and line.

use std::path::Path;

use wsgate_core::Config;
use wsgate_core::config::{Error, HostMatch, OnUnavailable};
use wsgate_core::messages::{Binary, OnInvalid, Rejection, Text};

use crate::support::Pki;

fn valid(pki: &Pki) -> String {
    format!(
        "listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  address: 127.0.0.1:0\nroutes:\n  - name: chat\n    match:\n      path: /chat\n    backend: ws://127.0.0.1:9001/ws\n    auth:\n      provider: corp\n    origins: any\n\
         providers:\n  - name: corp\n    issuer: https://id.example.com/\n    jwks_url: https://id.example.com/jwks.json\n    audiences: [chat]\n",
        pki.cert_path.display(),
        pki.key_path.display()
    )
}

fn problems(yaml: &str, base: &Path) -> Vec<String> {
    let env = |name: &str| (name == "SET").then(|| "127.0.0.1:7000".to_owned());
    match Config::parse(yaml, base, &env) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn the_example_parses() {
    let pki = Pki::new();
    let certs = pki.dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::copy(&pki.cert_path, certs.join("server.crt")).expect("copy");
    std::fs::copy(&pki.key_path, certs.join("server.key")).expect("copy");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .expect("example");
    // The example schema, switched on where the example shows it.
    let schemas = pki.dir.path().join("examples/schemas");
    std::fs::create_dir_all(&schemas).expect("mkdir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schemas/chat.json"),
        schemas.join("chat.json"),
    )
    .expect("copy");
    let example = example.replace(
        "      # schema: examples/schemas/chat.json",
        "      schema: examples/schemas/chat.json",
    );
    let config = Config::parse(&example, pki.dir.path(), &|name| {
        (name == "WSGATE_ADMIN_TOKEN").then(|| "an-admin-token-for-tests".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.providers.len(), 1);
    assert!(config.admin.token.is_some());
    assert_eq!(
        config.listen.handshake_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        config.routes[0].host,
        Some(HostMatch::Exact("chat.example.com".into()))
    );
    let rules = config.routes[0]
        .messages
        .as_ref()
        .expect("chat has message rules");
    assert!(rules.schema.is_some(), "the example schema compiles");
    let say = br#"{"type": "say", "room": "lobby", "text": "hello"}"#;
    assert_eq!(rules.judge(true, say), Ok(()));
    assert_eq!(
        rules.judge(true, br#"{"type": "join", "room": "lobby"}"#),
        Ok(())
    );
    assert_eq!(
        rules.judge(true, br#"{"type": "say", "room": "Lobby!", "text": "x"}"#),
        Err(Rejection::Schema)
    );
    assert_eq!(
        rules.judge(true, br#"{"type": "ping", "x": 1}"#),
        Err(Rejection::Schema)
    );
    assert!(config.routes[1].messages.is_none());
}

#[test]
fn defaults_fill_optional_keys() {
    let pki = Pki::new();
    let config = Config::parse(&valid(&pki), pki.dir.path(), &|_| None).expect("valid");
    assert_eq!(config.listen.max_connections, 50_000);
    assert_eq!(
        config.listen.shutdown_grace,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        config.listen.busy_poll,
        std::time::Duration::from_micros(50)
    );
    assert_eq!(config.listen.ipv6_prefix, 64);
    assert_eq!(config.listen.max_pending_per_ip, 256);
    assert_eq!(config.routes[0].limits.max_message_size, 1 << 20);
    assert_eq!(
        config.routes[0].timeouts.backend_connect,
        std::time::Duration::from_secs(5)
    );
}

#[test]
fn environment_variables_are_substituted() {
    let pki = Pki::new();
    let yaml = valid(&pki).replace("address: 127.0.0.1:0\nroutes", "address: ${SET}\nroutes");
    let env = |name: &str| (name == "SET").then(|| "127.0.0.1:7000".to_owned());
    let config = Config::parse(&yaml, pki.dir.path(), &env).expect("valid");
    assert_eq!(config.admin.address.port(), 7000);
}

#[test]
fn bad_snippets_name_their_path_and_line() {
    let pki = Pki::new();
    let base = valid(&pki);
    // (what to replace, replacement, expected fragment)
    let table: &[(&str, &str, &str)] = &[
        (
            "address: 127.0.0.1:0\n  tls",
            "address: nowhere\n  tls",
            "listen.address (line 2): \"nowhere\": expected an IP address and port",
        ),
        (
            "  tls:\n",
            "  handshake_timeout: 10\n  tls:\n",
            "listen.handshake_timeout (line 3): \"10\": expected a duration with a unit",
        ),
        (
            "  tls:\n",
            "  max_connections: 0\n  tls:\n",
            "listen.max_connections (line 3): \"0\": expected a whole number greater than zero",
        ),
        (
            "  tls:\n",
            "  busy_poll: 2ms\n  tls:\n",
            "listen.busy_poll (line 3): \"2ms\": must be at most 1ms (0s turns busy polling off)",
        ),
        (
            "  tls:\n",
            "  busy_poll: 50\n  tls:\n",
            "listen.busy_poll (line 3): \"50\": expected a duration with a unit",
        ),
        (
            "  tls:\n",
            "  ipv6_prefix: 129\n  tls:\n",
            "listen.ipv6_prefix (line 3): \"129\": expected a prefix length from 1 to 128",
        ),
        (
            "  tls:\n",
            "  max_pending_per_ip: 0\n  tls:\n",
            "listen.max_pending_per_ip (line 3): \"0\": expected a whole number greater than zero",
        ),
        (
            "  tls:\n",
            "  bogus: 1\n  tls:\n",
            "listen.bogus (line 3): unknown field `bogus`",
        ),
        (
            "backend: ws://127.0.0.1:9001/ws",
            "backend: http://x/",
            "routes[0].backend (line 12): \"http://x/\": is not a ws:// URL",
        ),
        (
            "      path: /chat",
            "      path: chat",
            "routes[0].match.path (line 11): \"chat\": expected an absolute path prefix",
        ),
        (
            "      path: /chat",
            "      path: /chat//room",
            "routes[0].match.path (line 11): \"/chat//room\": expected an absolute path prefix",
        ),
        (
            "  address: 127.0.0.1:0\n  tls",
            "  address: 127.0.0.1:0\n  handshake_timeout: 18446744073709551615s\n  tls",
            "listen.handshake_timeout (line 3): \"18446744073709551615s\": duration is too large",
        ),
        (
            "    origins: any\n",
            "    origins: any\n    timeouts:\n      idle: 5124095576030431h\n",
            "routes[0].timeouts.idle (line 17): \"5124095576030431h\": duration is too large",
        ),
        (
            "      path: /chat",
            "      path: /chat;v=1",
            "routes[0].match.path (line 11): \"/chat;v=1\": expected an absolute path prefix",
        ),
        (
            "      path: /chat",
            "      path: /chat\n      host: \"bad host\"",
            "routes[0].match.host (line 12)",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    limits:\n      max_message_size: 1 megabyte\n",
            "routes[0].limits.max_message_size (line 14): \"1 megabyte\": expected a size with a unit",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    limits:\n      message_rate: 10 per second\n",
            "routes[0].limits.message_rate (line 14): \"10 per second\": expected a rate such as 100/s",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    limits:\n      byte_rate: 1MiB\n",
            "routes[0].limits.byte_rate (line 14): \"1MiB\": expected a byte rate",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    limits:\n      on_limit: ignore\n",
            "routes[0].limits.on_limit (line 14): \"ignore\": expected close or drop",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    limits:\n      handshake_burst_per_ip: 0\n",
            "routes[0].limits.handshake_burst_per_ip (line 14): \"0\": expected a whole number",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    timeouts:\n      idle: forever\n",
            "routes[0].timeouts.idle (line 14): \"forever\": expected a duration",
        ),
        (
            "admin:\n",
            "trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\nadmin:\n",
            "trusted_proxies[1] (line 6): \"10.0.0.0/33\": expected an address or a network",
        ),
        (
            "    backend: ws://127.0.0.1:9001/ws\n",
            "    backend: ws://127.0.0.1:9001/ws\n    timeouts:\n      backend_connect: 0s\n",
            "routes[0].timeouts.backend_connect (line 14): \"0s\": must be greater than zero",
        ),
        (
            "  - name: chat\n",
            "  - name: \"chat room\"\n",
            "routes[0].name (line 9): \"chat room\": expected 1 to 64 letters",
        ),
        (
            "address: 127.0.0.1:0\nroutes",
            "address: ${UNSET}\nroutes",
            "admin.address (line 7): environment variable UNSET is not set",
        ),
        (
            "    match:\n      path: /chat\n",
            "",
            "routes[0].match (line 9): is required",
        ),
        (
            "admin:\n  address: 127.0.0.1:0\n",
            "",
            "admin (line 1): is required",
        ),
        (
            "    origins: any\n",
            "    origins: any\n  - name: chat\n    match:\n      path: /other\n    backend: ws://127.0.0.1:1/\n    auth:\n      provider: corp\n    origins: any\n",
            "routes[1].name (line 16): \"chat\" is used by an earlier route",
        ),
        (
            "    origins: any\n",
            "    origins: any\n  - name: twin\n    match:\n      path: /chat/\n    backend: ws://127.0.0.1:1/\n    auth:\n      provider: corp\n    origins: any\n",
            "routes[1].match (line 16): an earlier route has the same host and path",
        ),
        (
            "      provider: corp\n",
            "      provider: nope\n",
            "routes[0].auth.provider (line 14): \"nope\": no provider is named so (known: corp)",
        ),
        (
            "    origins: any\n",
            "",
            "routes[0].origins (line 9): is required",
        ),
        (
            "    auth:\n      provider: corp\n",
            "",
            "routes[0].auth (line 9): is required",
        ),
        (
            "    origins: any\n",
            "    origins: all\n",
            "routes[0].origins (line 15): \"all\": expected `any`",
        ),
        (
            "    origins: any\n",
            "    origins:\n      allow: [\"https://x.com/path\"]\n",
            "routes[0].origins.allow[0] (line 16): \"https://x.com/path\": expected scheme://host[:port]",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      token_from: [cookie]\n",
            "routes[0].origins (line 9): a cookie token needs an Origin allowlist",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      token_from: [header, carrier-pigeon]\n",
            "routes[0].auth.token_from[1] (line 15): \"carrier-pigeon\": expected header, subprotocol, query or cookie",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      forward_claims:\n        sub: Authorization\n",
            "routes[0].auth.forward_claims.sub (line 16): \"Authorization\": this header belongs to the proxy",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      on_expiry: later\n",
            "routes[0].auth.on_expiry (line 15): \"later\": expected close or ignore",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      refresh: header\n",
            "routes[0].auth.refresh (line 15): \"header\": expected off or message",
        ),
        (
            "      provider: corp\n",
            "      provider: corp\n      refresh: message\n      refresh_prefix: \"re fresh:\"\n",
            "routes[0].auth.refresh_prefix (line 16): \"re fresh:\": expected 4 to 64 printable ASCII",
        ),
        (
            "https://id.example.com/jwks.json",
            "http://id.example.com/jwks.json",
            "providers[0].jwks_url (line 19): \"http://id.example.com/jwks.json\": must be https://",
        ),
        (
            "    audiences: [chat]\n",
            "    audiences: [chat]\n    algorithms: [RS256, HS256]\n",
            "providers[0].algorithms[1] (line 21): \"HS256\": expected one of",
        ),
        (
            "    audiences: [chat]\n",
            "    audiences: []\n",
            "providers[0].audiences (line 20): must list at least one audience",
        ),
        (
            "    audiences: [chat]\n",
            "    audiences: [chat]\n    ca_file: missing-ca.pem\n",
            "providers[0].ca_file (line 21): \"missing-ca.pem\": cannot read",
        ),
        (
            "    audiences: [chat]\n",
            "    audiences: [chat]\n    leeway: soon\n",
            "providers[0].leeway (line 21): \"soon\": expected a duration",
        ),
        (
            "  - name: corp\n    issuer: https://id.example.com/\n",
            "  - name: corp\n",
            "providers[0].issuer (line 17): is required",
        ),
        (
            "address: 127.0.0.1:0\nroutes",
            "address: 127.0.0.1:0\n  token: short\nroutes",
            "admin.token (line 8): must be at least 16 characters without spaces (the value is not shown)",
        ),
    ];
    for (from, to, expected) in table {
        assert!(base.contains(from), "bad table entry: {from:?}");
        let yaml = base.replacen(from, to, 1);
        let found = problems(&yaml, pki.dir.path());
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected {expected:?} for\n{yaml}\ngot {found:#?}"
        );
    }
}

#[test]
fn all_value_problems_are_reported_at_once() {
    let pki = Pki::new();
    let yaml = valid(&pki)
        .replace("address: 127.0.0.1:0\n  tls", "address: nowhere\n  tls")
        .replace("backend: ws://127.0.0.1:9001/ws", "backend: http://x/")
        .replace("      path: /chat", "      path: chat");
    let found = problems(&yaml, pki.dir.path());
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn missing_or_broken_certificates_are_reported() {
    let pki = Pki::new();
    let missing = valid(&pki).replace(
        &pki.cert_path.display().to_string(),
        "/nonexistent/server.crt",
    );
    let found = problems(&missing, pki.dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("listen.tls.cert (line 4): cannot read the certificate chain")),
        "{found:#?}"
    );
    // A key that does not belong to the certificate.
    let other = Pki::new();
    let mismatched = valid(&pki).replace(
        &pki.key_path.display().to_string(),
        &other.key_path.display().to_string(),
    );
    let found = problems(&mismatched, pki.dir.path());
    assert!(found.iter().any(|p| p.contains("listen.tls")), "{found:#?}");
}

#[test]
fn an_empty_file_is_refused_clearly() {
    let found = problems("  \n", Path::new("."));
    assert!(
        found.iter().any(|p| p.contains("the file is empty")),
        "{found:#?}"
    );
}

/// Structural problems (unknown keys, a list where a mapping belongs, a mapping where a value
/// belongs) do not hide each other nor the value and missing-key problems elsewhere.
#[test]
fn unknown_keys_type_errors_and_missing_keys_are_all_reported_at_once() {
    let pki = Pki::new();
    let yaml = valid(&pki)
        .replace("    audiences: [chat]\n", "    audiance: [chat]\n")
        .replace("    origins: any\n", "")
        .replace(
            "  address: 127.0.0.1:0\nroutes",
            "  address: 127.0.0.1:0\n  bogus: 1\nroutes",
        )
        .replace(
            "      provider: corp\n",
            "      provider: corp\n      token_from:\n        list: [header]\n",
        )
        .replace("address: 127.0.0.1:0\n  tls", "address: nowhere\n  tls");
    let found = problems(&yaml, pki.dir.path());
    for expected in [
        "providers[0].audiance (line 22): unknown field `audiance`",
        "providers[0].audiences (line 19): is required",
        "routes[0].origins (line 10): is required",
        "admin.bogus (line 8): unknown field `bogus`",
        "routes[0].auth.token_from (line 17): expected a list",
        "listen.address (line 2): \"nowhere\"",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected {expected:?} for\n{yaml}\ngot {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "one problem each: {found:#?}");
}

#[test]
fn max_session_is_off_by_default_parsed_and_validated() {
    let pki = Pki::new();
    let config = Config::parse(&valid(&pki), pki.dir.path(), &|_| None).expect("valid");
    assert_eq!(config.routes[0].timeouts.max_session, None);
    let capped = valid(&pki).replace(
        "    origins: any\n",
        "    origins: any\n    timeouts:\n      max_session: 8h\n",
    );
    let config = Config::parse(&capped, pki.dir.path(), &|_| None).expect("valid");
    assert_eq!(
        config.routes[0].timeouts.max_session,
        Some(std::time::Duration::from_secs(8 * 3600))
    );
    for (value, expected) in [
        ("forever", "\"forever\": expected a duration"),
        ("0s", "\"0s\": must be greater than zero"),
    ] {
        let yaml = valid(&pki).replace(
            "    origins: any\n",
            &format!("    origins: any\n    timeouts:\n      max_session: {value}\n"),
        );
        let found = problems(&yaml, pki.dir.path());
        let expected = format!("routes[0].timeouts.max_session (line 17): {expected}");
        assert!(
            found.iter().any(|p| p.contains(&expected)),
            "expected {expected:?}, got {found:#?}"
        );
    }
}

#[test]
fn max_token_lifetime_is_off_by_default_parsed_and_validated() {
    let pki = Pki::new();
    let config = Config::parse(&valid(&pki), pki.dir.path(), &|_| None).expect("valid");
    assert_eq!(config.routes[0].auth.max_token_lifetime, None);
    let ceiling = valid(&pki).replace(
        "      provider: corp\n",
        "      provider: corp\n      max_token_lifetime: 24h\n",
    );
    let config = Config::parse(&ceiling, pki.dir.path(), &|_| None).expect("valid");
    assert_eq!(
        config.routes[0].auth.max_token_lifetime,
        Some(std::time::Duration::from_secs(24 * 3600))
    );
    for (value, expected) in [
        ("a day", "\"a day\": expected a duration"),
        ("0s", "\"0s\": must be greater than zero"),
    ] {
        let yaml = valid(&pki).replace(
            "      provider: corp\n",
            &format!("      provider: corp\n      max_token_lifetime: {value}\n"),
        );
        let found = problems(&yaml, pki.dir.path());
        let expected = format!("routes[0].auth.max_token_lifetime (line 15): {expected}");
        assert!(
            found.iter().any(|p| p.contains(&expected)),
            "expected {expected:?}, got {found:#?}"
        );
    }
}

#[test]
fn refresh_is_off_by_default_and_its_prefix_defaults_when_on() {
    let pki = Pki::new();
    let with = |auth: &str| {
        let yaml = valid(&pki).replace(
            "      provider: corp\n",
            &format!("      provider: corp\n{auth}"),
        );
        Config::parse(&yaml, pki.dir.path(), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(with("").routes[0].auth.refresh_prefix, None);
    // `off` unquoted is the word, not YAML 1.1's false.
    assert_eq!(
        with("      refresh: off\n").routes[0].auth.refresh_prefix,
        None
    );
    assert_eq!(
        with("      refresh: message\n").routes[0]
            .auth
            .refresh_prefix,
        Some("wsgate.refresh:".to_owned())
    );
    assert_eq!(
        with("      refresh: message\n      refresh_prefix: \"app/renew:\"\n").routes[0]
            .auth
            .refresh_prefix,
        Some("app/renew:".to_owned())
    );
}

#[test]
fn message_rules_parse_with_their_defaults_and_schema() {
    let pki = Pki::new();
    let dir = pki.dir.path().join("schemas");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("chat.json"), r#"{"type": "object"}"#).expect("write");
    let with = |messages: &str| {
        let yaml = valid(&pki).replace(
            "    origins: any\n",
            &format!("    origins: any\n{messages}"),
        );
        Config::parse(&yaml, pki.dir.path(), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(with("").routes[0].messages.is_none());
    let config = with("    messages: {}\n");
    let rules = config.routes[0].messages.as_ref().expect("rules");
    assert_eq!(rules.text, Text::Any);
    assert_eq!(rules.binary, Binary::Allow);
    assert_eq!(rules.max_depth, 32);
    assert_eq!(rules.on_invalid, OnInvalid::Close);
    assert!(rules.schema.is_none());
    let config = with(
        "    messages:\n      text: json\n      binary: refuse\n      max_depth: 4\n      schema: schemas/chat.json\n      on_invalid: drop\n",
    );
    let rules = config.routes[0].messages.as_ref().expect("rules");
    assert_eq!(
        (rules.text, rules.binary, rules.max_depth, rules.on_invalid),
        (Text::Json, Binary::Refuse, 4, OnInvalid::Drop)
    );
    let schema = rules.schema.as_ref().expect("a schema");
    assert_eq!(schema.path(), dir.join("chat.json"));
}

#[test]
fn bad_message_rules_name_their_path_and_line() {
    let pki = Pki::new();
    std::fs::write(pki.dir.path().join("bad.json"), r#"{"type": 12}"#).expect("write");
    std::fs::write(pki.dir.path().join("text.json"), "{not json").expect("write");
    std::fs::write(pki.dir.path().join("ok.json"), "{}").expect("write");
    let table: &[(&str, &str)] = &[
        (
            "text: xml",
            "routes[0].messages.text (line 17): \"xml\": expected any or json",
        ),
        (
            "binary: deny",
            "routes[0].messages.binary (line 17): \"deny\": expected allow or refuse",
        ),
        (
            "max_depth: 0",
            "routes[0].messages.max_depth (line 17): \"0\": expected a whole number from 1 to 128",
        ),
        (
            "max_depth: 129",
            "routes[0].messages.max_depth (line 17): \"129\": expected a whole number from 1 to 128",
        ),
        (
            "on_invalid: ignore",
            "routes[0].messages.on_invalid (line 17): \"ignore\": expected close or drop",
        ),
        (
            "size: 3",
            "routes[0].messages.size (line 17): unknown field `size`",
        ),
        (
            "text: json\n      schema: missing.json",
            "routes[0].messages.schema (line 18): \"missing.json\": cannot read",
        ),
        (
            "text: json\n      schema: bad.json",
            "routes[0].messages.schema (line 18): \"bad.json\": ",
        ),
        (
            "text: json\n      schema: text.json",
            "routes[0].messages.schema (line 18): \"text.json\": ",
        ),
        (
            "schema: ok.json",
            "routes[0].messages.schema (line 17): a schema needs `text: json`",
        ),
        (
            "text: any\n      schema: ok.json",
            "routes[0].messages.schema (line 18): a schema needs `text: json`",
        ),
    ];
    for (messages, expected) in table {
        let yaml = valid(&pki).replace(
            "    origins: any\n",
            &format!("    origins: any\n    messages:\n      {messages}\n"),
        );
        let found = problems(&yaml, pki.dir.path());
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected {expected:?} for\n{yaml}\ngot {found:#?}"
        );
    }
    // The schema's own problem is named.
    let yaml = valid(&pki).replace(
        "    origins: any\n",
        "    origins: any\n    messages:\n      text: json\n      schema: bad.json\n",
    );
    let found = problems(&yaml, pki.dir.path()).join("\n");
    assert!(
        found.contains("is not a valid JSON Schema (draft 2020-12)"),
        "{found}"
    );
}

#[test]
fn cluster_is_absent_by_default_and_fills_its_defaults() {
    let pki = Pki::new();
    let config = Config::parse(&valid(&pki), pki.dir.path(), &|_| None).expect("valid");
    assert!(config.cluster.is_none());
    let yaml = format!(
        "{}cluster:\n  redis: redis://:${{PASS}}@127.0.0.1:6379/0\n",
        valid(&pki)
    );
    let env = |name: &str| (name == "PASS").then(|| "hunter2-hunter2".to_owned());
    let config = Config::parse(&yaml, pki.dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let cluster = config.cluster.expect("a cluster");
    assert_eq!(
        cluster.redis.expose(),
        "redis://:hunter2-hunter2@127.0.0.1:6379/0"
    );
    assert!(!format!("{cluster:?}").contains("hunter2"), "{cluster:?}");
    assert_eq!(cluster.key_prefix, "wsgate");
    assert_eq!(cluster.lease, std::time::Duration::from_secs(15));
    assert_eq!(cluster.on_unavailable, OnUnavailable::Local);
    let pid = format!("-{}", std::process::id());
    assert!(cluster.instance.ends_with(&pid), "{}", cluster.instance);
    let yaml = format!(
        "{}cluster:\n  redis: rediss://redis.internal:6380\n  key_prefix: edge\n  instance: edge-a\n  lease: 3s\n  on_unavailable: refuse\n",
        valid(&pki)
    );
    let cluster = Config::parse(&yaml, pki.dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .cluster
        .expect("a cluster");
    assert_eq!(
        (cluster.key_prefix.as_str(), cluster.instance.as_str()),
        ("edge", "edge-a")
    );
    assert_eq!(cluster.lease, std::time::Duration::from_secs(3));
    assert_eq!(cluster.on_unavailable, OnUnavailable::Refuse);
}

#[test]
fn bad_cluster_settings_name_their_path_and_line() {
    let pki = Pki::new();
    // `cluster:` is line 21 of the file; its first key is line 22.
    let table: &[(&str, &str)] = &[
        ("  lease: 15s\n", "cluster.redis (line 22): is required"),
        (
            "  redis: http://127.0.0.1:6379\n",
            "cluster.redis (line 22): expected a redis:// or rediss:// URL",
        ),
        (
            "  redis: redis://:pw-not-shown@[::1\n",
            "cluster.redis (line 22): expected a redis:// or rediss:// URL",
        ),
        (
            "  redis: ${UNSET}\n",
            "cluster.redis (line 22): environment variable UNSET is not set",
        ),
        (
            "  redis: redis://127.0.0.1\n  lease: 15\n",
            "cluster.lease (line 23): \"15\": expected a duration with a unit",
        ),
        (
            "  redis: redis://127.0.0.1\n  lease: 100ms\n",
            "cluster.lease (line 23): \"100ms\": must be from 1s to 1h",
        ),
        (
            "  redis: redis://127.0.0.1\n  on_unavailable: maybe\n",
            "cluster.on_unavailable (line 23): \"maybe\": expected local or refuse",
        ),
        (
            "  redis: redis://127.0.0.1\n  instance: \"a b\"\n",
            "cluster.instance (line 23): \"a b\": expected an instance name",
        ),
        (
            "  redis: redis://127.0.0.1\n  key_prefix: \"{x}\"\n",
            "cluster.key_prefix (line 23): \"{x}\": expected a key prefix",
        ),
        (
            "  redis: redis://127.0.0.1\n  bogus: 1\n",
            "cluster.bogus (line 23): unknown field `bogus`",
        ),
    ];
    for (block, expected) in table {
        let yaml = format!("{}cluster:\n{block}", valid(&pki));
        let found = problems(&yaml, pki.dir.path());
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected {expected:?}, got {found:#?}"
        );
        assert!(
            !found.iter().any(|p| p.contains("pw-not-shown")),
            "{found:#?}"
        );
    }
}
