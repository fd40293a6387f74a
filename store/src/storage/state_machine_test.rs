//! The state machine's key index across applies, a snapshot install and a
//! reopen: it always holds exactly the `kv` column family.

use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tempfile::TempDir;
use tracing::info;

use super::*;
use crate::db;
use crate::kv::{Command, KvReader, SessionCommand, SessionLimits, SessionOp, SessionStamp};
use crate::metrics::NodeGauges;
use crate::raft::types::{Entry, TypeConfig};

struct Node {
    dir: TempDir,
    db: Arc<DB>,
    sm: StateMachine,
    next_index: u64,
}

impl Node {
    fn open() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        let sm = StateMachine::open(db.clone(), dir.path().join("snapshots")).expect("open");
        Node {
            dir,
            db,
            sm,
            next_index: 1,
        }
    }

    /// Applies `commands` as one batch of log entries.
    async fn apply(&mut self, commands: Vec<Command>) {
        let entries: Vec<Result<EntryResponder<TypeConfig>, io::Error>> = commands
            .into_iter()
            .map(|c| {
                let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, self.next_index);
                self.next_index += 1;
                Ok((Entry::new_normal(log_id, c), None))
            })
            .collect();
        self.sm
            .apply(futures::stream::iter(entries))
            .await
            .expect("apply");
    }

    /// The index equals one rebuilt from disk and sums to the digest.
    fn check_index(&self) {
        let on_disk = KeyIndex::load(&self.db).expect("load index");
        assert_eq!(self.sm.index, on_disk, "index against the kv column family");
        assert_eq!(self.sm.index.state_hash(), self.sm.mvcc.state_hash);
    }

    fn version(&self, key: &str) -> Option<u64> {
        let (_, kv) = KvReader::new(self.db.clone()).get(key, None).expect("get");
        kv.map(|kv| kv.version)
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        prev_kv: false,
    }
}

fn delete(key: &str) -> Command {
    Command::Delete {
        key: key.into(),
        prefix: false,
        prev_kv: false,
    }
}

#[tokio::test]
async fn the_key_index_follows_applies_an_install_and_a_reopen() {
    // The leader's key space: `a` at version 3, `b` at 1, `c` deleted.
    let mut leader = Node::open();
    leader
        .apply(vec![put("a", "1"), put("b", "1"), put("a", "2")])
        .await;
    leader
        .apply(vec![put("c", "1"), put("a", "3"), delete("c")])
        .await;
    leader.check_index();
    assert_eq!(leader.sm.index.len(), 2);
    let snapshot = leader
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    // A follower whose own key space (with `c` and `x`, and `a` at another
    // version) the install replaces.
    let mut follower = Node::open();
    follower
        .apply(vec![put("a", "x"), put("c", "x"), put("x", "x")])
        .await;
    follower.check_index();
    let copy = follower.dir.path().join("received.snap");
    fs::copy(&snapshot.snapshot.path, &copy).expect("copy snapshot");
    follower
        .sm
        .install_snapshot(&snapshot.meta, SnapshotFile { path: copy })
        .await
        .expect("install");
    follower.check_index();
    assert_eq!(follower.sm.index.len(), 2);
    assert!(follower.sm.index.get("x").is_none());
    assert!(follower.sm.index.get("c").is_none());

    // Both apply the same writes and end alike: the versions come from the
    // installed index, not the follower's earlier one.
    follower.next_index = leader.next_index;
    let more = || vec![put("a", "4"), put("c", "2"), delete("b")];
    leader.apply(more()).await;
    follower.apply(more()).await;
    leader.check_index();
    follower.check_index();
    assert_eq!(follower.sm.mvcc, leader.sm.mvcc);
    assert_eq!(follower.sm.index, leader.sm.index);
    assert_eq!(follower.version("a"), Some(4));
    assert_eq!(follower.version("c"), Some(1));
    assert_eq!(follower.version("b"), None);

    // Reopened, it rebuilds the same index from disk.
    let Node { dir, db, sm, .. } = follower;
    let index = sm.index.clone();
    drop(sm);
    let reopened = StateMachine::open(db, dir.path().join("snapshots")).expect("reopen");
    assert_eq!(reopened.index, index);
}

fn session(client: u128, now_ms: u64, limits: SessionLimits, op: SessionOp) -> Command {
    Command::Session(SessionCommand {
        client,
        stamp: SessionStamp { now_ms, limits },
        op,
    })
}

fn session_put(client: u128, session_id: u64, seq: u64, key: &str) -> Command {
    let op = SessionOp::Write {
        session: session_id,
        seq,
        acked_below: 0,
        command: Box::new(put(key, "v")),
    };
    session(client, 1_000, SessionLimits::default(), op)
}

/// The value of the sample `name` in OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

