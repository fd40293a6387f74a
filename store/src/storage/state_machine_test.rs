//! The state machine's key index across applies, a snapshot install and a
//! reopen: it always holds exactly the `kv` column family.

use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftStateMachine, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::*;
use crate::db;
use crate::kv::{Command, KvReader};
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
