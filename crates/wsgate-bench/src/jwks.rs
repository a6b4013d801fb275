//! `jwks-serve`: serves one JWKS file at `/jwks.json` over plain HTTP on loopback, so wsgate
//! can fetch the bench keys (`jwks_url: http://127.0.0.1:PORT/jwks.json`). With `--flap P`
//! it fails in turns (the soak's JWKS-flapping phase): P serving the keys, P answering 503, P
//! closing the connection without an answer, and again.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request gets at a moment of a flapping run.
#[derive(Clone, Copy)]
enum Turn {
    Serve,
    Unavailable,
    HangUp,
}

pub async fn serve(file: &Path, listen: SocketAddr, flap: Option<Duration>) -> anyhow::Result<()> {
    let body: Arc<[u8]> = std::fs::read(file)
        .with_context(|| format!("while reading {}", file.display()))?
        .into();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("while binding {listen}"))?;
    // stdout, so a script can read the URL.
    println!("http://{}/jwks.json", listener.local_addr()?);
    let started = tokio::time::Instant::now();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let body = body.clone();
        let turn = flap.map_or(Turn::Serve, |period| turn(started.elapsed(), period));
        tokio::spawn(async move {
            drop(tokio::time::timeout(READ_TIMEOUT, answer(tcp, &body, turn)).await);
        });
    }
}

fn turn(elapsed: Duration, period: Duration) -> Turn {
    let index = elapsed.as_millis() / period.as_millis().max(1);
    match index % 3 {
        0 => Turn::Serve,
        1 => Turn::Unavailable,
        _ => Turn::HangUp,
    }
}

async fn answer(mut tcp: TcpStream, body: &[u8], turn: Turn) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let found = line.starts_with(b"GET /jwks.json ") || line.starts_with(b"GET /jwks.json?");
    let (status, body) = match turn {
        Turn::HangUp => return Ok(()),
        Turn::Unavailable => ("503 Service Unavailable", &b"flapping\n"[..]),
        Turn::Serve if found => ("200 OK", body),
        Turn::Serve => ("404 Not Found", &b"not found\n"[..]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: max-age=300\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    tcp.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_turns_repeat_serve_unavailable_hang_up() {
        let period = Duration::from_secs(2);
        let at = |ms| turn(Duration::from_millis(ms), period);
        assert!(matches!(at(0), Turn::Serve));
        assert!(matches!(at(1_999), Turn::Serve));
        assert!(matches!(at(2_000), Turn::Unavailable));
        assert!(matches!(at(4_500), Turn::HangUp));
        assert!(matches!(at(6_000), Turn::Serve));
    }
}
