//! Capturing what the proxy logs, for tests that read its log lines.

use std::sync::{Arc, Mutex};

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use super::leak;

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // While a capture is this thread's subscriber, the suite-wide one sees nothing of it:
        // the leak search gets every line here too.
        leak::observe("logs", bytes);
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps a [`LogCapture`] subscribed; dropping it ends the capture.
pub struct LogGuard {
    _default: tracing::subscriber::DefaultGuard,
    _bystander: tracing::Dispatch,
}

impl LogCapture {
    /// Captures every event at TRACE, as text without colours, on this thread until the guard
    /// drops (so the test must run on a `current_thread` runtime for the proxy's tasks to log
    /// here too).
    pub fn start() -> (LogCapture, LogGuard) {
        // tracing-core caches each call site's interest. While only one dispatcher exists it
        // asks the *registering thread's* default, so a call site first reached by a test on
        // another thread (no subscriber) would be cached as "never" and vanish from this
        // capture. A second live dispatcher makes it ask every dispatcher instead.
        let bystander = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let capture = LogCapture::default();
        let writer = capture.clone();
        // The suite-wide capture's filter: the tests' own WebSocket clients trace their requests.
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_filter(leak::filter()),
        );
        let guard = LogGuard {
            _default: tracing::subscriber::set_default(subscriber),
            _bystander: bystander,
        };
        (capture, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}
