//! Durable storage: the Raft log and the state machine in the node's RocksDB
//! instance ([`crate::db`]).

pub mod identity;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;

pub use log_store::LogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;

#[cfg(test)]
mod suite_test;
