//! A target plus what every upgrade to it carries: a fresh token (minted ahead on a separate
//! thread, so RSA signing does not sit inside the timed handshake) and an Origin header.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{OpenError, Stream, Target, Upgrade};
use crate::token::Signer;

/// Tokens minted ahead; small, so that minting stops soon after the last connection is opened
/// instead of burning CPU during a measured window.
const TOKEN_QUEUE: usize = 64;
/// TCP + TLS + upgrade must complete within this (generous: valgrind runs are slow).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A closing handshake that takes longer than this is abandoned (the TCP socket is dropped).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Client {
    pub target: Target,
    pub origin: Option<String>,
    tokens: Option<Mutex<mpsc::Receiver<String>>>,
    open_timeout: Duration,
}

impl Client {
    /// `signer`: mint a fresh token for every upgrade on `mint_threads` threads; `None`: send
    /// no Authorization header.
    pub fn new(
        target: Target,
        origin: Option<String>,
        signer: Option<Arc<Signer>>,
        mint_threads: usize,
    ) -> Client {
        let tokens = signer.map(|signer| {
            let (tx, rx) = mpsc::channel(TOKEN_QUEUE);
            for _ in 0..mint_threads.max(1) {
                let (tx, signer) = (tx.clone(), signer.clone());
                // Ends when the receiver is dropped (the send fails).
                std::thread::spawn(move || while tx.blocking_send(signer.mint()).is_ok() {});
            }
            Mutex::new(rx)
        });
        Client {
            target,
            origin,
            tokens,
            open_timeout: OPEN_TIMEOUT,
        }
    }

    /// A shorter bound on TCP + TLS + upgrade (the soak's descriptor-exhaustion phase, where
    /// the proxy cannot accept and a connection waits in the listen backlog).
    pub fn with_open_timeout(mut self, open_timeout: Duration) -> Client {
        self.open_timeout = open_timeout;
        self
    }

    /// The headers of the next upgrade (waits for a token if the minter is behind).
    pub async fn upgrade(&self) -> Upgrade {
        let bearer = match &self.tokens {
            Some(rx) => rx.lock().await.recv().await,
            None => None,
        };
        Upgrade {
            bearer,
            origin: self.origin.clone(),
        }
    }

    /// A new session with a fresh token.
    pub async fn open(&self) -> Result<WebSocketStream<Stream>, OpenError> {
        let upgrade = self.upgrade().await;
        self.open_with(&upgrade).await
    }

    /// A new session with these headers, within [`OPEN_TIMEOUT`] (or the shorter bound set
    /// with [`Client::with_open_timeout`]).
    pub async fn open_with(&self, upgrade: &Upgrade) -> Result<WebSocketStream<Stream>, OpenError> {
        tokio::time::timeout(self.open_timeout, self.target.open(upgrade))
            .await
            .unwrap_or_else(|_| Err(OpenError::Failed("timed out".to_owned())))
    }
}

/// Sends a close frame and waits (bounded) for the other side's close and the end of the
/// stream, so the proxy finishes its closing work before the next window starts.
pub async fn close(mut ws: WebSocketStream<Stream>) -> bool {
    let polite = async {
        if ws.close(None).await.is_err() {
            return false;
        }
        loop {
            match ws.next().await {
                Some(Ok(_)) => {}
                None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return true;
                }
                Some(Err(_)) => return false,
            }
        }
    };
    matches!(tokio::time::timeout(CLOSE_TIMEOUT, polite).await, Ok(true))
}

/// The length of the next data message; `None` on close, error or end of stream.
pub async fn next_data(ws: &mut WebSocketStream<Stream>) -> Option<usize> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(data)) => return Some(data.len()),
            Ok(Message::Text(text)) => return Some(text.len()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}
