//! The session table: replays, refusals, each bound, expiry by the stamped
//! clock, and (property tests) at most one application per sequence number,
//! determinism and the rows round trip, under random histories and bounds.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::kv::types::{SessionCommand, SessionOp, SessionStamp};

/// A key space stand-in: counts applications, answers with a new revision
/// (and a previous value of `prev_bytes` bytes, to weigh the result).
#[derive(Default)]
struct Space {
    revision: u64,
    applied: Vec<Command>,
}

impl Space {
    fn run(&mut self, command: &Command) -> io::Result<CommandResponse> {
        self.revision += 1;
        self.applied.push(command.clone());
        let prev_kv = match command {
            Command::Put { value, .. } if !value.is_empty() => Some(KeyValue {
                key: "k".into(),
                value: value.clone(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
            }),
            _ => None,
        };
        Ok(CommandResponse::Put {
            revision: self.revision,
            prev_kv,
        })
    }
}

/// A table with its rows as RocksDB would hold them.
struct Harness {
    table: SessionTable,
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
    space: Space,
    index: u64,
    limits: SessionLimits,
    now_ms: u64,
}

impl Harness {
    fn new(limits: SessionLimits) -> Self {
        Harness {
            table: SessionTable::new(),
            rows: BTreeMap::new(),
            space: Space::default(),
            index: 0,
            limits,
            now_ms: 1_000_000,
        }
    }

    fn apply(&mut self, client: u128, op: SessionOp) -> CommandResponse {
        self.index += 1;
        let command = SessionCommand {
            client,
            stamp: SessionStamp {
                now_ms: self.now_ms,
                limits: self.limits,
            },
            op,
        };
        let mut ops = Vec::new();
        let space = &mut self.space;
        let response = self
            .table
            .apply(self.index, &command, &mut ops, |c| space.run(c))
            .expect("apply");
        for op in ops {
            match op {
                RowOp::Put(k, v) => self.rows.insert(k, v),
                RowOp::Delete(k) => self.rows.remove(&k),
            };
        }
        response
    }

    fn register(&mut self, client: u128) -> u64 {
        match self.apply(client, SessionOp::Register) {
            CommandResponse::Registered { session } => session,
            other => panic!("register answered {other:?}"),
        }
    }

    fn write(
        &mut self,
        client: u128,
        session: u64,
        seq: u64,
        acked_below: u64,
        prev_bytes: usize,
    ) -> CommandResponse {
        self.apply(
            client,
            SessionOp::Write {
                session,
                seq,
                acked_below,
                command: Box::new(Command::Put {
                    key: format!("{client}/{seq}"),
                    value: vec![7; prev_bytes],
                    prev_kv: true,
                }),
            },
        )
    }

    /// The table as it would be read back from its rows.
    fn reloaded(&self) -> SessionTable {
        SessionTable::from_rows(
            self.rows
                .iter()
                .map(|(k, v)| Ok((k.clone().into_boxed_slice(), v.clone().into_boxed_slice()))),
        )
        .expect("rows decode")
    }
}

fn expired(reason: SessionRefusal) -> CommandResponse {
    CommandResponse::SessionExpired { reason }
}

#[test]
fn a_retry_of_an_applied_write_returns_its_first_result() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    let first = h.write(1, s, 1, 1, 3);
    assert!(matches!(first, CommandResponse::Put { revision: 1, .. }));
    // The same write again, as a retry after a lost answer: not applied
    // again, the same revision and previous value.
    assert_eq!(h.write(1, s, 1, 1, 3), first);
    assert_eq!(h.space.applied.len(), 1);
    // A new sequence number is a new write.
    assert!(matches!(
        h.write(1, s, 2, 1, 0),
        CommandResponse::Put { revision: 2, .. }
    ));
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn registering_again_names_the_same_session() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    assert_eq!(s, 1, "a session is the log index of its registration");
    assert_eq!(h.register(1), s);
    assert_ne!(h.register(2), s);
}

#[test]
fn an_unknown_session_is_refused_without_applying() {
    let mut h = Harness::new(SessionLimits::default());
    assert_eq!(
        h.write(1, 5, 1, 1, 0),
        expired(SessionRefusal::UnknownSession)
    );
    let s = h.register(1);
    assert_eq!(
        h.write(1, s + 1, 1, 1, 0),
        expired(SessionRefusal::UnknownSession),
        "another session of the same client"
    );
    assert!(h.space.applied.is_empty());
}

