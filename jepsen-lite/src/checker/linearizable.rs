//! Wing & Gong / Lowe linearizability search with memoization, as in
//! Porcupine and Knossos: operations are entries of a doubly linked list of
//! call and return events in time order; the search linearizes a call whose
//! step is legal, lifts it out of the list, and backtracks when it meets a
//! return whose call is not yet linearized. A configuration (set of
//! linearized operations as a bitset, model state) is visited at most once.
//!
//! Operations with an unknown outcome carry `ret = u64::MAX`: they may be
//! linearized anywhere after their call, including after everything else
//! (which is how "it never took effect" is expressed for a write).
//!
//! The memo stores a 128-bit fingerprint of the linearized set (two Zobrist
//! hashes, updated in O(1) per step) with the state, instead of the bitset
//! itself: a step then costs O(1) instead of O(n/64) and 24 bytes of memory
//! instead of n/8, which is what makes 100,000 operations on a single key
//! tractable. Two different sets sharing a fingerprint (probability about
//! visited² / 2¹²⁹) would prune a branch, which could only turn a pass into a
//! spurious violation, never hide one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::Model;

/// One operation of a partition.
#[derive(Clone, Debug)]
pub struct LinOp<O> {
    /// Caller's id for the operation (index into its own table).
    pub id: usize,
    /// Call time.
    pub call: u64,
    /// Return time; `u64::MAX` when unknown.
    pub ret: u64,
    /// Operation and observed output.
    pub op: O,
}

/// Outcome of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchResult<S> {
    /// A linearization exists.
    Linearizable,
    /// None exists. The deepest partial linearization the search reached,
    /// and the operation it could not get past.
    Illegal {
        /// Length of the longest linearizable prefix found.
        prefix_len: usize,
        /// Caller ids of that prefix's last operations (at most 8).
        prefix_tail: Vec<usize>,
        /// Model state after that prefix.
        state: S,
        /// Caller id of the operation whose return was reached without being
        /// able to linearize it.
        stuck: usize,
    },
    /// The time limit, the memo size limit or cancellation stopped the
    /// search: unknown.
    Timeout,
}

const NIL: usize = usize::MAX;

/// Operations of the longest prefix kept for the report.
const PREFIX_TAIL: usize = 8;

