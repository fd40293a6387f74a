//! Durable storage: the Raft log and the state machine in the node's RocksDB
//! instance ([`crate::db`]), backups of the applied state and restores from
//! them.

pub mod backup;
pub mod identity;
pub mod log_store;
pub mod restore;
pub mod snapshot;
pub mod space;
pub mod state_machine;

pub use log_store::LogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;

#[cfg(test)]
mod suite_test;
