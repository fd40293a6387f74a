//! Run reports: the summary every run prints, and the HTML timeline written
//! when a checker finds a violation.

pub mod timeline;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Event, EventType, Func};

/// Operation counts of a history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Client operations.
    pub ops: u64,
    /// Completed ok.
    pub ok: u64,
    /// Definitely failed.
    pub fail: u64,
    /// Indeterminate (including operations unfinished at the end).
    pub info: u64,
    /// ok counts per function.
    pub ok_by_f: BTreeMap<String, u64>,
}

/// Counts a history's client operations.
pub fn count(history: &[Event]) -> Counts {
    let mut c = Counts::default();
    for e in history {
        if e.f == Func::Nemesis {
            continue;
        }
        match e.kind {
            EventType::Invoke => c.ops += 1,
            EventType::Ok => {
                c.ok += 1;
                *c.ok_by_f
                    .entry(format!("{:?}", e.f).to_lowercase())
                    .or_default() += 1;
            }
            EventType::Fail => c.fail += 1,
            EventType::Info => c.info += 1,
        }
    }
    // Invocations without a completion are indeterminate.
    c.info = c.ops.saturating_sub(c.ok + c.fail);
    c
}
