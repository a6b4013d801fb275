//! `backend`: the plain ws:// echo server behind every target, so each proxy relays to the
//! same thing. Binary and text come back unchanged; pings and closes are answered by
//! tungstenite. Small buffers, TCP_NODELAY, one task per connection.

use std::net::SocketAddr;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

use crate::net;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("while binding {listen}"))?;
    eprintln!("backend: echo on ws://{}/", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(echo(tcp));
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("backend: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn echo(tcp: TcpStream) {
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(net::ws_config())).await
    else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_binary() || message.is_text()) && ws.send(message).await.is_err() {
            break;
        }
    }
}