/// Most configurations the memo holds before the search gives up (unknown):
/// 24 bytes each plus table overhead, about 2 GiB at the limit.
const MAX_MEMO: usize = 60_000_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Searches for a linearization of `ops` under `model`, giving up (→
/// [`SearchResult::Timeout`]) at `deadline` or when `cancel` is set.
pub fn check<M: Model>(
    model: &M,
    ops: &[LinOp<M::Op>],
    deadline: Instant,
    cancel: &AtomicBool,
) -> SearchResult<M::State> {
    let n = ops.len();
    if n == 0 {
        return SearchResult::Linearizable;
    }
    // Entries 0..n are calls, n..2n returns; 2n is the head sentinel.
    let mut order: Vec<usize> = (0..2 * n).collect();
    let key = |e: usize| -> (u64, u8) {
        if e < n {
            (ops[e].call, 0)
        } else {
            (ops[e - n].ret, 1)
        }
    };
    // Ties: calls before returns, so operations touching in time count as
    // concurrent (the lenient reading of equal timestamps).
    order.sort_by_key(|&e| key(e));
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    let zob: Vec<(u64, u64)> = (0..n as u64)
        .map(|i| (splitmix(i), splitmix(i ^ 0x5555_5555_5555_5555)))
        .collect();
    let mut lin_hash = (0u64, 0u64);
    let mut cache: HashSet<(u64, u64, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = next[head];
    let mut best_depth = 0usize;
    let mut best: Option<(Vec<usize>, M::State, usize)> = None;
    let mut iterations = 0u64;

    while next[head] != NIL {
        iterations += 1;
        if iterations.is_multiple_of(4096)
            && (Instant::now() >= deadline || cancel.load(Ordering::Relaxed))
        {
            return SearchResult::Timeout;
        }
        if entry < n {
            let id = entry;
            let mut advanced = false;
            if let Some(new_state) = model.step(&state, &ops[id].op) {
                let new_hash = (lin_hash.0 ^ zob[id].0, lin_hash.1 ^ zob[id].1);
                if cache.insert((new_hash.0, new_hash.1, new_state.clone())) {
                    if cache.len() > MAX_MEMO {
                        return SearchResult::Timeout;
                    }
                    calls.push((id, state));
                    state = new_state;
                    lin_hash = new_hash;
                    // lift
                    let m = id + n;
                    next[prev[id]] = next[id];
                    prev[next[id]] = prev[id];
                    next[prev[m]] = next[m];
                    if next[m] != NIL {
                        prev[next[m]] = prev[m];
                    }
                    entry = next[head];
                    advanced = true;
                }
            }
            if !advanced {
                entry = next[entry];
            }
        } else {
            // A return whose call is not linearized: backtrack.
            if calls.len() >= best_depth {
                best_depth = calls.len();
                // Only the tail of the prefix: copying all of it here would
                // make long searches quadratic.
                let tail = calls.len().saturating_sub(PREFIX_TAIL);
                best = Some((
                    calls[tail..].iter().map(|(c, _)| ops[*c].id).collect(),
                    state.clone(),
                    ops[entry - n].id,
                ));
            }
            let Some((id, old_state)) = calls.pop() else {
                let (prefix_tail, state, stuck) =
                    best.unwrap_or((Vec::new(), state, ops[entry - n].id));
                return SearchResult::Illegal {
                    prefix_len: best_depth,
                    prefix_tail,
                    state,
                    stuck,
                };
            };
            state = old_state;
            lin_hash = (lin_hash.0 ^ zob[id].0, lin_hash.1 ^ zob[id].1);
            // unlift
            let m = id + n;
            next[prev[m]] = m;
            if next[m] != NIL {
                prev[next[m]] = m;
            }
            next[prev[id]] = id;
            prev[next[id]] = id;
            entry = next[id];
        }
    }
    SearchResult::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::register::{Register, RegisterOp, ABSENT};
    use std::time::Duration;

    fn op(id: usize, call: u64, ret: u64, op: RegisterOp) -> LinOp<RegisterOp> {
        LinOp { id, call, ret, op }
    }

    fn run(ops: &[LinOp<RegisterOp>]) -> SearchResult<u32> {
        let cancel = AtomicBool::new(false);
        check(
            &Register,
            ops,
            Instant::now() + Duration::from_secs(10),
            &cancel,
        )
    }

    #[test]
    fn sequential_good() {
        let ops = vec![
            op(0, 0, 1, RegisterOp::Read { observed: ABSENT }),
            op(1, 2, 3, RegisterOp::Write { value: 1 }),
            op(2, 4, 5, RegisterOp::Read { observed: 1 }),
            op(
                3,
                6,
                7,
                RegisterOp::CasOk {
                    expected: 1,
                    value: 2,
                },
            ),
            op(
                4,
                8,
                9,
                RegisterOp::CasFail {
                    expected: 1,
                    observed: 2,
                },
            ),
        ];
        assert_eq!(run(&ops), SearchResult::Linearizable);
    }

    #[test]
    fn concurrent_good() {
        // Write 1 and write 2 overlap; reads see 2 then 1: legal if 2 before 1.
        let ops = vec![
            op(0, 0, 10, RegisterOp::Write { value: 1 }),
            op(1, 0, 10, RegisterOp::Write { value: 2 }),
            op(2, 1, 3, RegisterOp::Read { observed: 2 }),
            op(3, 4, 12, RegisterOp::Read { observed: 1 }),
        ];
        assert_eq!(run(&ops), SearchResult::Linearizable);
    }

    #[test]
    fn stale_read_is_illegal() {
        let ops = vec![
            op(0, 0, 1, RegisterOp::Write { value: 1 }),
            op(1, 2, 3, RegisterOp::Write { value: 2 }),
            op(2, 4, 5, RegisterOp::Read { observed: 1 }),
        ];
        match run(&ops) {
            SearchResult::Illegal { stuck, .. } => assert_eq!(stuck, 2),
            other => panic!("expected illegal, got {other:?}"),
        }
    }

    #[test]
    fn read_flip_flop_is_illegal() {
        // Concurrent writes, but two sequential reads see 1, 2, then 1 again.
        let ops = vec![
            op(0, 0, 100, RegisterOp::Write { value: 1 }),
            op(1, 0, 100, RegisterOp::Write { value: 2 }),
            op(2, 1, 2, RegisterOp::Read { observed: 1 }),
            op(3, 3, 4, RegisterOp::Read { observed: 2 }),
            op(4, 5, 6, RegisterOp::Read { observed: 1 }),
        ];
        assert!(matches!(run(&ops), SearchResult::Illegal { .. }));
    }

    #[test]
    fn indeterminate_write_may_take_effect_late() {
        // The write of 2 timed out (ret = MAX); a read long after sees it.
        let ops = vec![
            op(0, 0, 1, RegisterOp::Write { value: 1 }),
            op(1, 2, u64::MAX, RegisterOp::Write { value: 2 }),
            op(2, 50, 51, RegisterOp::Read { observed: 1 }),
            op(3, 100, 101, RegisterOp::Read { observed: 2 }),
        ];
        assert_eq!(run(&ops), SearchResult::Linearizable);
    }

    #[test]
    fn indeterminate_write_may_never_take_effect() {
        let ops = vec![
            op(0, 0, 1, RegisterOp::Write { value: 1 }),
            op(1, 2, u64::MAX, RegisterOp::Write { value: 2 }),
            op(2, 50, 51, RegisterOp::Read { observed: 1 }),
        ];
        assert_eq!(run(&ops), SearchResult::Linearizable);
    }

    #[test]
    fn indeterminate_write_cannot_precede_its_call() {
        let ops = vec![
            op(0, 0, 1, RegisterOp::Write { value: 1 }),
            op(1, 2, 3, RegisterOp::Read { observed: 2 }),
            op(2, 10, u64::MAX, RegisterOp::Write { value: 2 }),
        ];
        assert!(matches!(run(&ops), SearchResult::Illegal { .. }));
    }

    #[test]
    fn timeout_is_reported() {
        let ops = vec![op(0, 0, 1, RegisterOp::Write { value: 1 }); 5000]
            .into_iter()
            .enumerate()
            .map(|(i, mut o)| {
                o.id = i;
                o
            })
            .collect::<Vec<_>>();
        let cancel = AtomicBool::new(true);
        assert_eq!(
            check(
                &Register,
                &ops,
                Instant::now() + Duration::from_secs(10),
                &cancel
            ),
            SearchResult::Timeout
        );
    }
}
