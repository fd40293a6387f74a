//! Workloads: concurrent clients that record every operation.
//!
//! `register`, `watch` and `replica` (data-plane replicas reading through
//! faults, including a full control-plane outage).

pub mod register;
pub mod replica;
pub mod watch;
