//! Restores from a backup file and from a data directory, and every refusal:
//! each refusal leaves the target as it was.

use std::io::Write as _;

use rocksdb::IteratorMode;
use tempfile::TempDir;

use super::*;
use crate::db::{CF_RAFT_LOG, CF_RAFT_META};
use crate::kv::gate::InstallGate;
use crate::kv::mvcc::{self, ApplyBatch};
use crate::kv::sessions::{self, SessionTable};
use crate::kv::{Command, SessionCommand, SessionLimits, SessionOp, SessionStamp};
use crate::storage::backup::BackupSource;

const CLUSTER: &str = "1=127.0.0.1:1/127.0.0.1:2,2=127.0.0.1:3/127.0.0.1:4";

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        prev_kv: false,
    }
}

/// A stopped node's data directory with some history, and a backup file of it.
struct Source {
    dir: TempDir,
    mvcc: MvccState,
}

impl Source {
    fn new() -> Source {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = database::open(&dir.path().join("node/db")).expect("open");
        let mut state = MvccState::default();
        let commands = [
            put("a", "1"),
            put("b", "2"),
            put("a", "3"),
            Command::Delete {
                key: "b".into(),
                prefix: false,
                prev_kv: false,
            },
            put("c", "4"),
        ];
        // A client session, and a write of it (to an existing key).
        let stamp = SessionStamp {
            now_ms: 1,
            limits: SessionLimits::default(),
        };
        let session = |op| {
            Command::Session(SessionCommand {
                client: 9,
                stamp,
                op,
            })
        };
        let commands = commands.into_iter().chain([
            session(SessionOp::Register),
            session(SessionOp::Write {
                session: 6,
                seq: 1,
                acked_below: 1,
                command: Box::new(put("a", "5")),
            }),
        ]);
        let mut sessions = SessionTable::new();
        for (index, command) in (1..).zip(commands) {
            let mut batch = ApplyBatch::new(&db, state);
            sessions::apply_entry(&mut sessions, &db, &mut batch, index, &command).expect("apply");
            let (write_batch, next) = batch.finish().expect("finish");
            db.write(write_batch).expect("write");
            state = next;
        }
        assert_eq!(
            sessions.session_of(9),
            Some(6),
            "the session is the register's index"
        );
        assert_eq!(sessions.results(), 1);
        let source = BackupSource::new(db.clone(), InstallGate::default(), dir.path().join("b"));
        let slot = source.try_claim().expect("slot");
        assert!(source.try_claim().is_none(), "one backup at a time");
        let backup = source.build(&slot, 7, 1).expect("backup");
        assert_eq!(backup.header.key_count, 2);
        assert_eq!(backup.header.revision, 6);
        let mut file = fs::File::create(dir.path().join("backup.snap")).expect("create");
        file.write_all(&backup.prefix).expect("prefix");
        file.write_all(&fs::read(backup.file.path()).expect("read"))
            .expect("snapshot");
        file.write_all(&backup.trailer()).expect("trailer");
        let written = backup.file.path().to_path_buf();
        drop(backup);
        assert!(!written.exists(), "the backup's file is removed with it");
        drop(source);
        drop(db);
        Source { dir, mvcc: state }
    }

