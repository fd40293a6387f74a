//! Transactions: a builder for `POST /v1/txn` and the typed answer.
//!
//! A transaction is `if all(compare) then success else failure`, applied atomically
//! at one revision. Build one with [`Txn::new`], [`Txn::when`], [`Txn::and_then`]
//! and [`Txn::or_else`], then send it with [`Client::txn`](crate::Client::txn).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{decode_kvs, encode_value, KeyValue, WireKeyValue};

/// Comparison operator of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    fn as_wire(self) -> &'static str {
        match self {
            CompareOp::Equal => "=",
            CompareOp::NotEqual => "!=",
            CompareOp::Less => "<",
            CompareOp::Greater => ">",
        }
    }
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value's bytes.
    Value(Vec<u8>),
    /// The key's version (0 = the key does not exist).
    Version(u64),
    /// The key's last modification revision.
    ModRevision(u64),
    /// The key's creation revision (0 = the key does not exist).
    CreateRevision(u64),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Key the condition is about.
    pub key: String,
    /// Operator.
    pub op: CompareOp,
    /// What is compared, and with what.
    pub target: CompareTarget,
}

impl Compare {
    /// Compares the key's value with `value`.
    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// Compares the key's version; `version(k, Equal, 0)` means "k does not exist".
    pub fn version(key: impl Into<String>, op: CompareOp, version: u64) -> Self {
        Self {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }

    /// Compares the key's last modification revision.
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: u64) -> Self {
        Self {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// Compares the key's creation revision.
    pub fn create_revision(key: impl Into<String>, op: CompareOp, revision: u64) -> Self {
        Self {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(revision),
        }
    }
}

/// One operation in a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// Key.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// Delete a key, or every key under a prefix.
    Delete {
        /// Key or prefix.
        key: String,
        /// Whether `key` is a prefix.
        prefix: bool,
    },
    /// Read a key, or every key under a prefix, at the transaction's revision.
    Get {
        /// Key or prefix.
        key: String,
        /// Whether `key` is a prefix.
        prefix: bool,
    },
}

impl TxnOp {
    /// Sets `key` to `value`.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete {
            key: key.into(),
            prefix: false,
        }
    }

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::Delete {
            key: prefix.into(),
            prefix: true,
        }
    }

    /// Reads `key`.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get {
            key: key.into(),
            prefix: false,
        }
    }

    /// Reads every key starting with `prefix`.
    pub fn get_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::Get {
            key: prefix.into(),
            prefix: true,
        }
    }
}

/// A transaction: `if all(compare) then success else failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions; all must hold for `success` to run. Empty = always true.
    pub compare: Vec<Compare>,
    /// Operations run when every condition holds.
    pub success: Vec<TxnOp>,
    /// Operations run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no conditions, no operations).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions (all must hold).
    pub fn when(mut self, compare: Vec<Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    /// Adds operations to run when the conditions hold.
    pub fn and_then(mut self, ops: Vec<TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to run when a condition fails.
    pub fn or_else(mut self, ops: Vec<TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// The JSON body of `POST /v1/txn`.
    pub(crate) fn to_wire(&self) -> WireTxn {
        WireTxn {
            compare: self.compare.iter().map(wire_compare).collect(),
            success: self.success.iter().map(wire_op).collect(),
            failure: self.failure.iter().map(wire_op).collect(),
        }
    }
}

/// The result of one operation of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put: the transaction's revision.
    Put {
        /// Revision of the write.
        revision: u64,
    },
    /// A delete: how many keys it removed.
    Delete {
        /// Keys deleted.
        deleted: u64,
    },
    /// A get: the keys found (empty when none).
    Get {
        /// Keys in key order.
        kvs: Vec<KeyValue>,
    },
}

/// Answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the conditions held (`success` ran) or not (`failure` ran).
    pub succeeded: bool,
    /// Revision of the transaction (the current revision if it wrote nothing).
    pub revision: u64,
    /// One entry per operation of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

/// Answer to [`Client::compare_and_swap`](crate::Client::compare_and_swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    /// Whether the swap happened.
    pub succeeded: bool,
    /// Revision of the swap, or the revision at which the comparison failed.
    pub revision: u64,
    /// When the swap failed: the key as it was (`None` if it did not exist).
    /// When it succeeded: `None` (the key now holds the new value at `revision`).
    pub current: Option<KeyValue>,
}

// ---------------------------------------------------------------------------
// Wire forms.

#[derive(Debug, Serialize)]
pub(crate) struct WireTxn {
    compare: Vec<WireCompare>,
    success: Vec<WireOp>,
    failure: Vec<WireOp>,
}

