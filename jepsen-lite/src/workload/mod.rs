//! Workloads: concurrent clients that record every operation.
//!
//! `register` is here; `watch` is designed in docs/jepsen-lite.md and its
//! checker in checker/watch.rs; `replica` comes with the replica issue (it
//! will reuse the register model with a "may be stale but never goes
//! backwards" read).

pub mod register;
