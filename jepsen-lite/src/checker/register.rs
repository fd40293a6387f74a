//! The register checker: per-key partitioning of a register history, the
//! indeterminate-write pre-pass, per-key metadata checks (`version`,
//! `mod_revision`) and the linearizability search of every key in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::linearizable::{self, LinOp, SearchResult};
use super::Verdict;
use crate::history::{Event, EventType, Func, Observed};
use crate::model::register::{Register, RegisterOp, ValueId, ABSENT};

/// A violated register guarantee. One variant per guarantee.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RegisterError {
    /// No linearization of the key's operations exists.
    #[error("key {key}: not linearizable: operation {stuck} cannot be linearized after a prefix of {prefix_len} operations (register then held {state:?})")]
    NonLinearizable {
        /// Key.
        key: String,
        /// Index (in [`CompletedOp`] order) of the operation the search got stuck on.
        stuck: usize,
        /// Length of the longest linearizable prefix found.
        prefix_len: usize,
        /// Indices of that prefix's last operations (at most 8).
        prefix_tail: Vec<usize>,
        /// Value the register held after the prefix (`None`: absent).
        state: Option<String>,
    },
    /// A read began after an operation that wrote or observed a newer
    /// `mod_revision` of the key had completed, and returned an older one.
    #[error("key {key}: stale read: operation {read} returned mod_revision {got}, but operation {witness} had already completed at mod_revision {newer}")]
    StaleRead {
        /// Key.
        key: String,
        /// The stale read.
        read: usize,
        /// mod_revision it returned (0: key absent).
        got: u64,
        /// The operation that completed earlier with a newer revision.
        witness: usize,
        /// That revision.
        newer: u64,
    },
    /// One value was reported with different metadata, or two different
    /// values with the same version or mod_revision.
    #[error("key {key}: inconsistent metadata: {detail}")]
    MetadataMismatch {
        /// Key.
        key: String,
        /// What disagreed.
        detail: String,
    },
    /// A read reported a mod_revision for a value other than the revision its
    /// acknowledged write returned.
    #[error("key {key}: value {value:?} written at revision {written} but read with mod_revision {read_as}")]
    ModRevisionMismatch {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Revision the write's response reported.
        written: u64,
        /// mod_revision a read reported.
        read_as: u64,
    },
    /// Versions and mod_revisions of a key are not ordered alike.
    #[error("key {key}: version order disagrees with mod_revision order: {detail}")]
    VersionOrder {
        /// Key.
        key: String,
        /// The two values involved.
        detail: String,
    },
    /// A read returned a value no operation ever tried to write.
    #[error("key {key}: read of value {value:?} that was never written")]
    PhantomValue {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
}

/// An invoke paired with its completion.
#[derive(Clone, Debug, Serialize)]
pub struct CompletedOp {
    /// Process.
    pub process: u64,
    /// Function.
    pub f: Func,
    /// Key.
    pub key: String,
    /// ok / fail / info (info also when the run ended first).
    pub kind: EventType,
    /// Value written (write, cas).
    pub value: Option<String>,
    /// Value compared (cas).
    pub expected: Option<String>,
    /// What was read (ok read; failed cas).
    pub read: Option<Observed>,
    /// Whether the cas compare held.
    pub succeeded: Option<bool>,
    /// Revision in the response.
    pub revision: Option<u64>,
    /// Node.
    pub node: Option<u64>,
    /// Invoke time.
    pub call: u64,
    /// Completion time; `u64::MAX` when unknown.
    pub ret: u64,
}

/// Pairs invokes with their completions (per process, in order).
pub fn complete(history: &[Event]) -> Vec<CompletedOp> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<CompletedOp> = Vec::new();
    for e in history {
        if e.f == Func::Nemesis {
            continue;
        }
        match e.kind {
            EventType::Invoke => {
                open.insert(e.process, out.len());
                out.push(CompletedOp {
                    process: e.process,
                    f: e.f,
                    key: e.key.clone(),
                    kind: EventType::Info,
                    value: e.value.clone(),
                    expected: e.expected.clone(),
                    read: None,
                    succeeded: None,
                    revision: None,
                    node: e.node,
                    call: e.time,
                    ret: u64::MAX,
                });
            }
            kind => {
                if let Some(i) = open.remove(&e.process) {
                    let op = &mut out[i];
                    op.kind = kind;
                    if kind != EventType::Info {
                        op.ret = e.time;
                    }
                    op.read = e.read.clone();
                    op.succeeded = e.succeeded;
                    op.revision = e.revision;
                }
            }
        }
    }
    out
}

