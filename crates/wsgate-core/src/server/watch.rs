//! Reload when files change: the configuration file and the certificate and key (their
//! directories are watched, because rotations usually replace files by renaming, and
//! Kubernetes swaps a `..data` symlink). Events are debounced so that a half-written file is
//! not read, and a reload that fails leaves the running configuration in place, as always.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::shared::Shared;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Watches until the drain starts.
pub(crate) async fn run(shared: Arc<Shared>) {
    let Some(config) = shared.current.source().map(Path::to_path_buf) else {
        return;
    };
    let (events, mut changed) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = events.send(event.paths);
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
        let files = files(&shared, &config);
        let dirs = directories(&files);
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
        // Only our files count: other files in the same directories (logs, editors' swap
        // files) must not trigger reloads, let alone a loop of them.
        loop {
            tokio::select! {
                event = changed.recv() => match event {
                    Some(paths) if concerns(&paths, &files) => break,
                    Some(_) => {}
                    None => return,
                },
                () = shared.draining.cancelled() => return,
            }
        }
        // Let a burst of events (write, rename, chmod) settle.
        loop {
            tokio::select! {
                event = changed.recv() => if event.is_none() { return },
                () = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        debug!("watched files changed; reloading");
        let _ = shared.current.reload();
    }
}

/// The configuration file and the certificate and key in use.
fn files(shared: &Shared, config: &Path) -> Vec<PathBuf> {
    let state = shared.state();
    let mut files = vec![config.to_path_buf()];
    if let Some((cert, key)) = &state.config.listen.tls.files {
        files.push(cert.clone());
        files.push(key.clone());
    }
    files
}

/// True when an event touches one of `files`, or Kubernetes' `..data` symlink that a
/// ConfigMap or Secret update swaps.
fn concerns(paths: &[PathBuf], files: &[PathBuf]) -> bool {
    paths.iter().any(|path| {
        let name = path.file_name();
        name.is_some_and(|n| n == "..data") || files.iter().any(|file| file.file_name() == name)
    })
}

/// The directories to watch for `files`.
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_files_and_kubernetes_swaps_concern_us() {
        let files = [
            PathBuf::from("/etc/wsgate/wsgate.yaml"),
            PathBuf::from("/etc/wsgate/certs/tls.crt"),
        ];
        let event = |p: &str| vec![PathBuf::from(p)];
        assert!(concerns(&event("/etc/wsgate/wsgate.yaml"), &files));
        assert!(concerns(&event("/etc/wsgate/certs/tls.crt"), &files));
        assert!(concerns(&event("/etc/wsgate/..data"), &files));
        assert!(!concerns(&event("/etc/wsgate/wsgate.log"), &files));
        assert!(!concerns(&event("/etc/wsgate/.wsgate.yaml.swp"), &files));
        assert_eq!(
            directories(&files),
            [
                PathBuf::from("/etc/wsgate"),
                PathBuf::from("/etc/wsgate/certs")
            ]
        );
    }
}
