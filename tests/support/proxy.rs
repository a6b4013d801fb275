//! The proxy itself, started in this process on 127.0.0.1:0 from a [`Setup`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use wsgate_core::metrics::Metrics;
use wsgate_core::server::Reloader;
use wsgate_core::{Config, Server};

use super::{
    AUDIENCE, ISSUER, JwksServer, Mode, Pki, TestKey, claims, exchange, http_get, keys, leak, sign,
    tls_connect, within, wss_connect,
};

/// The proxy, running in this process on 127.0.0.1:0 with its admin listener, a provider
/// `test` whose JWKS server the test controls, and a valid token for it.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    pub jwks: JwksServer,
    /// A valid token for `alice`.
    pub token: String,
    /// The configuration as written to `config_path` (rewrite it and reload to change it).
    pub yaml: String,
    pub config_path: PathBuf,
    /// What `/metrics` exposes, read when the proxy is dropped (no socket needed).
    metrics: Arc<Metrics>,
    /// Reloads the configuration file in place, and sees which configuration is alive.
    pub reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The whole-suite leakage check: this proxy's metrics are scanned, and any leak recorded
/// anywhere in the run so far fails the test (see [`leak`]).
impl Drop for TestProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        leak::observe("metrics", self.metrics.encode().as_bytes());
        leak::assert_clean();
    }
}

/// How a [`TestProxy`] starts: YAML added to provider `test` and under `listen:`, the list
/// under `routes:`, whether to wait for the keys, and the JWKS server's keys and mode.
pub struct Setup {
    /// Top-level YAML keys (such as `trusted_proxies`).
    pub top_extra: String,
    /// Indented YAML added under `admin:` (such as `token`).
    pub admin_extra: String,
    /// Reload when the configuration or certificate files change.
    pub watch: bool,
    pub provider_extra: String,
    pub listen_extra: String,
    pub routes: String,
    pub ready: bool,
    pub jwks_keys: Vec<TestKey>,
    pub jwks_mode: Mode,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            top_extra: String::new(),
            admin_extra: String::new(),
            watch: false,
            provider_extra: String::new(),
            listen_extra: String::new(),
            routes: String::new(),
            ready: true,
            // rsa-1 and ec-1; rsa-2 is held back for rotation tests.
            jwks_keys: vec![keys()[0].clone(), keys()[2].clone()],
            jwks_mode: Mode::Serve,
        }
    }
}

/// A route `name` on `path` to `backend`, authenticated by provider `test`, any origin.
pub fn route(name: &str, path: &str, backend: &str) -> String {
    format!(
        "  - name: {name}\n    match:\n      path: {path}\n    backend: {backend}\n    auth:\n      provider: test\n    origins: any\n"
    )
}

impl TestProxy {
    /// Starts the proxy as `setup` says.
    pub async fn start_full(setup: Setup) -> TestProxy {
        let Setup {
            top_extra,
            admin_extra,
            watch,
            provider_extra,
            listen_extra,
            routes,
            ready,
            jwks_keys,
            jwks_mode,
        } = setup;
        leak::install();
        let pki = Pki::new();
        let jwks = JwksServer::start(&jwks_keys).await;
        jwks.set_mode(jwks_mode);
        let yaml = format!(
            "{top_extra}listen:\n  address: 127.0.0.1:0\n  tls:\n    cert: {}\n    key: {}\n{listen_extra}admin:\n  address: 127.0.0.1:0\n{admin_extra}\
             providers:\n  - name: test\n    issuer: {ISSUER}\n    jwks_url: {}\n    audiences: [{AUDIENCE}]\n    algorithms: [RS256, ES256]\n{provider_extra}\
             routes:\n{routes}",
            pki.cert_path.display(),
            pki.key_path.display(),
            jwks.url,
        );
        let config_path = pki.dir.path().join("wsgate.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        let config = Config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        let server = Server::bind(config)
            .await
            .expect("bind proxy")
            .with_source(config_path.clone());
        let server = if watch { server.watching() } else { server };
        let (addr, admin, metrics) = (server.local_addr(), server.admin_addr(), server.metrics());
        let reloader = server.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let token = sign(&keys()[0], &claims("alice"));
        let proxy = TestProxy {
            addr,
            admin,
            yaml,
            config_path,
            pki,
            jwks,
            token,
            metrics,
            reloader,
            stop: Some(stop),
            task: Some(task),
        };
        if ready {
            proxy.wait_ready().await;
        }
        proxy
    }

    pub async fn start_with(listen_extra: &str, routes: &str) -> TestProxy {
        TestProxy::start_full(Setup {
            listen_extra: listen_extra.to_owned(),
            routes: routes.to_owned(),
            ..Setup::default()
        })
        .await
    }

    /// One route `echo` on `/echo` to `backend`.
    pub async fn start(backend: &str) -> TestProxy {
        TestProxy::start_with("", &route("echo", "/echo", backend)).await
    }

    /// Waits until `/readyz` answers 200: the provider's keys are loaded.
    pub async fn wait_ready(&self) {
        within(async {
            while http_get(self.admin, "/readyz").await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// The header line that carries the valid token, for raw requests.
    pub fn bearer(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }

    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server without its shutdown, as if the process were killed: no drain, no
    /// goodbye to the fleet (its sessions' tasks keep running in this process).
    pub fn abort(&mut self) {
        // The stop sender stays: dropping it would start a clean shutdown.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Drains and joins the server task, re-raising any panic.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take()
            && let Err(error) = within(task).await
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    pub async fn tls(&self) -> TlsStream<TcpStream> {
        tls_connect(self.addr, &self.pki).await
    }

    /// Opens a WSS session to `path` with extra request headers.
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<
        (
            WebSocketStream<TlsStream<TcpStream>>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        WsError,
    > {
        wss_connect(self.addr, &self.pki, path, headers).await
    }

    /// A WSS session with the valid token in the Authorization header.
    pub async fn connect(&self, path: &str) -> WebSocketStream<TlsStream<TcpStream>> {
        let bearer = format!("Bearer {}", self.token);
        self.connect_with(path, &[("authorization", &bearer)])
            .await
            .expect("upgrade through the proxy")
            .0
    }

    /// Sends raw bytes over TLS and returns what the proxy answers: everything until it
    /// closes, or just the head of a 101 (the session then stays open).
    pub async fn raw(&self, request: &[u8]) -> String {
        exchange(&mut self.tls().await, request).await
    }

    /// The Prometheus exposition from the admin listener.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }
}
