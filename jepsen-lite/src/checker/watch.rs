//! The watch checker: the six watch guarantees (ordered, unique, reliable,
//! atomic, resumable, bookmarkable) of every watcher's deliveries against
//! the writers' history, and agreement between watchers.
//!
//! Input is what the watch workload records: the writes (key, value,
//! revision, ok or indeterminate) and, per watcher, every SSE message in
//! arrival order, grouped in sessions (one per connection; a reconnect
//! resumes at `start_revision` = last delivered revision + 1, as
//! `Last-Event-ID` does). The server side is not on main yet, so this
//! checker is exercised on synthetic histories only (see the tests).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::stream::{self, EventFault, Known, Order};
use super::Verdict;

/// One event inside a change message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `put` or `delete`.
    pub kind: String,
    /// Key.
    pub key: String,
    /// Value (puts).
    pub value: Option<String>,
    /// The kv's mod_revision (must equal the message's revision).
    pub mod_revision: u64,
}

/// One SSE message as a watcher received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Message {
    /// `event: change`: every event of one revision.
    Change {
        /// Revision (`id:`).
        revision: u64,
        /// Events.
        events: Vec<WatchEvent>,
    },
    /// `event: progress`: everything up to `revision` was delivered.
    Progress {
        /// Bookmark revision.
        revision: u64,
    },
    /// `event: compacted`: the start revision is gone; the stream ends.
    Compacted {
        /// Compact revision.
        compact_revision: u64,
    },
}

/// One connection of a watcher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// `start_revision` asked for.
    pub start_revision: u64,
    /// Messages in arrival order.
    pub messages: Vec<Message>,
}

/// A watcher: its sessions in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Watcher {
    /// Name (e.g. `w2@node3`).
    pub name: String,
    /// Sessions.
    pub sessions: Vec<Session>,
}

/// A write under the watched prefix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Write {
    /// Key.
    pub key: String,
    /// Unique value.
    pub value: String,
    /// Revision, when the write was acknowledged.
    pub revision: Option<u64>,
}

/// A violated watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum WatchError {
    /// Ordered: revisions must increase along a watcher's stream.
    #[error("{watcher}: unordered: revision {revision} delivered after {after}")]
    Unordered {
        /// Watcher.
        watcher: String,
        /// Revision delivered.
        revision: u64,
        /// The higher revision delivered before it.
        after: u64,
    },
    /// Unique: no revision twice, across resumptions too.
    #[error("{watcher}: duplicate: revision {revision} delivered twice")]
    Duplicate {
        /// Watcher.
        watcher: String,
        /// Revision.
        revision: u64,
    },
    /// Reliable: no revision missing inside a session's window.
    #[error("{watcher}: gap: revision {revision} was never delivered (delivered up to {up_to})")]
    Gap {
        /// Watcher.
        watcher: String,
        /// Missing revision.
        revision: u64,
        /// Highest revision the watcher had delivered.
        up_to: u64,
    },
    /// Atomic: one message per revision, holding exactly that revision's events.
    #[error("{watcher}: not atomic: revision {revision}: {detail}")]
    NotAtomic {
        /// Watcher.
        watcher: String,
        /// Revision.
        revision: u64,
        /// What was wrong.
        detail: String,
    },
    /// Resumable: a session resumed at S must start exactly at the first
    /// existing revision ≥ S.
    #[error("{watcher}: not resumable: resumed at {start}, first delivered {first}, but revision {missing} exists")]
    NotResumable {
        /// Watcher.
        watcher: String,
        /// start_revision.
        start: u64,
        /// First revision the session delivered.
        first: u64,
        /// A revision in between that exists.
        missing: u64,
    },
    /// Bookmarkable: a progress bookmark R means every revision ≤ R was
    /// delivered before it.
    #[error("{watcher}: bookmark {bookmark} sent before revision {missing} was delivered")]
    EarlyBookmark {
        /// Watcher.
        watcher: String,
        /// Bookmark revision.
        bookmark: u64,
        /// Revision ≤ bookmark not delivered before it.
        missing: u64,
    },
    /// Events must match the writes (a delivered value nobody wrote, or at
    /// another revision than its acknowledged write).
    #[error("{watcher}: wrong event at revision {revision}: {detail}")]
    WrongEvent {
        /// Watcher.
        watcher: String,
        /// Revision.
        revision: u64,
        /// What was wrong.
        detail: String,
    },
    /// All watchers must see the same events at the same revision.
    #[error("watchers {a} and {b} disagree at revision {revision}")]
    Divergent {
        /// A watcher.
        a: String,
        /// Another.
        b: String,
        /// Revision.
        revision: u64,
    },
}

