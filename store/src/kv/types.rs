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
    /// A command of a client session (exactly-once writes, see
    /// `kv::sessions`): the registration of a session, or a write
    /// the state machine applies at most once per (client, sequence number).
    Session(SessionCommand),
    /// A change to the tokens and roles (see `kv::auth`).
    Auth(AuthCommand),
    /// Raises or disarms an alarm (see `kv::alarms`).
    Alarm(crate::kv::alarms::AlarmCommand),
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
            Command::Session(s) => match &s.op {
                SessionOp::Register => write!(f, "register({:032x})", s.client),
                SessionOp::Write {
                    session,
                    seq,
                    command,
                    ..
                } => write!(
                    f,
                    "session({:032x}/{session}, seq {seq}, {command})",
                    s.client
                ),
            },
            // Ids and names only: a token's hash is not printed either.
            Command::Auth(a) => match a {
                AuthCommand::Enable { admin } => write!(f, "auth-enable({})", admin.id),
                AuthCommand::PutRole(r) => write!(f, "auth-role-put({})", r.name),
                AuthCommand::DeleteRole { name } => write!(f, "auth-role-delete({name})"),
                AuthCommand::CreateToken(t) => write!(f, "auth-token-create({}, {})", t.id, t.role),
                AuthCommand::RevokeToken { id } => write!(f, "auth-token-revoke({id})"),
            },
            Command::Alarm(a) => write!(f, "{a}"),
        }
    }
}

/// A change to the replicated tokens and roles ([`crate::kv::auth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Turns auth on, with the first admin token: the bootstrap entry of a
    /// cluster started with `--auth`. Refused once auth is on (unless it is
    /// the same entry again).
    Enable {
        /// The initial admin token.
        admin: TokenRecord,
    },
    /// Creates a custom role.
    PutRole(Role),
    /// Deletes a custom role no token uses.
    DeleteRole {
        /// The role.
        name: String,
    },
    /// Adds a token.
    CreateToken(TokenRecord),
    /// Removes a token: it stops working on each node as the node applies
    /// this.
    RevokeToken {
        /// The token's id.
        id: String,
    },
}

/// What a role may do with the keys under its prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    /// Everything: every key, membership, backups, compaction and auth.
    Admin,
    /// Reads and writes under the role's prefixes.
    Writer,
    /// Reads and watches under the role's prefixes.
    Reader,
}

/// A named role: a kind and the key prefixes it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// What it may do.
    pub kind: RoleKind,
    /// Key prefixes it may do it under (`""` is every key; ignored for
    /// admin).
    pub prefixes: Vec<String>,
}

/// A token as stored: never the secret, only its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Random id, shown in listings and used to revoke.
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// The role's name.
    pub role: String,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it stops working, ms since the Unix epoch.
    pub expires_ms: Option<u64>,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// The result of an [`AuthCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOutcome {
    /// Applied.
    Done,
    /// Not applied, and why.
    Refused(AuthRefusal),
}

/// Why an [`AuthCommand`] was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRefusal {
    /// Auth is already on, with another initial token.
    AlreadyEnabled,
    /// No such role.
    UnknownRole,
    /// No such token.
    UnknownToken,
    /// A role of that name exists.
    RoleExists,
    /// A token of that id exists.
    TokenExists,
    /// Tokens still use the role.
    RoleInUse,
    /// Built-in roles cannot be created or deleted.
    BuiltinRole,
    /// The command is malformed (validation normally refuses it first).
    InvalidCommand,
}

/// A command of a client session, with the leader's stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCommand {
    /// The client's id: random, 128 bits, one per client instance.
    pub client: u128,
    /// The time and table bounds the state machine applies this command
    /// with. Carried in the entry, so every node decides expiry and eviction
    /// alike; the leader sets it when it proposes.
    pub stamp: SessionStamp,
    /// What the command does.
    pub op: SessionOp,
}

/// What a [`SessionCommand`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Opens a session for the client, or names the one it has. Answered
    /// with [`CommandResponse::Registered`].
    Register,
    /// A write of a session: applied unless this sequence number was already
    /// applied (its first result is returned again) or can no longer be
    /// told apart from one that was ([`CommandResponse::SessionExpired`]).
    Write {
        /// The session, as registration named it.
        session: u64,
        /// The write's sequence number in the client, from 1.
        seq: u64,
        /// Every sequence number below this one has been answered: the
        /// client never sends them again, so their results may be forgotten.
        acked_below: u64,
        /// The write: a put, a delete or a transaction.
        command: Box<Command>,
    },
}

/// The leader's clock and the bounds of the session table, stamped into a
/// [`SessionCommand`] when it is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStamp {
    /// The leader's wall clock, milliseconds since the Unix epoch. The table
    /// keeps the largest stamp it has seen as its clock, so a leader whose
    /// clock is behind never turns the table's time back.
    pub now_ms: u64,
    /// The bounds in force for this command.
    pub limits: SessionLimits,
}

/// The bounds of the replicated session table (see [`crate::kv::sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Most clients with a session; registering one more evicts the least
    /// recently active.
    pub max_clients: u64,
    /// Most remembered results per client; past it the lowest sequence
    /// numbers are forgotten.
    pub max_results: u64,
    /// Most bytes of remembered results in the whole table; past it the
    /// oldest results are forgotten.
    pub max_bytes: u64,
    /// A client idle (no session command) for longer than this, by the
    /// table's clock, loses its session.
    pub ttl_ms: u64,
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
    /// Result of [`SessionOp::Register`].
    Registered {
        /// The session: the log index of the entry that opened it.
        session: u64,
    },
    /// A [`SessionOp::Write`] that was not applied: whether an earlier
    /// attempt of it was applied can no longer be known.
    SessionExpired {
        /// Why.
        reason: SessionRefusal,
    },
    /// Result of [`Command::Auth`].
    Auth(AuthOutcome),
    /// Result of [`Command::Alarm`]: the alarms it raised or disarmed
    /// (empty when nothing changed).
    Alarms(Vec<crate::kv::alarms::Alarm>),
}

/// Why a session write was refused without being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionRefusal {
    /// The session is not in the table: it expired, was evicted, was never
    /// registered, or the state was restored from a backup.
    UnknownSession,
    /// The session lives, but the sequence number is below what it still
    /// remembers results for: acknowledged by the client, or forgotten to
    /// keep the table within its bounds.
    ResultForgotten,
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
