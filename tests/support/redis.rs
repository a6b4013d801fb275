//! A real `redis-server` on a free loopback port, without persistence, that a test can kill,
//! restart on the same port (empty, as a Redis without persistence comes back), or freeze.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

pub struct RedisServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a port nobody uses now, and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        RedisServer::start_on(port).await
    }

    /// Starts one on `port` (picked free by the caller).
    pub async fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        within(async {
            while !self.answers().await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// True when the server answers PING.
    pub async fn answers(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(self.addr).await else {
            return false;
        };
        let mut pong = [0u8; 7];
        tcp.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(Duration::from_millis(500), tcp.read_exact(&mut pong))
                .await
                .is_ok_and(|read| read.is_ok())
            && &pong == b"+PONG\r\n"
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its sockets but answers
    /// nothing, like a Redis stuck on a slow disk.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.kill();
    }
}
