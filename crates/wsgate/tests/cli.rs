//! The binary as operators run it: `check` exit codes and messages, and `run` draining on
//! SIGTERM with 1001 on both sides and exit code 0.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use support::*;

const WSGATE: &str = env!("CARGO_BIN_EXE_wsgate");

fn write_config(pki: &Pki, routes: &str, extra_listen: &str, jwks_url: &str) -> PathBuf {
    let path = pki.dir.path().join("wsgate.yaml");
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: server.crt\n    key: server.key\n{extra_listen}admin:\n  address: 127.0.0.1:0\n\
         providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {jwks_url}\n    audiences: [{AUDIENCE}]\nroutes:\n{routes}"
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn check(config: &Path) -> (i32, String, String) {
    let out = Command::new(WSGATE)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run wsgate");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_valid_file_with_exit_0() {
    let pki = Pki::new();
    let path = write_config(
        &pki,
        &route("echo", "/echo", "ws://127.0.0.1:9/"),
        "",
        "https://id.example.com/jwks.json",
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid (1 routes)"), "{stdout}");
    // The same file through WSGATE_CONFIG.
    let out = Command::new(WSGATE)
        .arg("check")
        .env("WSGATE_CONFIG", &path)
        .output()
        .expect("run");
    assert!(out.status.success());
}

#[test]
fn check_lists_every_problem_and_exits_64() {
    let pki = Pki::new();
    let routes = "  - name: echo\n    match:\n      path: echo\n    backend: http://127.0.0.1:9/\n";
    let path = write_config(
        &pki,
        routes,
        "  handshake_timeout: 10\n",
        "http://id.example.com/jwks.json",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 64, "{stderr}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}: listen.handshake_timeout (line 6)"),
        format!("{file}: providers[0].jwks_url (line 12)"),
        format!("{file}: routes[0].match.path (line 17)"),
        format!("{file}: routes[0].backend (line 18)"),
        format!("{file}: routes[0].auth (line 15): is required"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
    let (code, _, stderr) = check(Path::new("/nonexistent/wsgate.yaml"));
    assert_eq!(code, 64);
    assert!(
        stderr.contains("cannot read /nonexistent/wsgate.yaml"),
        "{stderr}"
    );
    // `run` refuses the same file before binding anything.
    let out = Command::new(WSGATE)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_reads_schemas_beside_the_file_and_names_a_bad_one() {
    let pki = Pki::new();
    let schemas = pki.dir.path().join("schemas");
    std::fs::create_dir_all(&schemas).expect("mkdir");
    std::fs::write(schemas.join("chat.json"), r#"{"type": "object"}"#).expect("write");
    std::fs::write(schemas.join("bad.json"), r#"{"type": "thing"}"#).expect("write");
    let with = |schema: &str| {
        let routes = format!(
            "{}    messages:\n      text: json\n      schema: {schema}\n",
            route("echo", "/echo", "ws://127.0.0.1:9/")
        );
        write_config(&pki, &routes, "", "https://id.example.com/jwks.json")
    };
    // Relative to the configuration file's directory, wherever wsgate runs from.
    let (code, _, stderr) = check(&with("schemas/chat.json"));
    assert_eq!(code, 0, "{stderr}");
    for (schema, expected) in [
        ("schemas/missing.json", "cannot read"),
        (
            "schemas/bad.json",
            "is not a valid JSON Schema (draft 2020-12)",
        ),
    ] {
        let path = with(schema);
        let (code, _, stderr) = check(&path);
        assert_eq!(code, 64, "{stderr}");
        let at = format!("{}: routes[0].messages.schema (line 23)", path.display());
        assert!(
            stderr.contains(&at) && stderr.contains(expected),
            "missing {at:?} / {expected:?} in\n{stderr}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_sessions_with_1001_and_exits_0() {
    let pki = Pki::new();
    let mut backend = EchoBackend::start(&[]).await;
    let jwks = JwksServer::start(&keys()[..1]).await;
    let routes = route("echo", "/echo", &backend.url());
    let path = write_config(&pki, &routes, "  shutdown_grace: 5s\n", &jwks.url);
    let mut child = tokio::process::Command::new(WSGATE)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsgate");
    let mut logs = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut address = None;
    let mut loaded = false;
    let addr = within(async {
        while let Some(line) = logs.next_line().await.expect("read log") {
            if line.contains("wsgate listening") {
                let start = line.find(r#""address":""#).expect("address field") + 11;
                let end = start + line[start..].find('"').expect("end quote");
                address = line[start..end].parse::<std::net::SocketAddr>().ok();
            }
            // Serving starts once the provider's keys are in (the two lines in either order).
            loaded |= line.contains("JWKS loaded");
            if let (Some(address), true) = (address, loaded) {
                return address;
            }
        }
        panic!("wsgate exited before it was ready");
    })
    .await;

    let bearer = format!("Bearer {}", sign(&keys()[0], &claims("alice")));
    let (mut ws, _) = wss_connect(addr, &pki, "/echo", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("hello"));

    let pid = child.id().expect("pid").to_string();
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill")
            .success()
    };
    // SIGHUP with a broken file: logged, nothing changes, the session lives on.
    std::fs::write(&path, "listen: [").expect("write");
    assert!(signal("-HUP"));
    within(async {
        while let Some(line) = logs.next_line().await.expect("read log") {
            if line.contains("reload refused") {
                return;
            }
        }
        panic!("no reload error logged");
    })
    .await;
    ws.send(Message::text("after a bad reload"))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::text("after a bad reload"));
    assert!(signal("-TERM"));
    assert_eq!(close_code(&mut ws).await, Some(1001));
    assert_eq!(backend.next_close().await, Some(1001));
    drop(ws);
    let status = within(child.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
    // Every line of the JSON log is JSON, and the session's access log line is there.
    let mut rest = String::new();
    let mut closed = None;
    while let Some(line) = within(logs.next_line()).await.expect("read log") {
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if json["fields"]["message"] == "session closed" {
            closed = Some(json);
        }
        rest.push_str(&line);
    }
    assert!(
        rest.contains("session closed") && rest.contains(r#""code":1001"#),
        "{rest}"
    );
    // The access line is inside the connection's span, made again for it after the session
    // let the handshake's go: the same peer and route, and the session's id.
    let closed = closed.unwrap_or_else(|| panic!("no access line: {rest}"));
    let span = &closed["span"];
    assert_eq!(span["name"], "connection", "{closed}");
    assert_eq!(span["peer"], closed["fields"]["peer"], "{closed}");
    assert_eq!(span["route"], closed["fields"]["route"], "{closed}");
    assert!(
        span["session"].as_u64().is_some_and(|id| id > 0),
        "{closed}"
    );
}
