//! The seam between the load loop and the system under test.
//!
//! The runner only knows [`Target`] (opens connections) and [`Connection`] (does
//! one put, get or compare-and-swap). ballast (`ballast.rs`, HTTP/1.1) and etcd
//! (`etcd.rs`, gRPC) are the two implementations; a third store slots in as
//! another pair of impls and a `TargetKind` variant, with no runner change.

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

impl std::error::Error for OpError {}

/// How a compare-and-swap transaction ended. Both are completed operations:
/// a failed compare is an answer, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The key's mod revision was the expected one; the put ran at `revision`.
    Swapped {
        /// Revision of the write: the key's new mod revision.
        revision: u64,
    },
    /// The key had moved on; nothing was written.
    CompareFailed {
        /// The key's mod revision as the failure branch read it (0: absent).
        current: u64,
    },
}

/// A system the benchmark can drive.
pub trait Target: Send + Sync {
    /// One connection.
    type Conn: Connection;

    /// Name for reports and file names (`ballast`, `etcd`).
    fn name(&self) -> &'static str;

    /// Whether one connection carries many requests at once (gRPC over
    /// HTTP/2). When false (HTTP/1.1), clients that share a connection take
    /// turns.
    fn multiplexed(&self) -> bool {
        false
    }

    /// Opens one connection to `endpoint` (lazily or at once). Must not retry
    /// or fail over on its own: the benchmark counts every failure.
    fn connect(&self, endpoint: &str) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;
}

/// One client connection to one endpoint.
pub trait Connection: Send + Sync + 'static {
    /// A cheap request that establishes the connection before timing starts.
    fn warm_up(&self) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Writes `value` at `key`.
    fn put(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Reads `key` and returns its mod revision; a missing key is an error
    /// (the keys were preloaded).
    fn get(
        &self,
        key: &str,
        consistency: ReadConsistency,
    ) -> impl Future<Output = Result<u64, OpError>> + Send;

    /// One transaction: if `key`'s mod revision is `expected`, put `value`;
    /// otherwise read the key (to learn its current mod revision).
    fn cas(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> impl Future<Output = Result<CasOutcome, OpError>> + Send;
}
