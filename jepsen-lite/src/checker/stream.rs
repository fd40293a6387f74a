//! What the watch and replica checkers share: both judge streams of
//! per-revision changes (a watcher's deliveries, a replica's applied
//! updates) against the writers' history. Each checker turns the faults
//! found here into its own named errors.

use std::collections::{BTreeSet, HashMap};

use super::watch::{WatchEvent, Write};

/// The writers' history as the stream checks need it: the writes by
/// (key, value), and every revision known to exist under the prefix.
pub(super) struct Known<'a> {
    by_value: HashMap<(&'a str, &'a str), &'a Write>,
    exists: BTreeSet<u64>,
}

impl<'a> Known<'a> {
    /// From the writes and the revision of every change any stream carried:
    /// a revision exists when a write was acknowledged at it, or when a
    /// stream carried it (an indeterminate write that happened).
    pub(super) fn new(writes: &'a [Write], carried: impl IntoIterator<Item = u64>) -> Self {
        let by_value = writes
            .iter()
            .map(|w| ((w.key.as_str(), w.value.as_str()), w))
            .collect();
        let mut exists: BTreeSet<u64> = writes.iter().filter_map(|w| w.revision).collect();
        exists.extend(carried);
        Known { by_value, exists }
    }

    /// The existing revisions in `lo..hi`, in order (none when `lo >= hi`).
    pub(super) fn existing(&self, lo: u64, hi: u64) -> impl Iterator<Item = u64> + '_ {
        self.exists.range(lo..hi.max(lo)).copied()
    }

    /// What is wrong with the events a stream carried for revision `rev`,
    /// in the order found.
    pub(super) fn event_faults(&self, rev: u64, events: &[WatchEvent]) -> Vec<EventFault> {
        let mut faults = Vec::new();
        if events.is_empty() {
            faults.push(EventFault::Empty);
        }
        for e in events {
            if e.mod_revision != rev {
                faults.push(EventFault::Misplaced(format!(
                    "event of {} carries mod_revision {}",
                    e.key, e.mod_revision
                )));
            }
            if e.kind != "put" {
                continue;
            }
            match e
                .value
                .as_deref()
                .and_then(|v| self.by_value.get(&(e.key.as_str(), v)))
            {
                None => faults.push(EventFault::NotWritten(format!(
                    "{}={:?} was never written",
                    e.key, e.value
                ))),
                Some(w) if w.revision.is_some_and(|w| w != rev) => {
                    faults.push(EventFault::NotWritten(format!(
                        "{}={:?} was acknowledged at revision {:?}",
                        e.key, e.value, w.revision
                    )))
                }
                Some(_) => {}
            }
        }
        faults
    }
}

/// A fault of one revision's events.
pub(super) enum EventFault {
    /// No event at all.
    Empty,
    /// An event whose mod_revision is not the revision (the detail says
    /// which).
    Misplaced(String),
    /// A put of a value nobody wrote, or that was acknowledged at another
    /// revision (the detail says which).
    NotWritten(String),
}

/// Where a revision stands in a stream against the revisions the stream
/// carried before it.
pub(super) enum Order {
    /// Carried before.
    Repeated,
    /// Below `after`, the highest carried before.
    Unordered {
        /// The highest revision carried before.
        after: u64,
    },
}

/// Whether `rev`, carried after the revisions of `seen`, breaks the
/// stream's order: `None` when it is new and above all of them.
pub(super) fn order(seen: &BTreeSet<u64>, rev: u64) -> Option<Order> {
    let last = seen.last().copied().unwrap_or(0);
    if seen.contains(&rev) {
        Some(Order::Repeated)
    } else if rev < last {
        Some(Order::Unordered { after: last })
    } else {
        None
    }
}
