//! The replicated command set and its results: what goes into the Raft log and
//! what comes back out of the state machine.
//!
//! These types are persisted (inside Raft log entries and snapshots) with
//! postcard, so variants are only ever appended, never reordered.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One key with its value and MVCC metadata, as etcd models it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key, a UTF-8 string without NUL characters.
    pub key: String,
    /// The value bytes.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the put that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last put to the key.
    pub mod_revision: u64,
    /// Number of puts since creation; 1 right after creation.
    pub version: u64,
}

/// A state-machine command: everything that changes the key space goes through
/// the Raft log as one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set one key.
    Put {
        /// Key to set.
        key: String,
        /// New value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Return the previous key-value in the response.
        prev_kv: bool,
    },
    /// Delete one key, or every key under a prefix.
    Delete {
        /// Key, or prefix when `prefix` is set.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
        /// Return the deleted key-values in the response.
        prev_kv: bool,
    },
    /// A transaction applied atomically at one revision.
    Txn(TxnRequest),
    /// Forget history before `revision`: reads and watches below it are
    /// refused from then on. Does not create a revision.
    Compact {
        /// The new compact revision.
        revision: u64,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { key, value, .. } => write!(f, "put({key}, {} bytes)", value.len()),
            Command::Delete { key, prefix, .. } => write!(f, "delete({key}, prefix={prefix})"),
            Command::Txn(t) => write!(
                f,
                "txn({} compares, {} success, {} failure)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            Command::Compact { revision } => write!(f, "compact({revision})"),
        }
    }
}

/// A transaction: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Conditions evaluated against the state before the transaction.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Ops run otherwise.
    pub failure: Vec<TxnOp>,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// Key the condition looks at. A missing key has version, create and mod
    /// revision 0 and no value.
    pub key: String,
    /// What is compared, with the operand.
    pub target: CompareTarget,
    /// The comparison.
    pub op: CompareOp,
}

/// The field a [`Compare`] looks at, with the operand to compare it against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value bytes. A missing key has no value, so every value compare on
    /// it is false, `!=` included (etcd compares only existing keys' values).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key's version (0 when missing).
    Version(u64),
    /// The key's mod revision (0 when missing).
    ModRevision(u64),
    /// The key's create revision (0 when missing).
    CreateRevision(u64),
}

/// Comparison operator of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

impl CompareOp {
    /// Whether `ordering` (actual compared with operand) satisfies the operator.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Equal => ordering == Equal,
            CompareOp::NotEqual => ordering != Equal,
            CompareOp::Less => ordering == Less,
            CompareOp::Greater => ordering == Greater,
        }
    }
}

/// One operation inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// Key to set.
        key: String,
        /// New value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete a key or a prefix.
    Delete {
        /// Key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
    /// Read a key or a prefix, seeing the earlier ops of the same branch.
    Get {
        /// Key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
}

/// The result of applying one [`Command`].
///
/// Business outcomes (a failed compare) are results, never errors: an error
/// from the state machine would stop Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A Raft-internal entry (blank or membership) that touched no key.
    None,
    /// Result of [`Command::Put`].
    Put {
        /// Revision of the put.
        revision: u64,
        /// Previous key-value, when asked for and present.
        prev_kv: Option<KeyValue>,
    },
    /// Result of [`Command::Delete`].
    Delete {
        /// Revision of the delete, or the unchanged current revision when
        /// nothing was deleted.
        revision: u64,
        /// Number of keys deleted.
        deleted: u64,
        /// Deleted key-values, when asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// Result of [`Command::Txn`].
    Txn {
        /// Whether every compare held.
        succeeded: bool,
        /// Revision after the transaction (unchanged when it wrote nothing).
        revision: u64,
        /// One response per op of the branch that ran.
        responses: Vec<TxnOpResponse>,
    },
    /// Result of [`Command::Compact`].
    Compact {
        /// Current revision.
        revision: u64,
        /// Compact revision after the command.
        compact_revision: u64,
        /// Why nothing changed, if it was refused.
        refused: Option<CompactRefusal>,
    },
}

/// Why a compaction was refused (a result, not an error: Raft goes on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactRefusal {
    /// The requested revision is not newer than the compact revision.
    AlreadyCompacted,
    /// The requested revision is newer than the current revision.
    FutureRevision,
}

/// The result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResponse {
    /// A put, at the transaction's revision.
    Put {
        /// Revision of the write.
        revision: u64,
    },
    /// A delete.
    Delete {
        /// Number of keys deleted.
        deleted: u64,
    },
    /// A read.
    Get {
        /// Matching key-values in key order.
        kvs: Vec<KeyValue>,
    },
}
