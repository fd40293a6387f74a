//! openraft's own storage test suite, run against the RocksDB log store and
//! state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tempfile::TempDir;

use super::log_store::LogFlusher;
use super::{LogStore, StateMachine};
use crate::db;
use crate::raft::types::TypeConfig;

struct RocksBuilder;

/// What a suite case holds until its end, dropped after its log store: the
/// store's flusher thread, which may be the last to hold (and so close) the
/// database, is joined before the directory is removed. Left running, a
/// case's database could still be closing when its directory went, or when
/// the test binary exited: run alone, this test then crashed the binary at
/// exit (SIGSEGV) 12 times in 12, and the whole store test binary crashed
/// the same way in CI.
struct Guard {
    flusher: LogFlusher,
    _dir: TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.flusher.join();
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Guard> for RocksBuilder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let opened = db::open(&dir.path().join("db"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let log = LogStore::new(opened.clone())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let sm = StateMachine::open(opened, dir.path().join("snapshots"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let guard = Guard {
            flusher: log.flusher(),
            _dir: dir,
        };
        Ok((guard, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}
