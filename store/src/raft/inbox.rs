//! Receiving snapshots from the leader: one partial file at a time, resumable,
//! always cleaned up, and installed in the background.
//!
//! - A transfer is identified by the snapshot's last log id and its size; the
//!   same snapshot sent again (after a lost connection or a timeout) resumes
//!   where the received bytes end. A different snapshot replaces the partial
//!   one, whose file is removed at once: at most one `.recv` file exists.
//! - A partial transfer that sees no chunk for [`STALE_AFTER`] is dropped with
//!   its file the next time the inbox is used.
//! - After the last chunk the install runs in its own task, outside any
//!   request's deadline; the sender polls for the result.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::raft::SnapshotResponse;

use super::types::{LogId, Raft, SnapshotMeta, TypeConfig, Vote};
use crate::storage::SnapshotFile;

/// A partial transfer untouched for this long is abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Which snapshot a transfer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TransferId {
    last_log_id: Option<LogId>,
    len: u64,
}

impl TransferId {
    fn new(meta: &SnapshotMeta, len: u64) -> Self {
        TransferId {
            last_log_id: meta.last_log_id,
            len,
        }
    }
}

/// A snapshot file being received. Dropping it removes the file.
struct Partial {
    id: TransferId,
    file: File,
    path: Option<PathBuf>,
    next_offset: u64,
    touched: Instant,
}

impl Partial {
    /// Hands the finished file over; it is no longer removed on drop.
    fn into_path(mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a partial snapshot");
                }
            }
        }
    }
}

/// The outcome of the latest install started by the inbox.
struct Install {
    id: TransferId,
    /// `None` while it runs.
    result: Option<Result<SnapshotResponse<TypeConfig>, String>>,
}

#[derive(Default)]
struct State {
    partial: Option<Partial>,
    install: Option<Install>,
    /// Numbers the partial files.
    next_file: u64,
}

/// What the inbox answers to an offer.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Send from this offset.
    From(u64),
    /// Everything was received; the install is running or done: poll.
    Installing,
}

/// What the inbox answers to a chunk or a status request.
#[derive(Debug)]
pub enum Progress {
    /// Keep going: more chunks, or the install is still running.
    Pending,
    /// Installed (or refused by Raft with its vote).
    Done(SnapshotResponse<TypeConfig>),
}

/// A node's snapshot inbox.
pub struct SnapshotInbox {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind; keep going.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl SnapshotInbox {
    /// An inbox that keeps partial files in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        SnapshotInbox {
            dir,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn drop_stale(state: &mut State) {
        if state
            .partial
            .as_ref()
            .is_some_and(|p| p.touched.elapsed() > STALE_AFTER)
        {
            tracing::info!("dropping an abandoned partial snapshot");
            state.partial = None;
        }
    }

    /// Where a transfer of `meta` (of `len` bytes) should start.
    pub fn offer(&self, meta: &SnapshotMeta, len: u64) -> Resume {
        let id = TransferId::new(meta, len);
        let mut state = lock(&self.state);
        Self::drop_stale(&mut state);
        if state
            .install
            .as_ref()
            .is_some_and(|i| i.id == id && !matches!(i.result, Some(Err(_))))
        {
            return Resume::Installing;
        }
        match &state.partial {
            Some(p) if p.id == id => Resume::From(p.next_offset),
            _ => Resume::From(0),
        }
    }

    /// Writes one chunk; after the last one, starts installing the snapshot
    /// through `raft`.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk(
        &self,
        raft: &Raft,
        vote: Vote,
        meta: SnapshotMeta,
        len: u64,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> std::io::Result<Progress> {
        let id = TransferId::new(&meta, len);
        let mut state = lock(&self.state);
        Self::drop_stale(&mut state);
        if offset == 0 {
            // A new transfer: the old partial file (if any) goes.
            state.partial = None;
            std::fs::create_dir_all(&self.dir)?;
            let n = state.next_file;
            state.next_file += 1;
            let path = self.dir.join(format!("incoming-{n}.recv"));
            let file = File::create(&path)?;
            state.partial = Some(Partial {
                id: id.clone(),
                file,
                path: Some(path),
                next_offset: 0,
                touched: Instant::now(),
            });
        }
        let partial = match state.partial.as_mut() {
            Some(p) if p.id == id => p,
            _ => {
                return Err(std::io::Error::other(
                    "snapshot chunk for a transfer this node does not have; start again",
                ))
            }
        };
        if partial.next_offset != offset {
            let expected = partial.next_offset;
            return Err(std::io::Error::other(format!(
                "snapshot chunk at offset {offset}, expected {expected}"
            )));
        }
        let end = offset + data.len() as u64;
        if end > len || (done && end != len) {
            state.partial = None;
            return Err(std::io::Error::other(format!(
                "snapshot chunk ends at {end}, the snapshot has {len} bytes"
            )));
        }
        if let Err(e) = partial.file.write_all(data) {
            state.partial = None;
            return Err(e);
        }
        partial.next_offset = end;
        partial.touched = Instant::now();
        if !done {
            return Ok(Progress::Pending);
        }
        let Some(partial) = state.partial.take() else {
            return Err(std::io::Error::other("snapshot transfer vanished"));
        };
        partial.file.sync_all()?;
        let Some(path) = partial.into_path() else {
            return Err(std::io::Error::other("snapshot transfer has no file"));
        };
        state.install = Some(Install {
            id: id.clone(),
            result: None,
        });
        drop(state);
        self.spawn_install(raft.clone(), vote, meta, id, path);
        Ok(Progress::Pending)
    }