/// Checks every watcher against the writes and against each other. With
/// `final_revision`, every watcher must also have covered (delivered or
/// bookmarked) every revision up to it: the writers had stopped and the
/// faults were healed, so a watcher short of it lost events.
pub fn check(
    writes: &[Write],
    watchers: &[Watcher],
    final_revision: Option<u64>,
) -> Verdict<WatchError> {
    let mut errors = Vec::new();
    let changes = || {
        watchers.iter().flat_map(|w| {
            w.sessions
                .iter()
                .flat_map(|s| &s.messages)
                .filter_map(move |m| match m {
                    Message::Change { revision, events } => Some((w, *revision, events)),
                    _ => None,
                })
        })
    };
    // Every revision known to exist under the prefix: acknowledged writes,
    // and whatever any watcher delivered (indeterminate writes that happened).
    let known = Known::new(writes, changes().map(|(_, revision, _)| revision));
    // The events of each revision, as first delivered, for agreement.
    let mut first_seen: BTreeMap<u64, (String, Vec<WatchEvent>)> = BTreeMap::new();
    for (w, revision, events) in changes() {
        match first_seen.get(&revision) {
            None => {
                first_seen.insert(revision, (w.name.clone(), events.clone()));
            }
            Some((a, ev)) if ev != events && a != &w.name => {
                errors.push(WatchError::Divergent {
                    a: a.clone(),
                    b: w.name.clone(),
                    revision,
                });
            }
            _ => {}
        }
    }
    for w in watchers {
        let name = &w.name;
        let mut delivered: BTreeSet<u64> = BTreeSet::new();
        for s in &w.sessions {
            let mut first_in_session: Option<u64> = None;
            let mut session_last = s.start_revision.saturating_sub(1);
            let mut bookmarked = 0u64;
            for m in &s.messages {
                match m {
                    Message::Change { revision, events } => {
                        let r = *revision;
                        match stream::order(&delivered, r) {
                            // The revision again, right after itself in one session.
                            Some(Order::Repeated)
                                if first_in_session.is_some() && session_last == r =>
                            {
                                errors.push(WatchError::NotAtomic {
                                    watcher: name.clone(),
                                    revision: r,
                                    detail: "revision split over two messages".into(),
                                })
                            }
                            Some(Order::Repeated) => errors.push(WatchError::Duplicate {
                                watcher: name.clone(),
                                revision: r,
                            }),
                            Some(Order::Unordered { after }) => {
                                errors.push(WatchError::Unordered {
                                    watcher: name.clone(),
                                    revision: r,
                                    after,
                                })
                            }
                            None => {}
                        }
                        for fault in known.event_faults(r, events) {
                            let (watcher, revision) = (name.clone(), r);
                            errors.push(match fault {
                                EventFault::Empty => WatchError::NotAtomic {
                                    watcher,
                                    revision,
                                    detail: "empty change message".into(),
                                },
                                EventFault::Misplaced(detail) => WatchError::NotAtomic {
                                    watcher,
                                    revision,
                                    detail,
                                },
                                EventFault::NotWritten(detail) => WatchError::WrongEvent {
                                    watcher,
                                    revision,
                                    detail,
                                },
                            });
                        }
                        // Resumable: nothing existing between the start and the first delivery.
                        if first_in_session.is_none() {
                            first_in_session = Some(r);
                            if let Some(missing) = known.existing(s.start_revision, r).next() {
                                errors.push(WatchError::NotResumable {
                                    watcher: name.clone(),
                                    start: s.start_revision,
                                    first: r,
                                    missing,
                                });
                            }
                        } else if let Some(missing) = known.existing(session_last + 1, r).next() {
                            // Reliable: nothing existing skipped inside a session.
                            if !delivered.contains(&missing) {
                                errors.push(WatchError::Gap {
                                    watcher: name.clone(),
                                    revision: missing,
                                    up_to: session_last,
                                });
                            }
                        }
                        delivered.insert(r);
                        session_last = session_last.max(r);
                    }
                    Message::Progress { revision } => {
                        // A lagging node may bookmark below the session's
                        // start: nothing to check then. Each revision is
                        // checked against the first bookmark that covers it.
                        let lo = s.start_revision.max(bookmarked + 1);
                        let hi = revision.saturating_add(1);
                        bookmarked = bookmarked.max(*revision);
                        if let Some(missing) =
                            known.existing(lo, hi).find(|r| !delivered.contains(r))
                        {
                            errors.push(WatchError::EarlyBookmark {
                                watcher: name.clone(),
                                bookmark: *revision,
                                missing,
                            });
                        }
                        session_last = session_last.max(*revision);
                    }
                    // The stream ends; the next session starts where the
                    // watcher chose (after re-reading), so nothing to check.
                    Message::Compacted { .. } => {}
                }
            }
        }
    }
    if let Some(f) = final_revision {
        for w in watchers {
            let covered = w
                .sessions
                .iter()
                .flat_map(|s| &s.messages)
                .filter_map(|m| match m {
                    Message::Change { revision, .. } | Message::Progress { revision } => {
                        Some(*revision)
                    }
                    Message::Compacted { .. } => None,
                })
                .max()
                .unwrap_or(0);
            if covered < f {
                let missing = known.existing(covered + 1, f + 1).next().unwrap_or(f);
                errors.push(WatchError::Gap {
                    watcher: w.name.clone(),
                    revision: missing,
                    up_to: covered,
                });
            }
        }
    }
    if errors.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail { errors }
    }
}

#[cfg(test)]
#[path = "watch_test.rs"]
mod tests;
