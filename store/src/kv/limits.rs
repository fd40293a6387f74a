//! Input limits and the validation every command passes before it is proposed.
//!
//! Validation happens on the node that receives the request, before the
//! command enters the Raft log, so nothing invalid is ever replicated.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::error::KvError;
use super::types::{AuthCommand, Command, SessionOp, TxnOp, TxnRequest};

/// Size limits for keys, values and transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most compares, and most ops in one branch, of a transaction.
    pub max_txn_ops: usize,
}

/// Default key limit: etcd-compatible keys are short paths.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
/// Default value limit, 1.5 MiB as in etcd.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;
/// Default transaction size limit, as in etcd.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// The highest `--max-value-bytes` a node accepts (64 MiB).
pub const MAX_VALUE_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// What a request may carry on top of one maximum-size value: its key, a
/// transaction's other fields and small values, and encoding overhead.
pub const REQUEST_SLACK_BYTES: usize = 64 * 1024;
/// Encoding overhead counted per key, value and op when a command's size is
/// bounded (postcard lengths and tags take far less).
const PER_FIELD_OVERHEAD_BYTES: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

impl Limits {
    /// The most bytes one request (a put, or a whole transaction) may carry,
    /// and so the most one command may take in the Raft log: one
    /// maximum-size value plus [`REQUEST_SLACK_BYTES`]. As in etcd, the
    /// limit covers the whole request, not each value of a transaction. The
    /// HTTP body limit and the peer frame caps are derived from it.
    pub fn max_request_bytes(&self) -> usize {
        self.max_value_bytes.saturating_add(REQUEST_SLACK_BYTES)
    }

    /// Checks a key used as an exact key: non-empty, within the limit, no NUL.
    pub fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("the key is empty".into()));
        }
        self.check_prefix(key)
    }

    /// Checks a key used as a prefix: like a key, but may be empty (everything).
    pub fn check_prefix(&self, key: &str) -> Result<(), KvError> {
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        if key.contains('\0') {
            return Err(KvError::InvalidKey(
                "the key contains a NUL character".into(),
            ));
        }
        Ok(())
    }

    fn check_key_or_prefix(&self, key: &str, prefix: bool) -> Result<(), KvError> {
        if prefix {
            self.check_prefix(key)
        } else {
            self.check_key(key)
        }
    }

    /// Checks a value's size.
    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a whole command before it is proposed.
    pub fn check_command(&self, command: &Command) -> Result<(), KvError> {
        let size = command_bytes(command);
        if size > self.max_request_bytes() {
            return Err(KvError::RequestTooLarge {
                len: size,
                max: self.max_request_bytes(),
            });
        }
        match command {
            Command::Put { key, value, .. } => {
                self.check_key(key)?;
                self.check_value(value)
            }
            Command::Delete { key, prefix, .. } => self.check_key_or_prefix(key, *prefix),
            Command::Txn(txn) => self.check_txn(txn),
            Command::Compact { .. } => Ok(()),
            Command::Auth(a) => check_auth(a),
            Command::Alarm(_) => Ok(()),
            Command::Session(s) => match &s.op {
                SessionOp::Register => Ok(()),
                SessionOp::Write {
                    seq,
                    acked_below,
                    command,
                    ..
                } => {
                    if *seq == 0 {
                        return Err(KvError::InvalidRequest(
                            "a session's sequence numbers start at 1".into(),
                        ));
                    }
                    if acked_below > seq {
                        return Err(KvError::InvalidRequest(format!(
                            "acked_below {acked_below} is above the write's own sequence \
                             number {seq}: a write cannot be acknowledged before its answer"
                        )));
                    }
                    match **command {
                        Command::Put { .. } | Command::Delete { .. } | Command::Txn(_) => {
                            self.check_command(command)
                        }
                        Command::Compact { .. }
                        | Command::Session(_)
                        | Command::Auth(_)
                        | Command::Alarm(_) => Err(KvError::InvalidRequest(
                            "only puts, deletes and transactions are session writes".into(),
                        )),
                    }
                }
            },
        }
    }

    fn check_txn(&self, txn: &TxnRequest) -> Result<(), KvError> {
        if txn.compare.len() > self.max_txn_ops {
            return Err(KvError::TooManyOps {
                what: "compares",
                count: txn.compare.len(),
                max: self.max_txn_ops,
            });
        }
        for compare in &txn.compare {
            self.check_key(&compare.key)?;
            if let super::types::CompareTarget::Value(v) = &compare.target {
                self.check_value(v)?;
            }
        }
        for branch in [&txn.success, &txn.failure] {
            if branch.len() > self.max_txn_ops {
                return Err(KvError::TooManyOps {
                    what: "ops in one branch",
                    count: branch.len(),
                    max: self.max_txn_ops,
                });
            }
            self.check_branch(branch)?;
        }
        Ok(())
    }

    /// A branch may not write one key twice (a put and a delete covering the
    /// same key included): one revision holds at most one event per key.
    fn check_branch(&self, ops: &[TxnOp]) -> Result<(), KvError> {
        let mut put_keys = BTreeSet::new();
        let mut deletes: Vec<(&str, bool)> = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                    if !put_keys.insert(key.as_str()) {
                        return Err(KvError::InvalidRequest(format!(
                            "key {key:?} is written twice in one transaction branch"
                        )));
                    }
                }
                TxnOp::Delete { key, prefix } => {
                    self.check_key_or_prefix(key, *prefix)?;
                    deletes.push((key.as_str(), *prefix));
                }
                TxnOp::Get { key, prefix } => self.check_key_or_prefix(key, *prefix)?,
            }
        }
        for (del, prefix) in &deletes {
            let overlaps = |k: &&&str| {
                if *prefix {
                    k.starts_with(del)
                } else {
                    **k == *del
                }
            };
            if let Some(k) = put_keys.iter().find(overlaps) {
                return Err(KvError::InvalidRequest(format!(
                    "key {k:?} is both put and deleted in one transaction branch"
                )));
            }
        }
        Ok(())
    }
}

