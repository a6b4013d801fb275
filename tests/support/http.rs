//! Plain HTTP/1.1 to the admin listener, and reading its Prometheus samples.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestProxy, leak, within};

/// Status code of a raw HTTP answer.
pub fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// An admin API call with an optional bearer token and JSON body; returns status and body.
pub async fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(admin, &request).await
}

/// A plain HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http(addr, &request).await
}

/// Sends one plain HTTP/1.1 request (with `Connection: close`); returns status and body.
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = within(TcpStream::connect(addr)).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    within(tcp.read_to_end(&mut answer)).await.expect("read");
    leak::observe("response", &answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status(&answer), body)
}

/// The value of one sample line in a Prometheus exposition, 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until a metric series reaches `value`. Counters that are written when a session's
/// closing handshake finishes have no other signal the test could wait on.
pub async fn wait_for_sample(proxy: &TestProxy, series: &str, value: f64) {
    within(async {
        loop {
            let metrics = proxy.metrics().await;
            if sample(&metrics, series) == value {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