/// Result of checking one key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyResult {
    /// Key.
    pub key: String,
    /// Operations of the key that went into the search.
    pub searched: usize,
    /// Verdict.
    pub verdict: Verdict<RegisterError>,
}

/// Result of the register checker.
#[derive(Clone, Debug, Serialize)]
pub struct RegisterReport {
    /// Paired operations (indices in errors refer to this list).
    #[serde(skip)]
    pub ops: Vec<CompletedOp>,
    /// Per-key results.
    pub keys: Vec<KeyResult>,
    /// Overall verdict.
    pub verdict: Verdict<RegisterError>,
    /// Checker wall time, milliseconds.
    pub elapsed_ms: u128,
}

/// Checks a register history, every key in parallel, within `limit`.
pub fn check(history: &[Event], limit: Duration) -> RegisterReport {
    let started = Instant::now();
    let ops = complete(history);
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.clone()).or_default().push(i);
    }
    let deadline = started + limit;
    let cancel = AtomicBool::new(false);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let keys: Vec<(String, Vec<usize>)> = by_key.into_iter().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<KeyResult>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers.min(keys.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, idx)) = keys.get(i) else { break };
                let r = check_key(key, idx, &ops, deadline, &cancel);
                results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    let mut keys = results.into_inner().unwrap_or_else(|p| p.into_inner());
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    for k in &keys {
        match &k.verdict {
            Verdict::Pass => {}
            Verdict::Fail { errors: e } => errors.extend(e.iter().cloned()),
            Verdict::Unknown { reason } => unknown.push(format!("{}: {reason}", k.key)),
        }
    }
    // The search's verdicts first, then the more specific witnesses.
    errors.sort_by_key(|e| !matches!(e, RegisterError::NonLinearizable { .. }));
    let verdict = if !errors.is_empty() {
        Verdict::Fail { errors }
    } else if !unknown.is_empty() {
        Verdict::Unknown {
            reason: unknown.join("; "),
        }
    } else {
        Verdict::Pass
    };
    RegisterReport {
        ops,
        keys,
        verdict,
        elapsed_ms: started.elapsed().as_millis(),
    }
}

fn check_key(
    key: &str,
    idx: &[usize],
    ops: &[CompletedOp],
    deadline: Instant,
    cancel: &AtomicBool,
) -> KeyResult {
    let mut errors = metadata_checks(key, idx, ops);
    let lin = prepare(idx, ops);
    let searched = lin.ops.len();
    let mut unknown = None;
    match linearizable::check(&Register, &lin.ops, deadline, cancel) {
        SearchResult::Linearizable => {}
        SearchResult::Illegal {
            prefix_len,
            prefix_tail,
            state,
            stuck,
        } => errors.push(RegisterError::NonLinearizable {
            key: key.to_string(),
            stuck,
            prefix_len,
            prefix_tail,
            state: lin.name(state),
        }),
        SearchResult::Timeout => {
            unknown = Some("linearizability search hit its time or memory limit".to_string())
        }
    }
    let verdict = if !errors.is_empty() {
        Verdict::Fail { errors }
    } else if let Some(reason) = unknown {
        Verdict::Unknown { reason }
    } else {
        Verdict::Pass
    };
    KeyResult {
        key: key.to_string(),
        searched,
        verdict,
    }
}

struct Prepared {
    ops: Vec<LinOp<RegisterOp>>,
    names: Vec<String>,
}

impl Prepared {
    fn name(&self, v: ValueId) -> Option<String> {
        (v != ABSENT).then(|| self.names[v as usize].clone())
    }
}

