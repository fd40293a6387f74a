//! ballast-store: the control plane of ballast.
//!
//! # Layout
//! - [`config`]: the `ballastd` configuration and its validation.
//! - [`codec`]: versioned postcard encoding for everything persisted or sent.
//! - [`db`]: the node's one RocksDB instance: column families and open options.
//! - [`kv`]: commands, limits, the MVCC key space in RocksDB and history
//!   retention (compaction).
//! - [`storage`]: the RocksDB Raft log (with group commit) and state machine,
//!   snapshots.
//! - [`raft`]: openraft types, the peer network, and [`raft::node::Node`], which
//!   serves linearizable and local reads and forwards writes to the leader.
//! - [`watch`]: watch streams (SSE) served from each node's applied state.
//! - [`metrics`]: counters exposed at `/metrics`.
//! - [`replicas`]: data-plane replica reports (in memory, merged across nodes).
//! - [`api`]: the HTTP API (axum) and its single error mapping.
//! - [`server`]: wiring it all up: [`run`] starts one node.
//! - [`stop`]: the stop signal every background task waits on.
//!
//! Modules import only downwards: `api` → `watch` → `raft`/`storage` → `kv`
//! (with `codec`, `db`, `metrics`, `stop` below them all).
#![deny(missing_docs)]

pub mod api;
pub mod codec;
pub mod config;
pub mod db;
pub mod kv;
pub mod metrics;
pub mod raft;
pub mod replicas;
pub mod server;
pub mod stop;
pub mod storage;
pub mod watch;

pub use config::Config;
pub use server::{run, start, RunningNode};
