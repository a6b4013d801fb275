//! Reload when files change: the configuration file and the certificate and key (their
//! directories are watched, because rotations usually replace files by renaming, and
//! Kubernetes swaps a `..data` symlink). Events are debounced so that a half-written file is
//! not read, and a reload that fails leaves the running configuration in place, as always.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::server::Shared;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Watches until the drain starts.
pub(crate) async fn run(shared: Arc<Shared>) {
    let Some(config) = shared.source.clone() else {
        return;
    };
    let (events, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            return warn!(%error, "cannot watch files; reload with SIGHUP or the admin API");
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    loop {
        let dirs = directories(&shared, &config);
        if dirs != watched {
            for dir in &watched {
                let _ = watcher.unwatch(dir.as_path());
            }
            for dir in &dirs {
                if let Err(error) = watcher.watch(dir.as_path(), RecursiveMode::NonRecursive) {
                    warn!(dir = %dir.display(), %error, "cannot watch a directory");
                }
            }
            watched = dirs;
        }
        tokio::select! {
            event = changed.recv() => if event.is_none() { return },
            () = shared.draining.cancelled() => return,
        }
        // Let a burst of events (write, rename, chmod) settle.
        loop {
            tokio::select! {
                event = changed.recv() => if event.is_none() { return },
                () = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        debug!("watched files changed; reloading");
        let _ = shared.reload();
    }
}

/// The directories of the configuration file and of the certificate and key in use.
fn directories(shared: &Shared, config: &Path) -> Vec<PathBuf> {
    let state = shared.state();
    let mut files = vec![config.to_path_buf()];
    if let Some((cert, key)) = &state.config.listen.tls.files {
        files.push(cert.clone());
        files.push(key.clone());
    }
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|file| match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}