#[tokio::test]
async fn session_metrics_count_replays_expiries_and_evictions() {
    let metrics = Arc::new(Metrics::new());
    let mut node = Node::open();
    node.sm = StateMachine::open(node.db.clone(), node.dir.path().join("snapshots"))
        .expect("open")
        .with_metrics(metrics.clone());
    let limits = SessionLimits::default();
    let render = || metrics.render(&NodeGauges::default());

    info!("--- a client registers, writes, and retries the same write");
    node.apply(vec![session(1, 1_000, limits, SessionOp::Register)])
        .await;
    let registered = node.next_index - 1;
    node.apply(vec![session_put(1, registered, 1, "a")]).await;
    node.apply(vec![session_put(1, registered, 1, "a")]).await;
    assert_eq!(
        node.version("a"),
        Some(1),
        "the retry was not applied again"
    );
    let text = render();
    assert_eq!(
        sample(&text, "ballast_session_replays_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_session_clients").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_session_results").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_key_index_keys").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_sessions_expired_total").as_deref(),
        Some("0"),
        "{text}"
    );

    info!("--- past the TTL, another client's registration expires the first");
    let later = 1_000 + limits.ttl_ms + 1;
    node.apply(vec![session(2, later, limits, SessionOp::Register)])
        .await;
    let text = render();
    assert_eq!(
        sample(&text, "ballast_sessions_expired_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_session_clients").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_session_results").as_deref(),
        Some("0"),
        "{text}"
    );

    info!("--- at a limit of one client, a third registration evicts the second");
    let one = SessionLimits {
        max_clients: 1,
        ..limits
    };
    node.apply(vec![session(3, later, one, SessionOp::Register)])
        .await;
    let text = render();
    assert_eq!(
        sample(&text, "ballast_sessions_evicted_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_sessions_expired_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ballast_session_clients").as_deref(),
        Some("1"),
        "{text}"
    );
}

/// A RocksDB row: key and value.
type Row = (Box<[u8]>, Box<[u8]>);

/// Every row of the `sessions` column family.
fn session_rows(db: &DB) -> Vec<Row> {
    let handle = cf(db, crate::db::CF_SESSIONS).expect("cf");
    db.iterator_cf(handle, IteratorMode::Start)
        .map(|r| r.expect("row"))
        .collect()
}

#[tokio::test]
async fn a_batch_writes_each_session_row_once_and_ends_as_entry_by_entry() {
    let limits = SessionLimits::default();
    let write = |client: u128, session_id: u64, seq: u64, acked_below: u64, now_ms: u64| {
        let op = SessionOp::Write {
            session: session_id,
            seq,
            acked_below,
            command: Box::new(put(&format!("k{client}"), "v")),
        };
        session(client, now_ms, limits, op)
    };
    // Two clients register (entries 1 and 2), then write in turn, each
    // acknowledging its previous write, with the clock moving on.
    let mut commands = vec![
        session(1, 1_000, limits, SessionOp::Register),
        session(2, 1_000, limits, SessionOp::Register),
    ];
    for seq in 1..=6u64 {
        commands.push(write(1, 1, seq, seq, 1_000 + seq));
        commands.push(write(2, 2, seq, seq, 1_000 + seq));
    }
    // A retry of an acknowledged write, refused, in the same batch.
    commands.push(write(1, 1, 2, 6, 1_100));

    let mut batched = Node::open();
    batched.apply(commands.clone()).await;
    let mut one_by_one = Node::open();
    for c in commands {
        one_by_one.apply(vec![c]).await;
    }
    assert_eq!(session_rows(&batched.db), session_rows(&one_by_one.db));
    assert_eq!(batched.sm.sessions, one_by_one.sm.sessions);
    assert_eq!(
        sessions::load_table(&batched.db).expect("load"),
        batched.sm.sessions
    );
    assert_eq!(batched.sm.mvcc, one_by_one.sm.mvcc);
    assert_eq!(batched.version("k1"), Some(6));
}

#[test]
fn session_rows_keep_each_key_s_last_change() {
    use crate::kv::sessions::{RowOp, SessionRows};
    let mut rows = SessionRows::default();
    rows.extend(vec![
        RowOp::Put(b"a".to_vec(), b"1".to_vec()),
        RowOp::Put(b"b".to_vec(), b"1".to_vec()),
        RowOp::Put(b"a".to_vec(), b"2".to_vec()),
    ]);
    rows.extend(vec![
        RowOp::Delete(b"b".to_vec()),
        RowOp::Delete(b"c".to_vec()),
    ]);
    assert_eq!(rows.len(), 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db::open(dir.path()).expect("open rocksdb");
    let handle = cf(&db, crate::db::CF_SESSIONS).expect("cf");
    db.put_cf(handle, b"b", b"0").expect("put");
    db.put_cf(handle, b"c", b"0").expect("put");
    let mut batch = WriteBatch::default();
    rows.write(&mut batch, handle);
    assert_eq!(batch.len(), 3);
    db.write(batch).expect("write");
    let left: Vec<Row> = session_rows(&db);
    assert_eq!(left, vec![(Box::from(&b"a"[..]), Box::from(&b"2"[..]))]);
}
