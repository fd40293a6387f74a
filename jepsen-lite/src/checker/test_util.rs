//! Builders and readers the checkers' tests share.

use serde::Serialize;

use super::watch::{WatchEvent, Write};
use super::Verdict;

/// A write of `value` to `key`, acknowledged at `rev` (`None`:
/// indeterminate).
pub(super) fn write(key: &str, value: &str, rev: Option<u64>) -> Write {
    Write {
        key: key.into(),
        value: value.into(),
        revision: rev,
    }
}

/// The events of a change that puts `value` at `key` at revision `rev`.
pub(super) fn put(rev: u64, key: &str, value: &str) -> Vec<WatchEvent> {
    vec![WatchEvent {
        kind: "put".into(),
        key: key.into(),
        value: Some(value.into()),
        mod_revision: rev,
    }]
}

/// The names (`error` tags) of a verdict's errors, in order; none for a
/// pass.
pub(super) fn error_names<E: Serialize>(v: &Verdict<E>) -> Vec<String> {
    match v {
        Verdict::Fail { errors } => errors
            .iter()
            .map(|e| {
                serde_json::to_value(e).expect("json")["error"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect(),
        _ => Vec::new(),
    }
}
