//! Process signals: SIGTERM/SIGINT start the drain, SIGHUP reloads.

use wsgate_core::server::Reloader;

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

/// SIGHUP: reload; a broken file is logged and the running configuration stays.
pub async fn reload_on_hangup(reloader: Reloader) {
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    {
        while hangups.recv().await.is_some() {
            let _ = reloader.reload();
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
}