/// Checks an auth command's names and prefixes.
fn check_auth(command: &AuthCommand) -> Result<(), KvError> {
    use super::auth::{valid_role_name, MAX_ROLE_PREFIXES};
    let bad_name = |name: &str| {
        KvError::InvalidRequest(format!(
            "role name {name:?} must be 1 to {} ASCII letters, digits, '-', '_' or '.'",
            super::auth::MAX_ROLE_NAME_BYTES
        ))
    };
    match command {
        AuthCommand::PutRole(role) => {
            if !valid_role_name(&role.name) {
                return Err(bad_name(&role.name));
            }
            if role.prefixes.len() > MAX_ROLE_PREFIXES {
                return Err(KvError::InvalidRequest(format!(
                    "a role has at most {MAX_ROLE_PREFIXES} prefixes"
                )));
            }
            Ok(())
        }
        AuthCommand::DeleteRole { name } => {
            if valid_role_name(name) {
                Ok(())
            } else {
                Err(bad_name(name))
            }
        }
        AuthCommand::Enable { admin: t } | AuthCommand::CreateToken(t) => {
            if valid_role_name(&t.role) {
                Ok(())
            } else {
                Err(bad_name(&t.role))
            }
        }
        AuthCommand::RevokeToken { .. } => Ok(()),
    }
}

/// An upper bound of the bytes `command` takes when encoded: its keys and
/// values plus a fixed overhead per field.
pub fn command_bytes(command: &Command) -> usize {
    let field = |bytes: usize| bytes + PER_FIELD_OVERHEAD_BYTES;
    let op = |op: &TxnOp| match op {
        TxnOp::Put { key, value } => field(key.len()) + field(value.len()),
        TxnOp::Delete { key, .. } | TxnOp::Get { key, .. } => field(key.len()),
    };
    match command {
        Command::Put { key, value, .. } => field(key.len()) + field(value.len()),
        Command::Delete { key, .. } => field(key.len()),
        Command::Txn(txn) => {
            let compares: usize = txn
                .compare
                .iter()
                .map(|c| {
                    let operand = match &c.target {
                        super::types::CompareTarget::Value(v) => v.len(),
                        _ => 0,
                    };
                    field(c.key.len()) + field(operand)
                })
                .sum();
            let ops: usize = txn.success.iter().chain(&txn.failure).map(op).sum();
            field(compares + ops)
        }
        Command::Compact { .. } => field(0),
        // A member id and a kind.
        Command::Alarm(_) => field(16),
        Command::Auth(a) => match a {
            AuthCommand::PutRole(r) => {
                field(r.name.len()) + r.prefixes.iter().map(|p| field(p.len())).sum::<usize>()
            }
            AuthCommand::DeleteRole { name } => field(name.len()),
            AuthCommand::RevokeToken { id } => field(id.len()),
            AuthCommand::Enable { admin: t } | AuthCommand::CreateToken(t) => {
                field(t.id.len()) + field(t.role.len()) + field(32 + 16)
            }
        },
        // The client id, the stamp and the sequence numbers.
        Command::Session(s) => {
            field(64)
                + match &s.op {
                    SessionOp::Register => 0,
                    SessionOp::Write { command, .. } => command_bytes(command),
                }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let l = Limits {
            max_key_bytes: 4,
            ..Limits::default()
        };
        assert!(l.check_key("abcd").is_ok());
        assert!(matches!(l.check_key(""), Err(KvError::InvalidKey(_))));
        assert!(l.check_prefix("").is_ok());
        assert!(matches!(
            l.check_key("abcde"),
            Err(KvError::KeyTooLarge { len: 5, max: 4 })
        ));
        assert!(matches!(l.check_key("a\0"), Err(KvError::InvalidKey(_))));
    }

    #[test]
    fn txn_branch_conflicts_are_refused() {
        let l = Limits::default();
        let put = |k: &str| TxnOp::Put {
            key: k.into(),
            value: vec![],
        };
        let txn = |ops: Vec<TxnOp>| {
            Command::Txn(TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
        };
        assert!(l.check_command(&txn(vec![put("a"), put("b")])).is_ok());
        assert!(l.check_command(&txn(vec![put("a"), put("a")])).is_err());
        let del_prefix = TxnOp::Delete {
            key: "a/".into(),
            prefix: true,
        };
        assert!(l
            .check_command(&txn(vec![put("a/x"), del_prefix.clone()]))
            .is_err());
        assert!(l.check_command(&txn(vec![put("b/x"), del_prefix])).is_ok());
        let big = |k: &str| TxnOp::Put {
            key: k.into(),
            value: vec![0; DEFAULT_MAX_VALUE_BYTES],
        };
        assert!(l.check_command(&txn(vec![big("a")])).is_ok());
        assert!(matches!(
            l.check_command(&txn(vec![big("a"), big("b")])),
            Err(KvError::RequestTooLarge { .. })
        ));
        let many = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(
            l.check_command(&txn(many)),
            Err(KvError::TooManyOps { .. })
        ));
    }
}
