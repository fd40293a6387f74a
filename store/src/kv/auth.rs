//! Tokens and roles: the replicated table that decides who may do what on
//! the client API.
//!
//! Auth state changes only through the Raft log ([`AuthCommand`]), applied
//! by every node's state machine into the `auth` column family and into an
//! in-memory [`AuthTable`] shared with the HTTP layer. Checking a token is
//! therefore a local lookup on every node, and a revoked token stops working
//! on each node as soon as that node applies the revocation.
//!
//! A token is a 256-bit secret from the OS random number generator, shown
//! once when it is created (`bal_` + base64url). Only its SHA-256 is stored
//! and replicated: the secret never enters the log, a snapshot or a backup.
//! Lookup goes through the first bytes of the hash, and the whole hash is
//! then compared in constant time ([`subtle`]).
//!
//! Roles: `admin` (everything, including membership, backups, compaction and
//! auth management), `writer` (reads and writes under its prefixes) and
//! `reader` (reads and watches under its prefixes). The built-in roles named
//! `admin`, `writer` and `reader` cover every key; custom roles name a kind
//! and a list of key prefixes.
//!
//! Rows of the `auth` column family, by their first key byte:
//! - `0`: the [`AuthMeta`] row (whether auth is enforced);
//! - `1` + role name: a custom [`Role`];
//! - `2` + token id: a [`TokenRecord`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::types::{
    AuthCommand, AuthOutcome, AuthRefusal, Command, Role, RoleKind, TokenRecord, TxnOp,
};
use crate::codec;
use crate::db::{cf, io_err, CF_AUTH};

/// What every token starts with, so that leaked tokens are easy to find.
pub const TOKEN_PREFIX: &str = "bal_";
/// Random bytes in a token secret.
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Random bytes in a token id (shown in `list`, used to revoke).
const TOKEN_ID_BYTES: usize = 8;
/// Bytes of the hash the in-memory index is keyed by.
const INDEX_BYTES: usize = 8;
/// Longest role name.
pub const MAX_ROLE_NAME_BYTES: usize = 64;
/// Most prefixes in one role.
pub const MAX_ROLE_PREFIXES: usize = 64;
/// The names of the built-in roles; they cannot be created or deleted.
pub const BUILTIN_ROLES: [&str; 3] = ["admin", "writer", "reader"];

const META_TAG: u8 = 0;
const ROLE_TAG: u8 = 1;
const TOKEN_TAG: u8 = 2;

/// The `auth` column family's meta row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMeta {
    /// Whether the client API checks tokens. Set once, by the bootstrap
    /// entry of a cluster started with `--auth`.
    pub enabled: bool,
}

/// A freshly generated token: the secret to hand out once, and the record
/// to replicate.
pub struct NewToken {
    /// The secret (`bal_...`). Never logged, never stored.
    pub secret: String,
    /// What is stored: the id, the role and the secret's hash.
    pub record: TokenRecord,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("secret", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// The SHA-256 of a token secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Generates a token for `role`, created at `now_ms`, expiring at
/// `expires_ms` if given.
pub fn generate_token(role: &str, now_ms: u64, expires_ms: Option<u64>) -> NewToken {
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(random_bytes::<TOKEN_SECRET_BYTES>())
    );
    let id: String = random_bytes::<TOKEN_ID_BYTES>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let record = TokenRecord {
        id,
        hash: hash_secret(&secret),
        role: role.to_owned(),
        created_ms: now_ms,
        expires_ms,
    };
    NewToken { secret, record }
}

/// Whether `name` is a valid role name: 1 to [`MAX_ROLE_NAME_BYTES`] of
/// ASCII letters, digits, `-`, `_` and `.`.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROLE_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The built-in role named `name`, if it is one.
pub fn builtin_role(name: &str) -> Option<Role> {
    let kind = match name {
        "admin" => RoleKind::Admin,
        "writer" => RoleKind::Writer,
        "reader" => RoleKind::Reader,
        _ => return None,
    };
    Some(Role {
        name: name.to_owned(),
        kind,
        prefixes: vec![String::new()],
    })
}

/// What a request needs of a key or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read or watch.
    Read,
    /// Put or delete.
    Write,
}

