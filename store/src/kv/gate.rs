//! The install gate: keeps readers from seeing a key space that a snapshot
//! install has half replaced.
//!
//! Installing a snapshot clears the state machine's column families and loads
//! the snapshot's records in many RocksDB writes. A reader whose RocksDB
//! snapshot was taken in between would see keys vanish and the revision go
//! backwards. The gate is a sequence counter: odd while an install runs. A
//! read is valid only when the counter was even before it and unchanged after
//! it; otherwise it is refused with [`Installing`] and the caller waits for
//! [`InstallGate::wait_idle`] and reads again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A read overlapped a snapshot install; read again once it is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a snapshot install is in progress on this node")]
pub struct Installing;

#[derive(Debug, Default)]
struct Inner {
    sequence: AtomicU64,
    idle: Notify,
}

/// Shared between the state machine (which installs) and the readers.
#[derive(Debug, Clone, Default)]
pub struct InstallGate {
    inner: Arc<Inner>,
}

/// Marks an install as running until dropped.
#[derive(Debug)]
pub struct InstallGuard {
    inner: Arc<Inner>,
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        self.inner.sequence.fetch_add(1, Ordering::AcqRel);
        self.inner.idle.notify_waiters();
    }
}

impl InstallGate {
    /// Marks the start of an install; readers are refused until the guard
    /// is dropped.
    pub fn begin_install(&self) -> InstallGuard {
        self.inner.sequence.fetch_add(1, Ordering::AcqRel);
        InstallGuard {
            inner: self.inner.clone(),
        }
    }

    /// Whether an install is running now.
    pub fn installing(&self) -> bool {
        self.inner.sequence.load(Ordering::Acquire) % 2 == 1
    }

    /// Runs `read`, and returns its result only if no install ran at any
    /// moment during it.
    pub fn read<T>(&self, read: impl FnOnce() -> T) -> Result<T, Installing> {
        let before = self.inner.sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            return Err(Installing);
        }
        let out = read();
        if self.inner.sequence.load(Ordering::Acquire) != before {
            return Err(Installing);
        }
        Ok(out)
    }

    /// Completes when no install is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if !self.installing() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_during_or_across_an_install_are_refused() {
        let gate = InstallGate::default();
        assert_eq!(gate.read(|| 1), Ok(1));
        let guard = gate.begin_install();
        assert_eq!(gate.read(|| 2), Err(Installing));
        drop(guard);
        assert_eq!(gate.read(|| 3), Ok(3));
        // An install that starts while a read runs invalidates the read.
        let result = gate.read(|| drop(gate.begin_install()));
        assert_eq!(result, Err(Installing));
        assert!(!gate.installing());
    }

    #[tokio::test]
    async fn waiters_wake_when_the_install_ends() {
        let gate = InstallGate::default();
        let guard = gate.begin_install();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
