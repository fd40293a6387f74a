//! Request options and response types for reads and single-key writes, and their
//! JSON wire forms.
//!
//! Public types hold values as bytes; the wire forms (private, `Wire*`) carry them
//! as a UTF-8 string or as standard base64 with `"encoding": "base64"`.

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One key and its value with its MVCC metadata, as of the revision of the
/// response that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (UTF-8).
    pub key: String,
    /// The value's bytes, already decoded from the wire encoding.
    pub value: Vec<u8>,
    /// Revision at which the key was created (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
    /// Number of writes since creation (1 after the first put).
    pub version: u64,
}

impl KeyValue {
    /// The value as UTF-8 text, if it is.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Goes through the leader's read index: reflects every write acknowledged
    /// before the read started. Fails on a minority side of a partition.
    #[default]
    Linearizable,
    /// Answered from the contacted node's local state: cheaper, may be stale.
    Serializable,
}

impl Consistency {
    pub(crate) fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }
    }
}

/// Options for [`Client::get_with`](crate::Client::get_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Freshness of the read.
    pub consistency: Consistency,
    /// Read at this past revision instead of the latest (fails with `compacted`
    /// when it is older than the compact revision).
    pub revision: Option<u64>,
}

/// Options for [`Client::range`](crate::Client::range).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys; [`RangeResponse::more`] says whether there were more.
    pub limit: Option<u64>,
    /// Read at this past revision instead of the latest.
    pub revision: Option<u64>,
    /// Freshness of the read.
    pub consistency: Consistency,
}

/// Options for [`Client::put_with`](crate::Client::put_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Return the key's previous value in [`PutResponse::prev_kv`].
    pub prev_kv: bool,
}

/// Options for [`Client::delete_with`](crate::Client::delete_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete every key starting with the given key instead of the key alone.
    pub prefix: bool,
    /// Return the deleted keys in [`DeleteResponse::prev_kvs`].
    pub prev_kv: bool,
}

/// Answer to a single-key read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// Revision the read reflects.
    pub revision: u64,
    /// The key, or `None` when it does not exist at that revision.
    pub kv: Option<KeyValue>,
}

/// Answer to a prefix read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Revision the read reflects.
    pub revision: u64,
    /// Keys in key order.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// Answer to a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResponse {
    /// Revision at which the put was committed.
    pub revision: u64,
    /// The previous value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResponse {
    /// Revision of the delete, or the current revision when nothing was deleted.
    pub revision: u64,
    /// Number of keys deleted.
    pub deleted: u64,
    /// The deleted keys, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// A node's view of the cluster, from `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// Id of the node that answered.
    pub node_id: u64,
    /// Id of the leader this node knows of, if any.
    pub leader: Option<u64>,
    /// Current Raft term.
    pub term: u64,
    /// Revision the node has applied.
    pub revision: u64,
    /// Revision up to which history has been compacted.
    pub compact_revision: u64,
    /// Hash of the applied key space, for comparing replicas of the state.
    #[serde(default)]
    pub state_hash: String,
    /// Raft log progress on this node.
    pub raft: RaftStatus,
    /// Cluster members as this node knows them.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// Raft log progress of one node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RaftStatus {
    /// Index of the last log entry (`None` while the log is empty).
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Highest index known committed (`None` before the first commit).
    #[serde(default)]
    pub committed: Option<u64>,
    /// Highest index applied to the state machine.
    #[serde(default)]
    pub applied: Option<u64>,
    /// Raft role: `Leader`, `Follower`, `Candidate`, `Learner`, ...
    pub state: String,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Address serving the HTTP API.
    pub client_addr: String,
    /// Address serving Raft traffic.
    #[serde(default)]
    pub peer_addr: String,
    /// Voter (true) or learner (false).
    #[serde(default)]
    pub voter: bool,
}

// ---------------------------------------------------------------------------
// Wire forms.

/// Encodes a value for a JSON body: a UTF-8 string as is, anything else base64.
/// Returns the string and the `encoding` field to send alongside it.
pub(crate) fn encode_value(bytes: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some("base64"),
        ),
    }
}