/// Who a request comes from once its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Auth is off: everything is allowed.
    Anyone,
    /// The holder of a known token.
    Token {
        /// The token's id (never the secret).
        id: String,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// Whether this principal may do admin operations.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Anyone => true,
            Principal::Token { role, .. } => role.kind == RoleKind::Admin,
        }
    }

    fn grants(&self, access: Access) -> Option<&[String]> {
        match self {
            Principal::Anyone => None,
            Principal::Token { role, .. } => match (role.kind, access) {
                (RoleKind::Admin, _) => None,
                (RoleKind::Writer, _) | (RoleKind::Reader, Access::Read) => Some(&role.prefixes),
                (RoleKind::Reader, Access::Write) => Some(&[]),
            },
        }
    }

    /// Whether `access` to `key`, or to every key under the prefix `key`,
    /// is allowed: the key, or the whole prefix, must lie under one of the
    /// role's prefixes.
    pub fn allows(&self, access: Access, key: &str) -> bool {
        // A prefix `p` lies under a grant `g` when `p` starts with `g`: then
        // every key starting with `p` starts with `g` too. A single key is
        // the same test.
        match self.grants(access) {
            None => true,
            Some(grants) => grants.iter().any(|g| key.starts_with(g.as_str())),
        }
    }

    /// Whether every key a write command reads or writes is allowed: each
    /// compare and each op of both branches of a transaction, and the write
    /// inside a session command. Compaction and auth commands need admin.
    pub fn allows_command(&self, command: &Command) -> bool {
        match command {
            Command::Put { key, .. } => self.allows(Access::Write, key),
            Command::Delete { key, .. } => self.allows(Access::Write, key),
            Command::Txn(txn) => {
                txn.compare
                    .iter()
                    .all(|c| self.allows(Access::Read, &c.key))
                    && txn.success.iter().chain(&txn.failure).all(|op| match op {
                        TxnOp::Put { key, .. } => self.allows(Access::Write, key),
                        TxnOp::Delete { key, .. } => self.allows(Access::Write, key),
                        TxnOp::Get { key, .. } => self.allows(Access::Read, key),
                    })
            }
            Command::Session(s) => match &s.op {
                super::types::SessionOp::Register => self.can_write_somewhere(),
                super::types::SessionOp::Write { command, .. } => self.allows_command(command),
            },
            Command::Compact { .. } | Command::Auth(_) | Command::Alarm(_) => self.is_admin(),
        }
    }

    /// Whether this principal may write at all (sessions only serve writes).
    pub fn can_write_somewhere(&self) -> bool {
        self.grants(Access::Write).is_none_or(|g| !g.is_empty())
    }

    /// The token id, for logs (never the secret).
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Principal::Anyone => None,
            Principal::Token { id, .. } => Some(id),
        }
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// No token matches (never existed, revoked, or mistyped).
    Unknown,
    /// The token expired.
    Expired,
}

/// The auth table (see the module docs): custom roles, token records and
/// the index from hash to token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthTable {
    meta: AuthMeta,
    roles: BTreeMap<String, Role>,
    tokens: BTreeMap<String, TokenRecord>,
    /// First bytes of the hash → ids of the tokens with that hash prefix.
    index: HashMap<[u8; INDEX_BYTES], Vec<String>>,
}

/// The table as the state machine and the HTTP layer share it.
pub type SharedAuth = Arc<RwLock<AuthTable>>;

fn index_key(hash: &[u8; 32]) -> [u8; INDEX_BYTES] {
    let mut k = [0u8; INDEX_BYTES];
    k.copy_from_slice(&hash[..INDEX_BYTES]);
    k
}

fn role_key(name: &str) -> Vec<u8> {
    let mut k = vec![ROLE_TAG];
    k.extend_from_slice(name.as_bytes());
    k
}

fn token_key(id: &str) -> Vec<u8> {
    let mut k = vec![TOKEN_TAG];
    k.extend_from_slice(id.as_bytes());
    k
}

