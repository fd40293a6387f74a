//! The stop signal every long-running task watches: a `watch::Receiver<bool>`
//! that turns true once, at shutdown. Below every other module, so any layer
//! can wait for it.

use tokio::sync::watch;

/// Completes once `rx` reads true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
