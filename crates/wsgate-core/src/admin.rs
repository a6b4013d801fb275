//! The admin listener (DESIGN.md section 4): `/metrics`, `/healthz` and `/readyz`, open to
//! whoever can reach it, which is why it binds loopback by default. Plain HTTP/1.1 with
//! keep-alive, so a scraper reuses its connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::handshake::plain;
use crate::server::Shared;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &request)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(error) = served {
                debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
}

fn answer(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match request.uri().path() {
        "/metrics" => {
            for store in &shared.auth.stores {
                let age = store.current().map(|keys| keys.fetched.elapsed());
                store.metrics.set_age(age);
            }
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" if shared.draining.is_cancelled() => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        "/readyz" if !shared.auth.ready() => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "provider keys not loaded")
        }
        "/readyz" => plain(StatusCode::OK, "ready"),
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}