/// Decodes a value from its wire string and optional `encoding`.
pub(crate) fn decode_value(value: String, encoding: Option<&str>) -> Result<Vec<u8>> {
    match encoding {
        None | Some("utf-8") | Some("utf8") => Ok(value.into_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .map_err(|e| Error::Decode(format!("bad base64 value: {e}"))),
        Some(other) => Err(Error::Decode(format!("unknown value encoding {other:?}"))),
    }
}

/// A KeyValue as it travels.
#[derive(Debug, Deserialize)]
pub(crate) struct WireKeyValue {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    create_revision: u64,
    #[serde(default)]
    mod_revision: u64,
    #[serde(default)]
    version: u64,
}

impl TryFrom<WireKeyValue> for KeyValue {
    type Error = Error;

    fn try_from(w: WireKeyValue) -> Result<Self> {
        Ok(KeyValue {
            value: decode_value(w.value, w.encoding.as_deref())?,
            key: w.key,
            create_revision: w.create_revision,
            mod_revision: w.mod_revision,
            version: w.version,
        })
    }
}

pub(crate) fn decode_kvs(kvs: Vec<WireKeyValue>) -> Result<Vec<KeyValue>> {
    kvs.into_iter().map(KeyValue::try_from).collect()
}

fn decode_opt(kv: Option<WireKeyValue>) -> Result<Option<KeyValue>> {
    kv.map(KeyValue::try_from).transpose()
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireGet {
    revision: Option<u64>,
    kv: Option<WireKeyValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRange {
    revision: Option<u64>,
    #[serde(default)]
    kvs: Vec<WireKeyValue>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WirePut {
    revision: Option<u64>,
    prev_kv: Option<WireKeyValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireDelete {
    revision: Option<u64>,
    #[serde(default)]
    deleted: u64,
    #[serde(default)]
    prev_kvs: Vec<WireKeyValue>,
}

/// The revision from the body, else from the `X-Ballast-Revision` header.
fn revision(body: Option<u64>, header: Option<u64>) -> Result<u64> {
    body.or(header)
        .ok_or_else(|| Error::Decode("response carries no revision".to_owned()))
}

impl WireGet {
    pub(crate) fn into_response(self, header_rev: Option<u64>) -> Result<GetResponse> {
        Ok(GetResponse {
            revision: revision(self.revision, header_rev)?,
            kv: decode_opt(self.kv)?,
        })
    }
}

impl WireRange {
    pub(crate) fn into_response(self, header_rev: Option<u64>) -> Result<RangeResponse> {
        Ok(RangeResponse {
            revision: revision(self.revision, header_rev)?,
            kvs: decode_kvs(self.kvs)?,
            more: self.more,
        })
    }
}

impl WirePut {
    pub(crate) fn into_response(self, header_rev: Option<u64>) -> Result<PutResponse> {
        Ok(PutResponse {
            revision: revision(self.revision, header_rev)?,
            prev_kv: decode_opt(self.prev_kv)?,
        })
    }
}

impl WireDelete {
    pub(crate) fn into_response(self, header_rev: Option<u64>) -> Result<DeleteResponse> {
        Ok(DeleteResponse {
            revision: revision(self.revision, header_rev)?,
            deleted: self.deleted,
            prev_kvs: decode_kvs(self.prev_kvs)?,
        })
    }
}

/// The error document: `{"error": {"code", "message", "leader"?}, "revision"?}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireErrorDoc {
    pub(crate) error: WireError,
    #[serde(default)]
    pub(crate) revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireError {
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) leader: Option<WireLeader>,
}

/// The leader hint on a 503; only the address matters to the client (the id is
/// ignored, like any other extra field).
#[derive(Debug, Deserialize)]
pub(crate) struct WireLeader {
    #[serde(default)]
    pub(crate) client_addr: Option<String>,
}

#[cfg(test)]
#[path = "types_test.rs"]
mod tests;
