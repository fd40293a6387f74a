//! The seam between the load loop and the system under test.
//!
//! The runner only knows [`Target`] (opens connections) and [`Connection`] (does
//! one put or get). ballast is the first implementation (`ballast.rs`); another
//! store (etcd over gRPC, for a side-by-side table) slots in as
//! a second pair of impls and a `TargetKind` variant, with no runner change.

use std::fmt;
use std::future::Future;

/// Freshness asked of a get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Linearizable: goes through the leader (etcd: the default read).
    Linearizable,
    /// Serializable: answered locally by the contacted node.
    Serializable,
}

/// Why one request failed; counted, and the first few are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A system the benchmark can drive.
pub trait Target: Send + Sync {
    /// One connection: carries one request at a time.
    type Conn: Connection;

    /// Name for reports (`ballast`).
    fn name(&self) -> &'static str;

    /// Opens (lazily, or at once) one connection to `endpoint`. Must not retry
    /// or fail over on its own: the benchmark counts every failure.
    fn connect(&self, endpoint: &str) -> anyhow::Result<Self::Conn>;
}

/// One client connection to one endpoint.
pub trait Connection: Send + Sync + 'static {
    /// A cheap request that establishes the connection before timing starts.
    fn warm_up(&self) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Writes `value` at `key`.
    fn put(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Reads `key`; a missing key is an error (the keys were preloaded).
    fn get(
        &self,
        key: &str,
        consistency: ReadConsistency,
    ) -> impl Future<Output = Result<(), OpError>> + Send;
}