/// The pre-pass: failed ops and unfinished reads are dropped; indeterminate
/// writes and CASes nobody observed are dropped (they may have taken effect,
/// but nothing depends on it); observed ones are known to have taken effect
/// and their return is capped at the first observer's completion.
fn prepare(idx: &[usize], ops: &[CompletedOp]) -> Prepared {
    let mut names: Vec<String> = vec![String::new()];
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let mut intern = |v: &str| -> ValueId {
        if let Some(&id) = ids.get(v) {
            return id;
        }
        let id = ValueId::try_from(names.len()).unwrap_or(ValueId::MAX);
        names.push(v.to_string());
        ids.insert(v.to_string(), id);
        id
    };
    // Earliest completion of an ok operation that observed each value.
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut note = |v: &str, t: u64| {
        let e = first_seen.entry(v.to_string()).or_insert(t);
        *e = (*e).min(t);
    };
    for &i in idx {
        let op = &ops[i];
        if op.kind != EventType::Ok {
            continue;
        }
        if let Some(r) = &op.read {
            note(&r.value, op.ret);
        }
        if op.f == Func::Cas && op.succeeded == Some(true) {
            if let Some(e) = &op.expected {
                note(e, op.ret);
            }
        }
    }
    // An info CAS observed by someone took effect, so its expected value was
    // there too: propagate until nothing changes.
    loop {
        let mut changed = false;
        for &i in idx {
            let op = &ops[i];
            if op.f == Func::Cas && op.kind == EventType::Info {
                if let (Some(v), Some(e)) = (&op.value, &op.expected) {
                    if let Some(&t) = first_seen.get(v) {
                        if first_seen.get(e).is_none_or(|&te| te > t) {
                            first_seen.insert(e.clone(), t);
                            changed = true;
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut lin = Vec::new();
    for &i in idx {
        let op = &ops[i];
        let read_id = |intern: &mut dyn FnMut(&str) -> ValueId| {
            op.read.as_ref().map_or(ABSENT, |r| intern(&r.value))
        };
        let (call, ret, rop) = match (op.f, op.kind) {
            (_, EventType::Fail) => continue,
            (Func::Read, EventType::Ok) => (
                op.call,
                op.ret,
                RegisterOp::Read {
                    observed: read_id(&mut intern),
                },
            ),
            (Func::Read, _) => continue,
            (Func::Write, kind) => {
                let Some(v) = &op.value else { continue };
                let ret = if kind == EventType::Ok {
                    op.ret
                } else {
                    match first_seen.get(v) {
                        Some(&t) => t.max(op.call),
                        None => continue,
                    }
                };
                (op.call, ret, RegisterOp::Write { value: intern(v) })
            }
            (Func::Cas, kind) => {
                let (Some(v), Some(e)) = (&op.value, &op.expected) else {
                    continue;
                };
                if kind == EventType::Ok {
                    if op.succeeded == Some(true) {
                        (
                            op.call,
                            op.ret,
                            RegisterOp::CasOk {
                                expected: intern(e),
                                value: intern(v),
                            },
                        )
                    } else {
                        let observed = read_id(&mut intern);
                        (
                            op.call,
                            op.ret,
                            RegisterOp::CasFail {
                                expected: intern(e),
                                observed,
                            },
                        )
                    }
                } else {
                    match first_seen.get(v) {
                        Some(&t) => (
                            op.call,
                            t.max(op.call),
                            RegisterOp::CasOk {
                                expected: intern(e),
                                value: intern(v),
                            },
                        ),
                        None => continue,
                    }
                }
            }
            (Func::Nemesis, _) => continue,
        };
        lin.push(LinOp {
            id: i,
            call,
            ret,
            op: rop,
        });
    }
    Prepared { ops: lin, names }
}

/// Per-key checks of `version` and `mod_revision`, independent of the search.
fn metadata_checks(key: &str, idx: &[usize], ops: &[CompletedOp]) -> Vec<RegisterError> {
    let mut errors = Vec::new();
    let k = key.to_string();
    let mut written: HashMap<&str, Option<u64>> = HashMap::new();
    for &i in idx {
        let op = &ops[i];
        if let Some(v) = &op.value {
            let rev = (op.kind == EventType::Ok && op.succeeded != Some(false))
                .then_some(op.revision)
                .flatten();
            written.insert(v.as_str(), rev);
        }
    }
    // value -> (version, mod_revision, create_revision), first report.
    let mut meta: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    let mut reported_phantom: HashSet<&str> = HashSet::new();
    for &i in idx {
        let op = &ops[i];
        if op.kind != EventType::Ok {
            continue;
        }
        let Some(r) = &op.read else { continue };
        let m = (r.version, r.mod_revision, r.create_revision);
        match written.get(r.value.as_str()) {
            None if reported_phantom.insert(r.value.as_str()) => {
                errors.push(RegisterError::PhantomValue {
                    key: k.clone(),
                    value: r.value.clone(),
                });
            }
            Some(Some(rev)) if *rev != r.mod_revision => {
                errors.push(RegisterError::ModRevisionMismatch {
                    key: k.clone(),
                    value: r.value.clone(),
                    written: *rev,
                    read_as: r.mod_revision,
                });
            }
            _ => {}
        }
        match meta.get(r.value.as_str()) {
            Some(old) if *old != m => errors.push(RegisterError::MetadataMismatch {
                key: k.clone(),
                detail: format!(
                    "value {:?} read as (version, mod_revision, create_revision) {old:?} and {m:?}",
                    r.value
                ),
            }),
            _ => {
                meta.insert(r.value.as_str(), m);
            }
        }
    }
    // Versions and mod_revisions must order the values alike, with no ties.
    let mut by_version: Vec<(&str, (u64, u64, u64))> = meta.iter().map(|(v, m)| (*v, *m)).collect();
    by_version.sort_by_key(|(_, m)| (m.0, m.1));
    for w in by_version.windows(2) {
        let ((va, a), (vb, b)) = (w[0], w[1]);
        if a.0 == b.0 || a.1 >= b.1 {
            errors.push(RegisterError::VersionOrder {
                key: k.clone(),
                detail: format!("{va:?} has (version {}, mod_revision {}), {vb:?} has (version {}, mod_revision {})", a.0, a.1, b.0, b.1),
            });
        }
        if a.2 != b.2 {
            errors.push(RegisterError::MetadataMismatch {
                key: k.clone(),
                detail: format!(
                    "create_revision {} for {va:?} but {} for {vb:?} (the key is never deleted)",
                    a.2, b.2
                ),
            });
        }
    }
    // Real-time order: a read that starts after an operation completed at
    // revision R must not return an older mod_revision.
    let mut completions: Vec<(u64, u64, usize)> = Vec::new(); // (ret, rev, op)
    let mut reads: Vec<(u64, u64, usize)> = Vec::new(); // (call, mod_rev, op)
    for &i in idx {
        let op = &ops[i];
        if op.kind != EventType::Ok {
            continue;
        }
        let observed = op.read.as_ref().map_or(0, |r| r.mod_revision);
        match op.f {
            Func::Read => {
                reads.push((op.call, observed, i));
                completions.push((op.ret, observed, i));
            }
            Func::Write => {
                if let Some(r) = op.revision {
                    completions.push((op.ret, r, i));
                }
            }
            Func::Cas if op.succeeded == Some(true) => {
                if let Some(r) = op.revision {
                    completions.push((op.ret, r, i));
                }
            }
            Func::Cas => {
                reads.push((op.call, observed, i));
                completions.push((op.ret, observed, i));
            }
            Func::Nemesis => {}
        }
    }
    completions.sort_unstable();
    reads.sort_unstable();
    let mut best: (u64, usize) = (0, usize::MAX);
    let mut c = 0;
    let mut stale = 0;
    for &(call, got, read) in &reads {
        while c < completions.len() && completions[c].0 < call {
            if completions[c].1 > best.0 {
                best = (completions[c].1, completions[c].2);
            }
            c += 1;
        }
        if got < best.0 {
            stale += 1;
            // Report the first few; the search reports the rest as one error.
            if stale <= 5 {
                errors.push(RegisterError::StaleRead {
                    key: k.clone(),
                    read,
                    got,
                    witness: best.1,
                    newer: best.0,
                });
            }
        }
    }
    errors
}

#[cfg(test)]
#[path = "register_test.rs"]
mod tests;
