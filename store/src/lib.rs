//! ballast-store: the control plane of ballast.
//!
//! # Layout
//! - [`config`]: the `ballastd` configuration and its validation.
//! - `codec`: versioned postcard encoding for everything persisted or sent.
//! - [`db`]: the node's one RocksDB instance: column families and open options.
//! - `kv`: commands, limits, the MVCC key space in RocksDB, history
//!   retention (compaction), the replicated tokens and roles (`kv::auth`),
//!   and the key space's size on disk (the quota).
//! - `storage`: the RocksDB Raft log (with group commit) and state machine,
//!   snapshots, backups (`GET /v1/snapshot`) and restores ([`restore`]).
//! - `raft`: openraft types, the peer network, and [`Node`], which
//!   serves linearizable and local reads and forwards writes to the leader;
//!   `raft::observe` adds what the node tells about itself (quorum, data
//!   plane, scrape-time gauges, the quota check).
//! - `watch`: watch streams (SSE) served from each node's applied state.
//! - `metrics`: the Prometheus registry (`prometheus-client`) behind `/metrics`.
//! - `replicas`: data-plane replica reports (in memory, merged across nodes).
//! - `api`: the HTTP API (axum), its bearer-token checks (`api::auth`), its
//!   single error mapping, and the dashboard (`/ui`, embedded from `src/ui/`).
//! - [`server`]: wiring it all up: [`run`] starts one node.
//! - `stop`: the stop signal every background task waits on.
//! - `tls`: rustls configurations of the client and peer listeners and the
//!   peer dialer, reloaded when their files change.
//!
//! The public API is [`Config`], [`start`]/[`run`], [`restore`], [`RunningNode`], [`Node`],
//! [`dev_certs`] (certificates for `ballastd dev --tls`),
//! [`Admission`],
//! the [`server`] and [`config`] modules and the on-disk layout in [`db`];
//! everything else is internal to the crate.
//!
//! Modules import only downwards: `api` → `watch` → `raft`/`storage` → `kv`
//! (with `codec`, `db`, `metrics`, `replicas`, `stop`, `tls` below them all: they import
//! nothing else from the crate).
#![deny(missing_docs)]

pub(crate) mod api;
pub(crate) mod codec;
pub mod config;
pub mod db;
pub(crate) mod kv;
pub(crate) mod metrics;
pub(crate) mod raft;
pub(crate) mod replicas;
pub mod server;
pub(crate) mod stop;
pub(crate) mod storage;
pub(crate) mod tls;
pub(crate) mod watch;

pub use api::{Admission, AdmissionOptions, AdmissionPermit};
pub use config::Config;
pub use raft::node::Node;
pub use server::{run, start, Listeners, RunningNode, ServerError, ShutdownReport};
pub use storage::restore::{restore, RestoreError, RestoreOptions, RestoreReport, RestoreSource};
pub use tls::{dev_certs, DevCerts, TlsError};

/// Internals the project's own integration tests and benchmarks reach into
/// (raw peer requests, snapshot files, the hot paths the micro-benchmarks
/// time). Not part of the supported API.
#[doc(hidden)]
pub mod internals {
    pub use crate::kv::index::KeyIndex;
    pub use crate::kv::mvcc::{
        change_key, history_key, load_state, split_history_key, ApplyBatch, Change, MvccState,
        Record,
    };
    pub use crate::kv::Command;
    pub use crate::raft::wire::{self, FrameCaps, PeerIdentity, PeerRequest, PeerResponse};
    pub use crate::storage::snapshot;
    pub use crate::tls::{PeerTls, TlsFiles};
    pub use crate::watch::event::{encode_revision, Filter};
}
