//! Workloads: concurrent clients that record every operation.
//!
//! `register` and `watch` are here; `replica` comes with the replica issue
//! (it will reuse the register model with a "may be stale but never goes
//! backwards" read).

pub mod register;
pub mod watch;
