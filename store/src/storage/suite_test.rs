//! openraft's own storage test suite, run against the RocksDB log store and
//! state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tempfile::TempDir;

use super::{LogStore, StateMachine};
use crate::db;
use crate::raft::types::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let opened = db::open(&dir.path().join("db"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let log = LogStore::new(opened.clone())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let sm = StateMachine::open(opened, dir.path().join("snapshots"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}
