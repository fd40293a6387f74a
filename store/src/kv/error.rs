//! Errors of the key-space layer: bad input and reads outside the retained history.

/// Why a key-space request was refused. Every variant is the caller's doing
/// (a 4xx), never a server fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key is empty, has a NUL character, or is otherwise unusable.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key is longer than the configured limit.
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge {
        /// Key length in bytes.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The value is larger than the configured limit.
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Value length in bytes.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The whole request (a transaction's values together) is larger than
    /// the configured limit.
    #[error("request is {len} bytes, the limit is {max} (one maximum-size value plus 64 KiB)")]
    RequestTooLarge {
        /// Bytes the request carries.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// A transaction has more compares or ops than allowed.
    #[error("transaction has {count} {what}, the limit is {max}")]
    TooManyOps {
        /// What was counted ("compares" or "ops in one branch").
        what: &'static str,
        /// How many there were.
        count: usize,
        /// Configured limit.
        max: usize,
    },
    /// The request is well-formed but not allowed (for example two writes to
    /// one key in one transaction branch).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A read asked for a revision older than the compact revision.
    #[error("revision {requested} has been compacted (compact revision is {compact_revision})")]
    Compacted {
        /// Requested revision.
        requested: u64,
        /// Oldest revision still readable.
        compact_revision: u64,
    },
    /// A read asked for a revision newer than the node has.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// Requested revision.
        requested: u64,
        /// Current revision.
        current: u64,
    },
}