#[test]
fn acknowledged_results_are_forgotten_and_never_applied_again() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    h.write(1, s, 1, 1, 0);
    h.write(1, s, 2, 1, 0);
    assert_eq!(h.table.results(), 2);
    // Seq 3 says 1 and 2 were answered.
    h.write(1, s, 3, 3, 0);
    assert_eq!(h.table.results(), 1);
    assert_eq!(
        h.write(1, s, 1, 1, 0),
        expired(SessionRefusal::ResultForgotten)
    );
    assert_eq!(h.space.applied.len(), 3);
    // A write never acknowledges itself.
    let fourth = h.write(1, s, 4, 9, 0);
    assert_eq!(h.write(1, s, 4, 4, 0), fourth);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn past_max_results_the_lowest_sequence_numbers_are_forgotten() {
    let limits = SessionLimits {
        max_results: 3,
        ..SessionLimits::default()
    };
    let mut h = Harness::new(limits);
    let s = h.register(1);
    let answers: Vec<_> = (1..=5).map(|seq| h.write(1, s, seq, 1, 0)).collect();
    assert_eq!(h.table.results(), 3);
    for seq in 1..=2 {
        assert_eq!(
            h.write(1, s, seq, 1, 0),
            expired(SessionRefusal::ResultForgotten)
        );
    }
    for seq in 3..=5u64 {
        assert_eq!(h.write(1, s, seq, 1, 0), answers[seq as usize - 1]);
    }
    assert_eq!(h.space.applied.len(), 5);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn past_max_bytes_the_oldest_results_are_forgotten() {
    let limits = SessionLimits {
        max_bytes: 16 * 1024,
        ..SessionLimits::default()
    };
    let mut h = Harness::new(limits);
    let a = h.register(1);
    let b = h.register(2);
    // Each result holds a 500-byte previous value.
    for seq in 1..=20 {
        h.write(1, a, seq, 1, 500);
        h.write(2, b, seq, 1, 500);
        assert!(h.table.bytes() <= limits.max_bytes);
    }
    assert!(h.table.results() < 40);
    assert_eq!(
        h.write(1, a, 1, 1, 500),
        expired(SessionRefusal::ResultForgotten),
        "the oldest result went first"
    );
    assert!(matches!(
        h.write(2, b, 20, 1, 500),
        CommandResponse::Put { revision: 40, .. }
    ));
    // A result over a sixteenth of the budget is applied but not kept.
    let big = h.write(1, a, 21, 1, 2000);
    assert!(matches!(big, CommandResponse::Put { .. }));
    assert_eq!(
        h.write(1, a, 21, 1, 2000),
        expired(SessionRefusal::ResultForgotten)
    );
    assert_eq!(h.space.applied.len(), 41);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn past_max_clients_the_least_recently_active_is_evicted() {
    let limits = SessionLimits {
        max_clients: 2,
        ..SessionLimits::default()
    };
    let mut h = Harness::new(limits);
    let a = h.register(1);
    h.now_ms += 1;
    let b = h.register(2);
    h.now_ms += 1;
    h.write(1, a, 1, 1, 0);
    h.now_ms += 1;
    h.register(3);
    assert_eq!(h.table.clients(), 2);
    assert_eq!(h.table.session_of(2), None, "client 2 was the idlest");
    assert_eq!(
        h.write(2, b, 1, 1, 0),
        expired(SessionRefusal::UnknownSession)
    );
    assert!(matches!(
        h.write(1, a, 2, 1, 0),
        CommandResponse::Put { .. }
    ));
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn idle_sessions_expire_by_the_stamped_clock_which_never_goes_back() {
    let limits = SessionLimits {
        ttl_ms: 1_000,
        ..SessionLimits::default()
    };
    let mut h = Harness::new(limits);
    let start = h.now_ms;
    let a = h.register(1);
    h.now_ms = start + 600;
    h.register(2);
    // A leader with a clock behind does not turn the table's clock back.
    h.now_ms = start - 50_000;
    h.register(3);
    assert_eq!(h.table.clock_ms(), start + 600);
    assert_eq!(h.table.clients(), 3);
    // Exactly the ttl idle: still alive.
    h.now_ms = start + 1_000;
    assert!(matches!(
        h.write(1, a, 1, 1, 0),
        CommandResponse::Put { .. }
    ));
    // Client 2 (last active at start + 600) is idle for longer than the
    // ttl at start + 1_601; client 1 (start + 1_000) is not.
    h.now_ms = start + 1_601;
    h.register(4);
    assert_eq!(h.table.session_of(2), None);
    assert_eq!(h.table.session_of(3), None);
    assert!(h.table.session_of(1).is_some());
    // A session, once gone, stays gone: registering opens a new one and
    // the old one's writes are refused.
    h.now_ms = start + 10_000;
    let again = h.register(1);
    assert_ne!(again, a);
    assert_eq!(
        h.write(1, a, 1, 1, 0),
        expired(SessionRefusal::UnknownSession)
    );
    assert_eq!(h.space.applied.len(), 1);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn a_nested_session_command_does_nothing() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    let nested = SessionOp::Write {
        session: s,
        seq: 1,
        acked_below: 1,
        command: Box::new(Command::Session(SessionCommand {
            client: 1,
            stamp: SessionStamp {
                now_ms: 0,
                limits: SessionLimits::default(),
            },
            op: SessionOp::Register,
        })),
    };
    assert_eq!(h.apply(1, nested), CommandResponse::None);
    assert!(h.space.applied.is_empty());
}

#[test]
fn result_size_counts_keys_and_values() {
    let kv = KeyValue {
        key: "abc".into(),
        value: vec![0; 10],
        create_revision: 1,
        mod_revision: 1,
        version: 1,
    };
    let put = CommandResponse::Put {
        revision: 1,
        prev_kv: Some(kv.clone()),
    };
    assert_eq!(result_size(&put), RESULT_OVERHEAD_BYTES + 13 + 24);
    let txn = CommandResponse::Txn {
        succeeded: true,
        revision: 1,
        responses: vec![
            TxnOpResponse::Put { revision: 1 },
            TxnOpResponse::Get { kvs: vec![kv] },
        ],
    };
    assert_eq!(result_size(&txn), RESULT_OVERHEAD_BYTES + 8 + 8 + 13 + 24);
}

/// The rows of the `sessions` column family, by tag.
fn rows_by_tag(h: &Harness) -> BTreeMap<u8, usize> {
    let mut count = BTreeMap::new();
    for k in h.rows.keys() {
        *count.entry(k[0]).or_default() += 1;
    }
    count
}

#[test]
fn a_write_that_acknowledges_the_last_rewrites_only_its_client_row() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    h.write(1, s, 1, 1, 0);
    // The clock stands still, so the table's own row does not change: seq 2
    // remembers its result and forgets seq 1's in the client's row alone.
    h.index += 1;
    let command = SessionCommand {
        client: 1,
        stamp: SessionStamp {
            now_ms: h.now_ms,
            limits: h.limits,
        },
        op: SessionOp::Write {
            session: s,
            seq: 2,
            acked_below: 2,
            command: Box::new(Command::Put {
                key: "k".into(),
                value: b"v".to_vec(),
                prev_kv: true,
            }),
        },
    };
    let mut ops = Vec::new();
    let space = &mut h.space;
    h.table
        .apply(h.index, &command, &mut ops, |c| space.run(c))
        .expect("apply");
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(
        matches!(&ops[0], RowOp::Put(k, v) if *k == client_key(1) && v[0] == CLIENT_ROW_VERSION)
    );
    assert_eq!(h.table.results(), 1);
}

#[test]
fn large_results_and_those_past_the_inline_count_get_rows_of_their_own() {
    let mut h = Harness::new(SessionLimits::default());
    let s = h.register(1);
    // Small results, none acknowledged: the first INLINE_MAX_RESULTS go in
    // the client's row, the next in rows of their own.
    let n = INLINE_MAX_RESULTS as u64 + 3;
    let small: Vec<_> = (1..=n).map(|seq| h.write(1, s, seq, 1, 10)).collect();
    assert_eq!(rows_by_tag(&h).get(&RESULT_TAG), Some(&3));
    // A result larger than INLINE_MAX_RESULT_BYTES: a row of its own too.
    let large = h.write(1, s, n + 1, 1, INLINE_MAX_RESULT_BYTES as usize);
    assert_eq!(rows_by_tag(&h).get(&RESULT_TAG), Some(&4));
    assert_eq!(h.reloaded(), h.table);
    // Every one replays from wherever it is kept, also after a reload.
    h.table = h.reloaded();
    for seq in 1..=n {
        assert_eq!(h.write(1, s, seq, 1, 10), small[seq as usize - 1]);
    }
    assert_eq!(h.write(1, s, n + 1, 1, 0), large);
    assert_eq!(h.space.applied.len(), n as usize + 1);
    // Acknowledging them all removes the rows of their own with them.
    h.write(1, s, n + 2, n + 2, 0);
    assert_eq!(rows_by_tag(&h).get(&RESULT_TAG), None);
    assert_eq!(h.table.results(), 1);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn rows_of_builds_before_inline_results_are_read_and_rewritten() {
    // What a build before inline results stored for client 7: its session
    // row (format version 1) and two results in rows of their own.
    let put = |revision| CommandResponse::Put {
        revision,
        prev_kv: None,
    };
    let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    rows.insert(
        meta_key(),
        codec::encode(&MetaRow {
            clock_ms: 1_000_000,
        })
        .expect("encode"),
    );
    rows.insert(
        client_key(7),
        codec::encode(&ClientRow {
            session: 3,
            last_active_ms: 1_000_000,
            floor: 1,
        })
        .expect("encode"),
    );
    for (seq, index) in [(1u64, 4u64), (2, 5)] {
        let row = ResultRow {
            index,
            response: Some(put(seq)),
        };
        rows.insert(result_key(7, seq), codec::encode(&row).expect("encode"));
    }
    let mut h = Harness::new(SessionLimits::default());
    h.rows = rows;
    h.table = h.reloaded();
    h.index = 5;
    assert_eq!(h.table.session_of(7), Some(3));
    assert_eq!(h.table.results(), 2);
    // Both replay; nothing is applied again.
    assert_eq!(h.write(7, 3, 1, 1, 0), put(1));
    assert_eq!(h.write(7, 3, 2, 1, 0), put(2));
    assert!(h.space.applied.is_empty());
    // The client's row is now of the current shape; a new write that
    // acknowledges both removes their rows.
    assert_eq!(h.rows[&client_key(7)][0], CLIENT_ROW_VERSION);
    h.write(7, 3, 3, 3, 0);
    assert_eq!(rows_by_tag(&h).get(&RESULT_TAG), None);
    assert_eq!(h.space.applied.len(), 1);
    assert_eq!(h.reloaded(), h.table);
}

#[test]
fn a_client_row_of_an_unknown_format_is_refused() {
    let mut value = codec::encode(&ClientRow {
        session: 3,
        last_active_ms: 0,
        floor: 0,
    })
    .expect("encode");
    value[0] = 9;
    let rows = [Ok((
        client_key(7).into_boxed_slice(),
        value.into_boxed_slice(),
    ))];
    let err = SessionTable::from_rows(rows).expect_err("refused");
    assert!(err.to_string().contains("format version 9"), "{err}");
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes on the leader's clock (or goes back, on a new leader).
    Clock(i64),
    /// A client registers.
    Register(u8),
    /// A client writes: a new sequence number, or a retry of an earlier one
    /// (index into what it sent), acknowledging up to some earlier point;
    /// sometimes with a stale session.
    Write {
        client: u8,
        retry: Option<usize>,
        ack_back: u64,
        stale: bool,
        prev_bytes: u16,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (-200i64..2_000).prop_map(Step::Clock),
        (0u8..5).prop_map(Step::Register),
        (
            0u8..5,
            proptest::option::of(0usize..16),
            0u64..6,
            proptest::bool::weighted(0.1),
            0u16..600
        )
            .prop_map(|(client, retry, ack_back, stale, prev_bytes)| Step::Write {
                client,
                retry,
                ack_back,
                stale,
                prev_bytes
            }),
    ]
}

fn limits() -> impl Strategy<Value = SessionLimits> {
    // Up to past INLINE_MAX_RESULTS per client, so that results also go to
    // rows of their own for lack of room in their client's row.
    (1u64..5, 1u64..12, 200u64..20_000, 1u64..3_000).prop_map(
        |(max_clients, max_results, max_bytes, ttl_ms)| SessionLimits {
            max_clients,
            max_results,
            max_bytes,
            ttl_ms,
        },
    )
}

/// What a client of the history knows: its session and what it sent.
#[derive(Default, Clone)]
struct ClientView {
    session: Option<u64>,
    next_seq: u64,
    sent: Vec<(u64, usize)>,
}

/// Runs `steps` on a fresh harness and checks, after every step, the bounds
/// and that the rows read back to the table; returns the harness and every
/// answer, for determinism checks. With `reload_every`, the table is
/// replaced by the one its rows read back to every that many steps, as a
/// restart or a snapshot install does.
fn run_history(
    limits: SessionLimits,
    steps: &[Step],
    reload_every: Option<usize>,
) -> (Harness, Vec<CommandResponse>) {
    let mut h = Harness::new(limits);
    let mut clients: HashMap<u8, ClientView> = HashMap::new();
    // (client, session, seq) -> the first answer it got from an application.
    let mut first: HashMap<(u128, u64, u64), CommandResponse> = HashMap::new();
    let mut answers = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        if reload_every.is_some_and(|every| n % every == 0) {
            h.table = h.reloaded();
        }
        match step {
            Step::Clock(delta) => {
                h.now_ms = h.now_ms.saturating_add_signed(*delta);
            }
            Step::Register(c) => {
                let session = h.register(u128::from(*c));
                let view = clients.entry(*c).or_default();
                if view.session != Some(session) {
                    // A new session: sequence numbers go on from where they
                    // were, so nothing sent before can be taken for new.
                    view.sent.clear();
                }
                view.session = Some(session);
                answers.push(CommandResponse::Registered { session });
            }
            Step::Write {
                client,
                retry,
                ack_back,
                stale,
                prev_bytes,
            } => {
                let view = clients.entry(*client).or_default();
                let Some(mut session) = view.session else {
                    continue;
                };
                if *stale {
                    session += 1_000;
                }
                let (seq, bytes) = match retry.and_then(|i| view.sent.get(i).copied()) {
                    Some(sent) => sent,
                    None => {
                        view.next_seq += 1;
                        view.sent.push((view.next_seq, usize::from(*prev_bytes)));
                        (view.next_seq, usize::from(*prev_bytes))
                    }
                };
                // Any acknowledgement, even of writes the client retries
                // later: the table must never apply twice, whatever a
                // client sends.
                let acked_below = seq.saturating_sub(*ack_back).max(1);
                let applied_before = h.space.applied.len();
                let answer = h.write(u128::from(*client), session, seq, acked_below, bytes);
                let applied = h.space.applied.len() - applied_before;
                let id = (u128::from(*client), session, seq);
                match (&answer, first.get(&id)) {
                    (CommandResponse::SessionExpired { .. }, _) => assert_eq!(applied, 0),
                    (answer, Some(earlier)) => {
                        assert_eq!(applied, 0, "{id:?} applied twice");
                        assert_eq!(answer, earlier, "{id:?} answered differently");
                    }
                    (answer, None) => {
                        assert_eq!(applied, 1);
                        first.insert(id, answer.clone());
                    }
                }
                answers.push(answer);
            }
        }
        let t = &h.table;
        assert!(t.clients() as u64 <= limits.max_clients);
        assert!(t.bytes() <= limits.max_bytes);
        for c in t.clients.values() {
            assert!(c.results.len() as u64 <= limits.max_results);
            assert!(c.results.keys().all(|seq| *seq >= c.floor));
        }
        assert_eq!(h.reloaded(), h.table, "the rows read back to the table");
    }
    (h, answers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every (client, session, sequence number) is applied at most once, a
    /// replay answers what the application answered, the bounds always
    /// hold, and the stored rows always read back to the same table.
    #[test]
    fn each_write_applies_at_most_once_within_the_bounds(
        limits in limits(),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        run_history(limits, &steps, None);
    }

    /// Two nodes applying the same entries hold the same table, answer the
    /// same and store the same rows, also when one of them restarts (or
    /// installs a snapshot) along the way and reads its table back.
    #[test]
    fn the_table_is_deterministic(
        limits in limits(),
        steps in proptest::collection::vec(step(), 1..80),
        reload_every in 1usize..10,
    ) {
        let (a, answers_a) = run_history(limits, &steps, None);
        let (b, answers_b) = run_history(limits, &steps, Some(reload_every));
        prop_assert_eq!(answers_a, answers_b);
        prop_assert_eq!(&a.table, &b.table);
        prop_assert_eq!(&a.rows, &b.rows);
    }
}
