//! jepsen-lite: real multi-process ballast clusters under faults, recorded
//! histories, and checkers.
//!
//! # Layout
//! - `cluster`: the `ballastd` processes (start, kill -9, pause, restart, join, teardown).
//! - `members`: which nodes are members right now (the endpoints clients use).
//! - `proxy`: the TCP fault proxy on every directed peer link.
//! - `client`: an HTTP client of one node that classifies outcomes ok/fail/info.
//! - `workload`: the clients that generate and record operations (`register`).
//! - `nemesis`: the fault injectors (`Nemesis` trait) and their schedule.
//! - `model`: sequential specifications (`Register`).
//! - `checker`: linearizability search, per-key register checks, watch checks.
//! - `report`: summary counts and the HTML timeline of a violation.
//! - `history`: events, the run clock, JSON-lines history files.
//! - `run`: one whole run, one file per phase: `setup` (output folder, proxies,
//!   nodes), `workload` (clients and nemeses until the time is up), `teardown`
//!   (heal, converge, catch up, stop), `check` and `summary` (checkers, report files).

pub mod auth;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod members;
pub mod model;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod run;
pub mod tls;
pub mod workload;
