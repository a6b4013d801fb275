//! Attacks on the TLS listener: old protocol versions and weak cipher suites offered by the
//! OpenSSL command-line client (at `@SECLEVEL=0`, so OpenSSL itself does not withhold them and
//! the check cannot pass by accident; each case asserts the ClientHello really went out),
//! plain HTTP and random bytes on the TLS port, and a ClientHello cut in half. Controls: the
//! same tool negotiates TLS 1.2 and 1.3, rustls clients pinned to each version get a 101, and a
//! valid client is served after every attack. No backend is contacted by any attack.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

/// What `openssl s_client` printed (with `-msg`) and whether it exited 0.
struct Run {
    ok: bool,
    text: String,
}

impl Run {
    /// A `-msg` line for a message we sent (`>>>`) or received (`<<<`), such as
    /// (">>>", "TLS 1.1, Handshake", "ClientHello").
    fn has(&self, direction: &str, starts: &str, ends: &str) -> bool {
        self.text.lines().any(|line| {
            line.strip_prefix(direction)
                .is_some_and(|rest| rest.trim_start().starts_with(starts) && line.ends_with(ends))
        })
    }
}

/// Runs `openssl s_client` against the proxy with `args`; `input` is sent after the
/// handshake, and the client stays until the proxy closes (`-ign_eof`) when there is input.
async fn s_client(proxy: &TestProxy, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut command = tokio::process::Command::new("openssl");
    command
        .arg("s_client")
        .arg("-connect")
        .arg(proxy.addr.to_string())
        .args(["-servername", "localhost", "-msg"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if input.is_some() {
        command.arg("-ign_eof");
    }
    let mut child = command
        .spawn()
        .expect("the openssl command-line tool (Debian package openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        // A refused handshake may close the pipe before the input is read.
        let _ = stdin.write_all(input).await;
    }
    drop(stdin);
    let output = within(child.wait_with_output()).await.expect("openssl ran");
    Run {
        ok: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A proxy with one route `echo` to a backend that counts connections (never answering).
async fn proxy_with(listen_extra: &str) -> (TestProxy, RawBackend) {
    let backend = RawBackend::start(None).await;
    let proxy = TestProxy::start_with(
        listen_extra,
        &route("echo", "/echo", &format!("ws://{}/", backend.addr)),
    )
    .await;
    (proxy, backend)
}

/// A client that must be refused: it sent its ClientHello as `version`, got a fatal alert
/// back, and never a ServerHello.
fn assert_refused(run: &Run, version: &str, what: &str) {
    assert!(!run.ok, "{what}: openssl reports success:\n{}", run.text);
    assert!(
        run.has(">>>", &format!("{version}, Handshake"), "ClientHello"),
        "{what}: no {version} ClientHello was sent (so nothing was tested):\n{}",
        run.text
    );
    assert!(
        run.text.lines().any(|line| line.starts_with("<<<")
            && line.contains("Alert")
            && line.contains("fatal")),
        "{what}: no fatal alert from the proxy:\n{}",
        run.text
    );
    assert!(
        !run.has("<<<", "", "ServerHello"),
        "{what}: the proxy answered with a ServerHello:\n{}",
        run.text
    );
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused() {
    let (proxy, backend) = proxy_with("").await;
    for (flag, version) in [("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")] {
        let run = s_client(&proxy, &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"], None).await;
        assert_refused(&run, version, flag);
    }
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn weak_cipher_suites_are_refused() {
    let (proxy, backend) = proxy_with("").await;
    // This OpenSSL build has no RC4, DES, 3DES or EXPORT suites any more, so the first list
    // offers its NULL (unencrypted) suites; the others cover what it does still have.
    let weak = [
        ("-tls1_2", "RC4:DES:3DES:NULL:EXPORT:@SECLEVEL=0", "TLS 1.2"),
        ("-tls1_2", "aNULL:@SECLEVEL=0", "TLS 1.2"), // anonymous: no authentication
        ("-tls1_2", "kRSA:@SECLEVEL=0", "TLS 1.2"),  // RSA key transport: no forward secrecy
        ("-tls1_2", "kDHE:@SECLEVEL=0", "TLS 1.2"),  // finite-field DHE
        (
            "-tls1_2",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:@SECLEVEL=0",
            "TLS 1.2",
        ), // CBC mode
    ];
    for (flag, ciphers, version) in weak {
        let run = s_client(&proxy, &[flag, "-cipher", ciphers], None).await;
        assert_refused(&run, version, ciphers);
    }
    // TLS 1.3 with only the truncated-tag CCM_8 suite.
    let run = s_client(
        &proxy,
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"],
        None,
    )
    .await;
    assert_refused(&run, "TLS 1.3", "TLS_AES_128_CCM_8_SHA256");
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn openssl_negotiates_tls_1_2_and_1_3_and_gets_answers() {
    let (proxy, backend) = proxy_with("").await;
    let request = upgrade_request("/echo", "");
    let cases: [(&[&str], &str); 3] = [
        (&["-tls1_2"], "New, TLSv1.2, Cipher is ECDHE-"),
        (&["-tls1_3"], "New, TLSv1.3, Cipher is TLS_"),
        // A weak suite offered next to a strong one: the strong one is chosen.
        (
            &[
                "-tls1_2",
                "-cipher",
                "NULL-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:@SECLEVEL=0",
            ],
            "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
    ];
    for (args, negotiated) in cases {
        let run = s_client(&proxy, args, Some(&request)).await;
        assert!(run.ok, "{args:?}:\n{}", run.text);
        assert!(run.text.contains(negotiated), "{args:?}:\n{}", run.text);
        // The upgrade went through TLS and was answered (no token: 401).
        assert!(
            run.text.contains("HTTP/1.1 401 "),
            "{args:?}:\n{}",
            run.text
        );
    }
    assert_eq!(backend.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn rustls_clients_pinned_to_tls_1_2_or_1_3_are_served() {
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start(&backend.url()).await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(proxy.pki.ca.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = within(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let answer = exchange(&mut tls, &upgrade_request("/echo", &proxy.bearer())).await;
        assert_eq!(status(&answer), 101, "{expected:?}: {answer}");
    }
    assert_eq!(backend.seen().len(), 2);
    proxy.shutdown().await;
}

/// Sends `bytes` on a fresh TCP connection to the TLS port and returns what came back before
/// the proxy closed it.
async fn send_plain(proxy: &TestProxy, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn plain_http_and_random_bytes_on_the_tls_port_are_closed_at_once() {
    // A deadline far beyond the test's own wait: a close can only come from the bad bytes.
    let (proxy, backend) = proxy_with("  handshake_timeout: 60s\n").await;
    let mut handshake_record = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    handshake_record.extend(noise(7, 512));
    let mut oversized_record = vec![0x16, 0x03, 0x03, 0xff, 0xff];
    oversized_record.extend(noise(11, 1024));
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP upgrade",
            upgrade_request("/echo", &proxy.bearer()),
        ),
        (
            "plain GET",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("random bytes", noise(1, 1024)),
        ("random bytes, 64 KiB", noise(3, 64 * 1024)),
        ("handshake record of noise", handshake_record),
        ("record over 16 KiB", oversized_record),
    ];
    for (what, payload) in payloads {
        let started = Instant::now();
        let answer = send_plain(&proxy, &payload).await;
        // Nothing at all, or TLS alert records (content type 21, two-byte body) only.
        let alerts_only = answer
            .chunks(7)
            .all(|record| record.len() == 7 && record[0] == 0x15 && record[3..5] == [0, 2]);
        assert!(
            alerts_only,
            "{what}: the proxy answered with more than an alert: {answer:02x?}"
        );
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/"),
            "{what}: answered in plain HTTP"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
    }
    assert_eq!(backend.connections(), 0);
    // The listener still serves.
    let answer = proxy
        .raw(&upgrade_request("/nowhere", &proxy.bearer()))
        .await;
    assert_eq!(status(&answer), 404, "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_truncated_client_hello_is_closed_at_the_deadline_and_frees_its_slot() {
    let deadline = Duration::from_secs(1);
    let backend = EchoBackend::start(&[]).await;
    let proxy = TestProxy::start_with(
        "  handshake_timeout: 1s\n  max_connections: 1\n",
        &route("echo", "/echo", &backend.url()),
    )
    .await;
    // A real ClientHello, as rustls writes it, cut in half.
    let name = ServerName::try_from("localhost").expect("name");
    let mut client =
        rustls::ClientConnection::new(proxy.pki.client_config(), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    assert_eq!(hello[0], 0x16, "a handshake record");

    let mut half = TcpStream::connect(proxy.addr).await.expect("connect");
    let started = Instant::now();
    half.write_all(&hello[..hello.len() / 2])
        .await
        .expect("write");
    // It holds the only connection slot: the next client is over the cap (503).
    let answer = proxy.raw(&upgrade_request("/echo", &proxy.bearer())).await;
    assert_eq!(status(&answer), 503, "{answer}");
    let mut rest = Vec::new();
    let read = within(half.read_to_end(&mut rest)).await;
    let lasted = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the proxy to close, got {read:?} {rest:02x?}"
    );
    assert!(
        lasted >= deadline - Duration::from_millis(50),
        "closed after {lasted:?}, before the {deadline:?} deadline"
    );
    // The slot is free again: a valid client gets its session.
    let mut ws = proxy.connect("/echo").await;
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 1.0).await;
    ws.close(None).await.expect("close");
    drop(ws);
    wait_for_sample(&proxy, r#"wsgate_connections_active{route="echo"}"#, 0.0).await;
    assert_eq!(backend.seen().len(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_refusal_ends_the_tls_session_with_close_notify() {
    let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec();
    let backend = RawBackend::start(Some(refusal)).await;
    let proxy = TestProxy::start(&format!("ws://{}/", backend.addr)).await;
    let bearer = proxy.bearer();
    let mut pipelined = upgrade_request("/echo", "");
    pipelined.extend_from_slice(&upgrade_request("/echo", &bearer));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no token", upgrade_request("/echo", ""), 401),
        ("no route", upgrade_request("/nowhere", &bearer), 404),
        ("path trick", upgrade_request("/echo/../x", &bearer), 400),
        (
            "Host other than SNI",
            String::from_utf8(upgrade_request("/echo", &bearer))
                .expect("ascii")
                .replacen("Host: localhost", "Host: elsewhere", 1)
                .into_bytes(),
            421,
        ),
        ("pipelined behind a refusal", pipelined, 401),
        (
            "the backend's refusal",
            upgrade_request("/echo", &bearer),
            403,
        ),
        (
            "not an upgrade",
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            426,
        ),
        ("unparsable", b"BAD\r\n\r\n".to_vec(), 400),
    ];
    for (what, request, expected) in cases {
        let mut tls = proxy.tls().await;
        tls.write_all(&request).await.expect("write");
        let mut answer = Vec::new();
        // rustls reports a close without close_notify as an UnexpectedEof error.
        let end = within(tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status(&answer), expected, "{what}: {answer}");
        assert!(end.is_ok(), "{what}: {end:?} after {answer}");
    }
    assert_eq!(backend.connections(), 1, "only the admitted request");
    proxy.shutdown().await;
}
