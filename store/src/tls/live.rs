//! TLS configurations that follow their files: rebuilt on SIGHUP or when a
//! file changes, used by the next connection. A file that fails to load is
//! logged and the configuration in use is kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::TlsError;
use crate::stop::stopped;

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A configuration built from files, replaced whole when they change.
pub struct Live<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    current: RwLock<Arc<T>>,
    /// The files' state when last loaded (or last failed to load), so that
    /// one bad file is reported once, not on every poll.
    seen: Mutex<Vec<Fingerprint>>,
}

/// What tells that a file changed: its modification time and length (or
/// that it could not be read).
type Fingerprint = Option<(SystemTime, u64)>;

fn fingerprint(path: &PathBuf) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl<T> Live<T> {
    /// Builds the first configuration (an error here stops the start).
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let seen = files.iter().map(fingerprint).collect();
        let first = build()?;
        Ok(Live {
            what,
            files,
            build: Box::new(build),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(seen),
        })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Something the reloader can refresh.
pub trait Reload: Send + Sync {
    /// Rebuilds from the files if `force` or if any changed since the last
    /// attempt; keeps the current configuration when that fails.
    fn refresh(&self, force: bool);
}

impl<T: Send + Sync> Reload for Live<T> {
    fn refresh(&self, force: bool) {
        let now: Vec<Fingerprint> = self.files.iter().map(fingerprint).collect();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *seen == now {
                return;
            }
            *seen = now;
        }
        match (self.build)() {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!(what = self.what, "TLS certificates reloaded");
            }
            Err(e) => tracing::warn!(
                what = self.what,
                error = %e,
                "TLS certificates not reloaded; keeping the ones in use"
            ),
        }
    }
}

/// SIGHUP, for [`run_reloader`]. Taken before the node answers anything,
/// so that a SIGHUP sent once it is up never meets the default action
/// (which ends the process).
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; TLS files are still polled");
            None
        }
    }
}

/// Refreshes `items` every `interval` (those whose files changed) and on
/// every `hangup` (all of them), until `stop`.
pub async fn run_reloader(
    items: Vec<Arc<dyn Reload>>,
    interval: Duration,
    mut hangup: Option<tokio::signal::unix::Signal>,
    mut stop: watch::Receiver<bool>,
) {
    if items.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let items = items.clone();
        // File reads and key parsing: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            for item in &items {
                item.refresh(force);
            }
        })
        .await;
    }
}