#[derive(Debug, Serialize)]
struct WireCompare {
    key: String,
    target: &'static str,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mod_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<u64>,
}

fn wire_compare(c: &Compare) -> WireCompare {
    let mut w = WireCompare {
        key: c.key.clone(),
        target: "",
        op: c.op.as_wire(),
        value: None,
        encoding: None,
        version: None,
        mod_revision: None,
        create_revision: None,
    };
    match &c.target {
        CompareTarget::Value(v) => {
            let (value, encoding) = encode_value(v);
            w.target = "value";
            w.value = Some(value);
            w.encoding = encoding;
        }
        CompareTarget::Version(n) => {
            w.target = "version";
            w.version = Some(*n);
        }
        CompareTarget::ModRevision(n) => {
            w.target = "mod_revision";
            w.mod_revision = Some(*n);
        }
        CompareTarget::CreateRevision(n) => {
            w.target = "create_revision";
            w.create_revision = Some(*n);
        }
    }
    w
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum WireOp {
    Put {
        key: String,
        value: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        encoding: Option<&'static str>,
    },
    Delete {
        key: String,
        prefix: bool,
    },
    Get {
        key: String,
        prefix: bool,
    },
}

fn wire_op(op: &TxnOp) -> WireOp {
    match op {
        TxnOp::Put { key, value } => {
            let (value, encoding) = encode_value(value);
            WireOp::Put {
                key: key.clone(),
                value,
                encoding,
            }
        }
        TxnOp::Delete { key, prefix } => WireOp::Delete {
            key: key.clone(),
            prefix: *prefix,
        },
        TxnOp::Get { key, prefix } => WireOp::Get {
            key: key.clone(),
            prefix: *prefix,
        },
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireTxnResponse {
    succeeded: bool,
    revision: Option<u64>,
    #[serde(default)]
    responses: Vec<WireOpResponse>,
}

/// `{"put": {...}}`, `{"delete": {...}}` or `{"get": {...}}`; decoded as a struct
/// of options so extra fields inside or beside them are tolerated.
#[derive(Debug, Deserialize)]
struct WireOpResponse {
    put: Option<WirePutResult>,
    delete: Option<WireDeleteResult>,
    get: Option<WireGetResult>,
}

#[derive(Debug, Deserialize)]
struct WirePutResult {
    revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WireDeleteResult {
    #[serde(default)]
    deleted: u64,
}

#[derive(Debug, Deserialize)]
struct WireGetResult {
    #[serde(default)]
    kvs: Vec<WireKeyValue>,
}

impl WireTxnResponse {
    pub(crate) fn into_response(self, header_rev: Option<u64>) -> Result<TxnResponse> {
        let revision = self
            .revision
            .or(header_rev)
            .ok_or_else(|| Error::Decode("txn response carries no revision".to_owned()))?;
        let responses = self
            .responses
            .into_iter()
            .map(|r| match (r.put, r.delete, r.get) {
                (Some(p), None, None) => Ok(TxnOpResponse::Put {
                    revision: p.revision.unwrap_or(revision),
                }),
                (None, Some(d), None) => Ok(TxnOpResponse::Delete { deleted: d.deleted }),
                (None, None, Some(g)) => Ok(TxnOpResponse::Get {
                    kvs: decode_kvs(g.kvs)?,
                }),
                _ => Err(Error::Decode(
                    "txn op response must hold exactly one of put, delete, get".to_owned(),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: self.succeeded,
            revision,
            responses,
        })
    }
}

/// The transaction behind `compare_and_swap`.
pub(crate) fn cas_txn(key: &str, expected: Option<&[u8]>, new_value: Vec<u8>) -> Txn {
    let compare = match expected {
        // The version guard makes "absent" fail the compare even on a server that
        // compares a missing key's value as empty.
        Some(v) => vec![
            Compare::version(key, CompareOp::Greater, 0),
            Compare::value(key, CompareOp::Equal, v),
        ],
        None => vec![Compare::version(key, CompareOp::Equal, 0)],
    };
    Txn::new()
        .when(compare)
        .and_then(vec![TxnOp::put(key, new_value)])
        .or_else(vec![TxnOp::get(key)])
}

/// Reads a `compare_and_swap` answer.
pub(crate) fn cas_result(resp: TxnResponse) -> CasResult {
    let current = if resp.succeeded {
        None
    } else {
        resp.responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get { kvs } => kvs.into_iter().next(),
            _ => None,
        })
    };
    CasResult {
        succeeded: resp.succeeded,
        revision: resp.revision,
        current,
    }
}

#[cfg(test)]
#[path = "txn_test.rs"]
mod tests;