    fn backup(&self) -> PathBuf {
        self.dir.path().join("backup.snap")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    fn options(&self, target: &str, source: RestoreSource) -> RestoreOptions {
        RestoreOptions {
            node_id: 2,
            data_dir: self.dir.path().join(target),
            initial_cluster: CLUSTER.into(),
            cluster_token: "t".into(),
            source,
            new_cluster: true,
        }
    }
}

/// Every record of `names` in the database at `dir`.
fn records(dir: &Path, names: &[&str]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let db = database::open(dir).expect("open");
    let mut out = Vec::new();
    for name in names {
        for item in db.iterator_cf(cf(&db, name).expect("cf"), IteratorMode::Start) {
            let (k, v) = item.expect("item");
            out.push((name.to_string(), k.to_vec(), v.to_vec()));
        }
    }
    out
}

#[test]
fn a_backup_restores_the_key_space_with_an_empty_raft_side() {
    let src = Source::new();
    let options = src.options("new", RestoreSource::Snapshot(src.backup()));
    let report = restore(&options).expect("restore");
    assert_eq!(report.revision, src.mvcc.revision);
    assert_eq!(report.state_hash, src.mvcc.state_hash);
    assert_eq!(report.key_count, 2);

    // The key space as it was; the client sessions are not restored.
    let names: Vec<&str> = SM_DATA_CFS
        .into_iter()
        .filter(|n| *n != CF_SESSIONS)
        .collect();
    assert_eq!(
        records(&options.data_dir.join("db"), &names),
        records(&src.data_dir().join("db"), &names)
    );
    assert!(!records(&src.data_dir().join("db"), &[CF_SESSIONS]).is_empty());
    assert!(records(&options.data_dir.join("db"), &[CF_SESSIONS]).is_empty());
    let entries: Vec<String> = fs::read_dir(&options.data_dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["db"], "only the database, no staging left");

    let db = database::open(&options.data_dir.join("db")).expect("open");
    assert_eq!(mvcc::load_state(&db).expect("state"), src.mvcc);
    let stored = identity::load(&db).expect("identity");
    assert_eq!(
        stored,
        Some(Identity {
            cluster_id: report.cluster_id,
            node_id: 2
        })
    );
    let members = parse_initial_cluster(CLUSTER).expect("members");
    assert_ne!(report.cluster_id, cluster_id_for("t", &members));
    // No log, no vote, no applied log id: `initialize` is allowed.
    assert!(db
        .iterator_cf(cf(&db, CF_RAFT_LOG).expect("cf"), IteratorMode::Start)
        .next()
        .is_none());
    let raft_meta: Vec<_> = db
        .iterator_cf(cf(&db, CF_RAFT_META).expect("cf"), IteratorMode::Start)
        .map(|i| i.expect("item").0.to_vec())
        .collect();
    assert_eq!(raft_meta, [b"identity".to_vec()]);
    let sm_meta: Vec<_> = db
        .iterator_cf(cf(&db, CF_SM_META).expect("cf"), IteratorMode::Start)
        .map(|i| i.expect("item").0.to_vec())
        .collect();
    assert_eq!(sm_meta, [MVCC_STATE_KEY.to_vec()]);
}

#[test]
fn a_data_directory_restores_to_the_same_cluster_id_and_is_left_unchanged() {
    let src = Source::new();
    let before = records(
        &src.data_dir().join("db"),
        &[CF_KV, "history", "changes", CF_SM_META],
    );
    let from_file = restore(&src.options("a", RestoreSource::Snapshot(src.backup()))).expect("a");
    let from_dir = restore(&src.options("b", RestoreSource::DataDir(src.data_dir()))).expect("b");
    assert_eq!(
        from_dir, from_file,
        "same state, token and members: same id"
    );
    let mut other = src.options("c", RestoreSource::DataDir(src.data_dir()));
    other.cluster_token = "u".into();
    assert_ne!(restore(&other).expect("c").cluster_id, from_file.cluster_id);
    assert_eq!(
        records(
            &src.data_dir().join("db"),
            &[CF_KV, "history", "changes", CF_SM_META]
        ),
        before
    );
}

#[test]
fn refusals_leave_the_target_as_it_was() {
    let src = Source::new();

    let mut options = src.options("t1", RestoreSource::Snapshot(src.backup()));
    options.new_cluster = false;
    assert!(matches!(
        restore(&options),
        Err(RestoreError::NotAcknowledged)
    ));
    assert!(!options.data_dir.exists());

    let mut options = src.options("t2", RestoreSource::Snapshot(src.backup()));
    options.node_id = 3;
    let err = restore(&options).expect_err("node 3 is not a member");
    assert!(err.to_string().contains("node 3 is not in"), "{err}");
    assert!(!options.data_dir.exists());

    let options = src.options("t3", RestoreSource::Snapshot(src.backup()));
    fs::create_dir_all(&options.data_dir).expect("mkdir");
    fs::write(options.data_dir.join("keep"), b"mine").expect("write");
    assert!(matches!(
        restore(&options),
        Err(RestoreError::TargetNotEmpty(_))
    ));
    assert_eq!(
        fs::read(options.data_dir.join("keep")).expect("kept"),
        b"mine"
    );

    let options = src.options("t4", RestoreSource::DataDir(src.dir.path().join("b")));
    let err = restore(&options).expect_err("not a data dir");
    assert!(
        err.to_string().contains("not a ballast data directory"),
        "{err}"
    );
    assert!(!options.data_dir.exists());
}

#[test]
fn a_corrupt_or_truncated_backup_is_refused() {
    let src = Source::new();
    let bytes = fs::read(src.backup()).expect("read");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flipped", {
            let mut b = bytes.clone();
            let middle = b.len() / 2;
            b[middle] ^= 0x01;
            b
        }),
        ("flipped-trailer", {
            let mut b = bytes.clone();
            let last = b.len() - 1;
            b[last] ^= 0x80;
            b
        }),
        ("truncated", bytes[..bytes.len() - 20].to_vec()),
        ("header-only", bytes[..40].to_vec()),
        ("empty", Vec::new()),
        ("extended", [bytes.as_slice(), b"x"].concat()),
    ];
    for (name, content) in cases {
        let file = src.dir.path().join(format!("{name}.snap"));
        fs::write(&file, &content).expect("write");
        let options = src.options(name, RestoreSource::Snapshot(file));
        let err = restore(&options).expect_err(name);
        assert!(matches!(err, RestoreError::Source { .. }), "{name}: {err}");
        assert!(!options.data_dir.exists(), "{name}: nothing left");
    }
}

/// A data directory written by a build before client sessions (no
/// `sessions` column family) restores too.
#[test]
fn a_data_directory_without_a_session_table_restores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_dir = dir.path().join("old/db");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let old_families = [
        "raft_meta",
        "raft_log",
        CF_SM_META,
        CF_KV,
        "history",
        "changes",
    ];
    let db = DB::open_cf(&opts, &db_dir, old_families).expect("open the old layout");
    let mut batch = ApplyBatch::new(&db, MvccState::default());
    batch.apply(&put("k", "v")).expect("apply");
    let (write_batch, state) = batch.finish().expect("finish");
    db.write(write_batch).expect("write");
    drop(db);
    let options = RestoreOptions {
        node_id: 2,
        data_dir: dir.path().join("new"),
        initial_cluster: CLUSTER.into(),
        cluster_token: "t".into(),
        source: RestoreSource::DataDir(dir.path().join("old")),
        new_cluster: true,
    };
    let report = restore(&options).expect("restore");
    assert_eq!((report.revision, report.key_count), (state.revision, 1));
    assert_eq!(report.state_hash, state.state_hash);
}