    fn spawn_install(
        &self,
        raft: Raft,
        vote: Vote,
        meta: SnapshotMeta,
        id: TransferId,
        path: PathBuf,
    ) {
        let state = self.state.clone();
        tokio::spawn(async move {
            let snapshot = openraft::Snapshot {
                meta,
                snapshot: SnapshotFile { path: path.clone() },
            };
            let result = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string());
            // Installed files were moved into place; anything left is a
            // refused or failed transfer.
            remove_if_present(&path);
            if let Err(e) = &result {
                tracing::warn!(error = %e, "snapshot install failed");
            }
            let mut state = lock(&state);
            if let Some(install) = state.install.as_mut().filter(|i| i.id == id) {
                install.result = Some(result);
            }
        });
    }

    /// The state of the install of `meta` (of `len` bytes).
    pub fn status(&self, meta: &SnapshotMeta, len: u64) -> Result<Progress, String> {
        let id = TransferId::new(meta, len);
        let state = lock(&self.state);
        match &state.install {
            Some(i) if i.id == id => match &i.result {
                None => Ok(Progress::Pending),
                Some(Ok(resp)) => Ok(Progress::Done(resp.clone())),
                Some(Err(e)) => Err(format!("snapshot install failed: {e}")),
            },
            _ => Err("no install of this snapshot is known; send it again".into()),
        }
    }
}

fn remove_if_present(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a received snapshot")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
        }
    }

    fn partial(dir: &Path, len: u64, next_offset: u64, touched: Instant) -> (Partial, PathBuf) {
        let path = dir.join(format!("incoming-{len}.recv"));
        let partial = Partial {
            id: TransferId::new(&meta(), len),
            file: File::create(&path).expect("create"),
            path: Some(path.clone()),
            next_offset,
            touched,
        };
        (partial, path)
    }

    fn recv_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "recv"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn partial_transfers_resume_and_are_removed_when_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inbox = SnapshotInbox::new(tmp.path().to_path_buf());
        assert_eq!(inbox.offer(&meta(), 10), Resume::From(0));
        let (p, path) = partial(tmp.path(), 10, 4, Instant::now());
        lock(&inbox.state).partial = Some(p);
        // The same snapshot resumes where the received bytes end; another
        // one starts from zero.
        assert_eq!(inbox.offer(&meta(), 10), Resume::From(4));
        assert_eq!(inbox.offer(&meta(), 11), Resume::From(0));
        assert!(path.exists());
        lock(&inbox.state).partial = None;
        assert!(
            !path.exists(),
            "a dropped partial transfer removes its file"
        );
        assert!(recv_files(tmp.path()).is_empty());
    }

    #[test]
    fn stale_partials_are_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inbox = SnapshotInbox::new(tmp.path().to_path_buf());
        let old = Instant::now() - STALE_AFTER - Duration::from_secs(1);
        let (p, path) = partial(tmp.path(), 10, 4, old);
        lock(&inbox.state).partial = Some(p);
        assert_eq!(inbox.offer(&meta(), 10), Resume::From(0));
        assert!(!path.exists());
    }

    #[test]
    fn a_finished_install_is_reported_and_not_sent_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inbox = SnapshotInbox::new(tmp.path().to_path_buf());
        lock(&inbox.state).install = Some(Install {
            id: TransferId::new(&meta(), 10),
            result: None,
        });
        assert_eq!(inbox.offer(&meta(), 10), Resume::Installing);
        assert!(matches!(inbox.status(&meta(), 10), Ok(Progress::Pending)));
        assert!(inbox.status(&meta(), 11).is_err());
        lock(&inbox.state).install.as_mut().expect("install").result = Some(Err("disk".into()));
        assert!(inbox.status(&meta(), 10).is_err());
        // A failed install is sent again from the start.
        assert_eq!(inbox.offer(&meta(), 10), Resume::From(0));
    }
}