/// A change to one row of the `auth` column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// Set the row.
    Put(Vec<u8>, Vec<u8>),
    /// Remove the row.
    Delete(Vec<u8>),
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl AuthTable {
    /// Whether the client API checks tokens.
    pub fn enabled(&self) -> bool {
        self.meta.enabled
    }

    /// The role named `name`: built-in or custom.
    pub fn role(&self, name: &str) -> Option<Role> {
        builtin_role(name).or_else(|| self.roles.get(name).cloned())
    }

    /// Custom roles, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// Token records, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Checks a bearer token at `now_ms`: a local lookup, with the full hash
    /// compared in constant time.
    pub fn check(&self, secret: &str, now_ms: u64) -> Result<Principal, TokenRejection> {
        let hash = hash_secret(secret);
        let ids = self
            .index
            .get(&index_key(&hash))
            .ok_or(TokenRejection::Unknown)?;
        let record = ids
            .iter()
            .filter_map(|id| self.tokens.get(id))
            .find(|r| bool::from(r.hash.ct_eq(&hash)))
            .ok_or(TokenRejection::Unknown)?;
        if record.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(TokenRejection::Expired);
        }
        let role = self.role(&record.role).ok_or(TokenRejection::Unknown)?;
        Ok(Principal::Token {
            id: record.id.clone(),
            role,
        })
    }

    /// Whether the token `id` still works at `now_ms` (not revoked, not
    /// expired): long-lived requests (watch streams) ask again as they go.
    pub fn still_valid(&self, id: &str, now_ms: u64) -> bool {
        self.tokens
            .get(id)
            .is_some_and(|r| r.expires_ms.is_none_or(|e| now_ms < e))
    }

    fn insert_token(&mut self, record: TokenRecord, rows: &mut Vec<RowOp>) -> io::Result<()> {
        rows.push(RowOp::Put(token_key(&record.id), codec::encode(&record)?));
        self.index
            .entry(index_key(&record.hash))
            .or_default()
            .push(record.id.clone());
        self.tokens.insert(record.id.clone(), record);
        Ok(())
    }

    fn remove_token(&mut self, id: &str, rows: &mut Vec<RowOp>) -> bool {
        let Some(record) = self.tokens.remove(id) else {
            return false;
        };
        let k = index_key(&record.hash);
        if let Some(ids) = self.index.get_mut(&k) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.index.remove(&k);
            }
        }
        rows.push(RowOp::Delete(token_key(id)));
        true
    }

    /// Applies one auth command; the rows to store go to `rows`, written in
    /// the same batch as the rest of the entry's changes. Refusals are
    /// outcomes, not errors (an error would stop Raft).
    pub fn apply(
        &mut self,
        command: &AuthCommand,
        rows: &mut Vec<RowOp>,
    ) -> io::Result<AuthOutcome> {
        use AuthRefusal::*;
        let refused = |r| Ok(AuthOutcome::Refused(r));
        match command {
            AuthCommand::Enable { admin } => {
                if self.meta.enabled {
                    // A retried bootstrap entry finds its own token.
                    return match self.tokens.get(&admin.id) {
                        Some(r) if r.hash == admin.hash => Ok(AuthOutcome::Done),
                        _ => refused(AlreadyEnabled),
                    };
                }
                if admin.role != "admin" || self.tokens.contains_key(&admin.id) {
                    return refused(InvalidCommand);
                }
                self.meta.enabled = true;
                rows.push(RowOp::Put(vec![META_TAG], codec::encode(&self.meta)?));
                self.insert_token(admin.clone(), rows)?;
                Ok(AuthOutcome::Done)
            }
            AuthCommand::PutRole(role) => {
                if builtin_role(&role.name).is_some() {
                    return refused(BuiltinRole);
                }
                if !valid_role_name(&role.name) || role.prefixes.len() > MAX_ROLE_PREFIXES {
                    return refused(InvalidCommand);
                }
                if self.roles.contains_key(&role.name) {
                    return refused(RoleExists);
                }
                rows.push(RowOp::Put(role_key(&role.name), codec::encode(role)?));
                self.roles.insert(role.name.clone(), role.clone());
                Ok(AuthOutcome::Done)
            }
            AuthCommand::DeleteRole { name } => {
                if builtin_role(name).is_some() {
                    return refused(BuiltinRole);
                }
                if !self.roles.contains_key(name) {
                    return refused(UnknownRole);
                }
                if self.tokens.values().any(|t| &t.role == name) {
                    return refused(RoleInUse);
                }
                self.roles.remove(name);
                rows.push(RowOp::Delete(role_key(name)));
                Ok(AuthOutcome::Done)
            }
            AuthCommand::CreateToken(record) => {
                if self.role(&record.role).is_none() {
                    return refused(UnknownRole);
                }
                if self.tokens.contains_key(&record.id) {
                    return refused(TokenExists);
                }
                self.insert_token(record.clone(), rows)?;
                Ok(AuthOutcome::Done)
            }
            AuthCommand::RevokeToken { id } => {
                if self.remove_token(id, rows) {
                    Ok(AuthOutcome::Done)
                } else {
                    refused(UnknownToken)
                }
            }
        }
    }

    /// Rebuilds a table from the rows of the `auth` column family.
    pub fn from_rows(
        rows: impl IntoIterator<Item = io::Result<(Box<[u8]>, Box<[u8]>)>>,
    ) -> io::Result<Self> {
        let mut table = AuthTable::default();
        let mut ignored = Vec::new();
        for row in rows {
            let (key, value) = row?;
            match key.first() {
                Some(&META_TAG) if key.len() == 1 => table.meta = codec::decode(&value)?,
                Some(&ROLE_TAG) => {
                    let role: Role = codec::decode(&value)?;
                    table.roles.insert(role.name.clone(), role);
                }
                Some(&TOKEN_TAG) => {
                    let record: TokenRecord = codec::decode(&value)?;
                    table.insert_token(record, &mut ignored)?;
                }
                _ => return Err(invalid_data("malformed key in the auth column family")),
            }
        }
        Ok(table)
    }
}

/// Reads the table from the `auth` column family of `db`.
pub fn load_table(db: &DB) -> io::Result<AuthTable> {
    let handle = cf(db, CF_AUTH)?;
    AuthTable::from_rows(
        db.iterator_cf(handle, IteratorMode::Start)
            .map(|r| r.map_err(io_err)),
    )
}

/// Applies `command` to the shared table and adds its rows to `batch`.
pub fn apply_command(
    table: &SharedAuth,
    db: &DB,
    batch: &mut WriteBatch,
    command: &AuthCommand,
) -> io::Result<AuthOutcome> {
    let mut rows = Vec::new();
    let outcome = {
        let mut t = table
            .write()
            .map_err(|_| io::Error::other("the auth table lock is poisoned"))?;
        t.apply(command, &mut rows)?
    };
    let handle = cf(db, CF_AUTH)?;
    for row in rows {
        match row {
            RowOp::Put(k, v) => batch.put_cf(handle, k, v),
            RowOp::Delete(k) => batch.delete_cf(handle, k),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
