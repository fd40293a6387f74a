//! Snapshot files: round trips of every format version, the rebuilt `kv`
//! records, the session table, the state digest check, and the record
//! limit shared by the writer and the reader.

use std::sync::Arc;

use rocksdb::{IteratorMode, DB};
use tempfile::TempDir;

use super::*;
use crate::db::{self, CF_SM_META};
use crate::kv::mvcc::{self, history_key, ApplyBatch, Record};
use crate::kv::sessions::{self, SessionTable};
use crate::kv::{Command, CommandResponse, SessionCommand, SessionLimits, SessionOp, SessionStamp};

/// A record as `for_each_record` yields it: column family index, key, value.
type Rec = (usize, Vec<u8>, Vec<u8>);

struct Store {
    db: Arc<DB>,
    dir: TempDir,
    state: MvccState,
    sessions: SessionTable,
    index: u64,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        Store {
            db,
            dir,
            state: MvccState::default(),
            sessions: SessionTable::new(),
            index: 0,
        }
    }

    /// Applies `commands` as one batch of log entries, as the state
    /// machine does (session commands through the session table).
    fn apply(&mut self, commands: &[Command]) -> Vec<CommandResponse> {
        let mut batch = ApplyBatch::new(&self.db, self.state);
        let mut responses = Vec::new();
        for c in commands {
            self.index += 1;
            responses.push(
                sessions::apply_entry(&mut self.sessions, &self.db, &mut batch, self.index, c)
                    .expect("apply"),
            );
        }
        let (write_batch, state) = batch.finish().expect("finish");
        self.db.write(write_batch).expect("write");
        self.state = state;
        responses
    }

    fn header(&self) -> SnapshotHeader {
        SnapshotHeader {
            meta: SnapshotMeta::default(),
            mvcc: self.state,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_snapshot(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path(name);
        write(&self.db, &self.db.snapshot(), &self.header(), &path)?;
        Ok(path)
    }

    /// Every record of the state-machine column families, as
    /// `for_each_record` yields them.
    fn records(&self) -> Vec<Rec> {
        let mut out = Vec::new();
        for (index, name) in SM_DATA_CFS.iter().enumerate() {
            let handle = cf(&self.db, name).expect("cf");
            for item in self.db.iterator_cf(handle, IteratorMode::Start) {
                let (k, v) = item.expect("item");
                out.push((index, k.to_vec(), v.to_vec()));
            }
        }
        out.sort();
        out
    }
}

fn read_all(path: &Path) -> io::Result<(SnapshotHeader, Vec<Rec>)> {
    let mut out = Vec::new();
    let header = for_each_record(path, |i, k, v| {
        out.push((i, k, v));
        Ok(())
    })?;
    out.sort();
    Ok((header, out))
}

fn put(key: &str, value: &[u8]) -> Command {
    Command::Put {
        key: key.into(),
        value: value.to_vec(),
        prev_kv: false,
    }
}

fn session_command(client: u128, op: SessionOp) -> Command {
    Command::Session(SessionCommand {
        client,
        stamp: SessionStamp {
            now_ms: 1_000,
            limits: SessionLimits::default(),
        },
        op,
    })
}

fn session_put(client: u128, session: u64, seq: u64, key: &str) -> Command {
    session_command(
        client,
        SessionOp::Write {
            session,
            seq,
            acked_below: 1,
            command: Box::new(Command::Put {
                key: key.into(),
                value: b"s".to_vec(),
                prev_kv: true,
            }),
        },
    )
}

/// Registers clients 1 and 2 and has them write a few keys.
fn add_sessions(s: &mut Store) {
    let registered = s.apply(&[
        session_command(1, SessionOp::Register),
        session_command(2, SessionOp::Register),
    ]);
    let ids: Vec<u64> = registered
        .iter()
        .map(|r| match r {
            CommandResponse::Registered { session } => *session,
            other => panic!("registration answered {other:?}"),
        })
        .collect();
    for seq in 1..=3 {
        s.apply(&[
            session_put(1, ids[0], seq, "sessions/a"),
            session_put(2, ids[1], seq, "sessions/b"),
        ]);
    }
    assert_eq!(s.sessions.results(), 6);
}

/// Puts, overwrites, deletes (a prefix delete too), physical compaction,
/// and session writes.
fn busy_store() -> Store {
    let mut s = Store::new();
    add_sessions(&mut s);
    for i in 0..20u8 {
        s.apply(&[put(&format!("app/{}", i % 7), &[i; 100])]);
    }
    s.apply(&[put("other", b"x")]);
    s.apply(&[Command::Delete {
        key: "app/1".into(),
        prefix: false,
        prev_kv: false,
    }]);
    s.apply(&[Command::Compact { revision: 12 }]);
    mvcc::compact_step(&s.db, 0, 12).expect("compact");
    s.apply(&[Command::Delete {
        key: "app/".into(),
        prefix: true,
        prev_kv: false,
    }]);
    s.apply(&[put("app/3", b"again")]);
    s
}

#[test]
fn a_file_yields_the_column_families_it_was_written_from() {
    let s = busy_store();
    let path = s.write_snapshot("a.snap").expect("write");
    let (header, records) = read_all(&path).expect("read");
    assert_eq!(header.mvcc, s.state);
    assert_eq!(records, s.records());
    // The file itself carries no `kv` record: those are rebuilt.
    let mut from_file = 0;
    let mut r = BufReader::new(File::open(&path).expect("open"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).expect("magic");
    let header_field = read_field(&mut r).expect("header");
    assert_eq!(header_field[0], SNAPSHOT_VERSION);
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).expect("tag");
        if tag[0] == END {
            break;
        }
        assert_ne!(SM_DATA_CFS[tag[0] as usize], CF_KV);
        read_field(&mut r).expect("key");
        read_field(&mut r).expect("value");
        from_file += 1;
    }
    let kv_records = records.iter().filter(|(i, _, _)| *i == 0).count();
    assert!(kv_records > 0);
    assert_eq!(from_file + kv_records, records.len());
}

/// Writes `store` as an earlier build did: version 1, `kv` included.
fn write_version_1(s: &Store, path: &Path) {
    let mut w = HashingWriter {
        inner: Vec::new(),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC).expect("write");
    write_field(&mut w, &codec::encode(&s.header()).expect("encode")).expect("write");
    // Earlier builds had no session table.
    for (index, k, v) in s.records().into_iter().filter(|(i, _, _)| *i != SESSIONS) {
        w.write_all(&[index as u8]).expect("write");
        write_field(&mut w, &k).expect("write");
        write_field(&mut w, &v).expect("write");
    }
    w.write_all(&[END]).expect("write");
    let checksum = w.hasher.digest();
    let mut bytes = w.inner;
    bytes.extend_from_slice(&checksum.to_le_bytes());
    fs::write(path, bytes).expect("write file");
}

/// The index of `sessions` in [`SM_DATA_CFS`].
const SESSIONS: usize = 3;

/// Writes `store` as the build before sessions did: version 2, no `kv`, no
/// `sessions`.
fn write_version_2(s: &Store, path: &Path) {
    let mut w = HashingWriter {
        inner: Vec::new(),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC).expect("write");
    let header =
        postcard::to_extend(&s.header(), vec![SNAPSHOT_VERSION_WITHOUT_SESSIONS]).expect("encode");
    write_field(&mut w, &header).expect("write");
    for (index, name) in SM_DATA_CFS.iter().enumerate() {
        if *name == CF_KV || *name == CF_SESSIONS {
            continue;
        }
        let handle = cf(&s.db, name).expect("cf");
        for item in s.db.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.expect("item");
            w.write_all(&[index as u8]).expect("write");
            write_field(&mut w, &k).expect("write");
            write_field(&mut w, &v).expect("write");
        }
    }
    w.write_all(&[END]).expect("write");
    let checksum = w.hasher.digest();
    let mut bytes = w.inner;
    bytes.extend_from_slice(&checksum.to_le_bytes());
    fs::write(path, bytes).expect("write file");
}

fn without_sessions(records: Vec<Rec>) -> Vec<Rec> {
    records
        .into_iter()
        .filter(|(i, _, _)| *i != SESSIONS)
        .collect()
}

#[test]
fn files_of_earlier_builds_are_read() {
    let s = busy_store();
    let path = s.path("v1.snap");
    write_version_1(&s, &path);
    assert_eq!(read_header(&path).expect("header").mvcc, s.state);
    let (header, records) = read_all(&path).expect("read");
    assert_eq!(header.mvcc, s.state);
    assert_eq!(records, without_sessions(s.records()));

    let path = s.path("v2.snap");
    write_version_2(&s, &path);
    let (header, records) = read_all(&path).expect("read");
    assert_eq!(header.mvcc, s.state);
    assert_eq!(records, without_sessions(s.records()));
}

/// The session table travels in the file: loaded into an empty database, it
/// reads back to the table the source holds, and both go on alike.
#[test]
fn the_session_table_round_trips_through_a_snapshot() {
    let mut s = busy_store();
    let path = s.write_snapshot("sessions.snap").expect("write");
    let target = Store::new();
    let handles: Vec<_> = SM_DATA_CFS
        .iter()
        .map(|n| cf(&target.db, n).expect("cf"))
        .collect();
    for_each_record(&path, |index, k, v| {
        target
            .db
            .put_cf(handles[index], k, v)
            .map_err(crate::db::io_err)
    })
    .expect("load");
    let loaded = sessions::load_table(&target.db).expect("table");
    assert_eq!(loaded, s.sessions);
    assert_eq!(loaded.results(), 6);

    // A retry against the loaded table answers the first result.
    let retry = session_put(1, loaded.session_of(1).expect("session"), 3, "sessions/a");
    let mut restored = Store {
        state: s.state,
        sessions: loaded,
        index: s.index,
        ..target
    };
    let before = restored.state.revision;
    let replay = restored.apply(std::slice::from_ref(&retry));
    assert_eq!(restored.state.revision, before, "not applied again");
    assert_eq!(replay, s.apply(&[retry]));
}

/// A file of an earlier format with `sessions` records in it is corrupt.
#[test]
fn an_earlier_format_with_sessions_records_is_refused() {
    let s = busy_store();
    let path = s.path("v2-sessions.snap");
    let mut w = HashingWriter {
        inner: Vec::new(),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC).expect("write");
    let header =
        postcard::to_extend(&s.header(), vec![SNAPSHOT_VERSION_WITHOUT_SESSIONS]).expect("encode");
    write_field(&mut w, &header).expect("write");
    w.write_all(&[SESSIONS as u8]).expect("write");
    write_field(&mut w, &[0]).expect("write");
    write_field(&mut w, &[1]).expect("write");
    w.write_all(&[END]).expect("write");
    let checksum = w.hasher.digest();
    let mut bytes = w.inner;
    bytes.extend_from_slice(&checksum.to_le_bytes());
    fs::write(&path, bytes).expect("write file");
    let err = read_all(&path).expect_err("refused");
    assert!(err.to_string().contains("no sessions records"), "{err}");
}

#[test]
fn a_key_space_that_does_not_match_the_digest_is_refused() {
    let mut s = busy_store();
    // A live key whose latest version went missing from `history`.
    let history = cf(&s.db, CF_HISTORY).expect("cf");
    s.db.delete_cf(history, history_key("app/3", s.state.revision))
        .expect("delete");
    let path = s.write_snapshot("bad.snap").expect("write");
    let err = read_all(&path).expect_err("digest mismatch");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("hashes to"), "{err}");
    // And a version-1 file whose header names another digest.
    s.state.state_hash ^= 1;
    let path = s.path("v1-bad.snap");
    write_version_1(&s, &path);
    assert!(read_all(&path).is_err());
}

#[test]
fn unknown_versions_and_corrupt_lengths_are_refused() {
    let err = decode_header(&[9, 0, 0]).expect_err("version 9");
    assert!(err.to_string().contains("version 9"), "{err}");
    let too_long = (MAX_RECORD_FIELD_BYTES as u32 + 1).to_le_bytes();
    let err = read_field(&mut &too_long[..]).expect_err("over the limit");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

/// The encoded `history` value of a record holding `len` value bytes.
fn history_value(len: usize) -> (Record, Vec<u8>) {
    let record = Record {
        value: vec![0xA5; len],
        create_revision: 1,
        mod_revision: 1,
        version: 1,
    };
    let encoded = codec::encode(&Some(&record)).expect("encode");
    (record, encoded)
}

/// A store whose only key holds a `history` value of exactly `field` bytes.
fn store_with_field(field: usize) -> Store {
    let probe = field - 64;
    let overhead = history_value(probe).1.len() - probe;
    let (record, encoded) = history_value(field - overhead);
    assert_eq!(encoded.len(), field);
    let mut s = Store::new();
    let key = "big";
    s.db.put_cf(
        cf(&s.db, CF_HISTORY).expect("cf"),
        history_key(key, 1),
        encoded,
    )
    .expect("put");
    s.db.put_cf(
        cf(&s.db, CF_KV).expect("cf"),
        key,
        codec::encode(&record).expect("encode"),
    )
    .expect("put");
    s.state = MvccState {
        revision: 1,
        compact_revision: 0,
        state_hash: mvcc::entry_hash(key, &record),
    };
    s.db.put_cf(
        cf(&s.db, CF_SM_META).expect("cf"),
        mvcc::MVCC_STATE_KEY,
        codec::encode(&s.state).expect("encode"),
    )
    .expect("put");
    s
}

/// Every record the writer accepts, the reader reads: one at exactly the
/// limit round-trips; one a byte over it is refused by the writer, which
/// leaves no file behind.
#[test]
fn the_writer_and_the_reader_share_one_record_limit() {
    let s = store_with_field(MAX_RECORD_FIELD_BYTES);
    let path = s
        .write_snapshot("limit.snap")
        .expect("a record at the limit");
    let mut lengths = Vec::new();
    let header = for_each_record(&path, |i, k, v| {
        lengths.push((SM_DATA_CFS[i], k.len(), v.len()));
        Ok(())
    })
    .expect("read back");
    assert_eq!(header.mvcc, s.state);
    lengths.sort();
    assert_eq!(
        lengths,
        vec![
            (CF_HISTORY, 3 + 9, MAX_RECORD_FIELD_BYTES),
            // The rebuilt `kv` record: the same record without the option tag.
            (CF_KV, 3, MAX_RECORD_FIELD_BYTES - 1),
        ]
    );
    drop(s);

    let s = store_with_field(MAX_RECORD_FIELD_BYTES + 1);
    let err = s.write_snapshot("over.snap").expect_err("over the limit");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("over the snapshot record limit"),
        "{err}"
    );
    assert!(!s.path("over.snap").exists());
    assert!(!s.path("over.tmp").exists());
}

/// The limit covers the largest value a node can be configured to accept,
/// with its key, as the request limit bounds them.
#[test]
fn the_limit_covers_the_largest_allowed_request() {
    let limits = crate::kv::Limits {
        max_value_bytes: MAX_VALUE_BYTES_CEILING,
        ..crate::kv::Limits::default()
    };
    assert!(limits.max_request_bytes() + RECORD_ENCODING_BYTES <= MAX_RECORD_FIELD_BYTES);
}

/// Writes `store` as the build before auth did: version 3, no `kv`, no
/// `auth` (unless `with_auth`, which makes a corrupt file).
fn write_version_3(s: &Store, path: &Path, with_auth: bool) {
    let mut w = HashingWriter {
        inner: Vec::new(),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC).expect("write");
    let header =
        postcard::to_extend(&s.header(), vec![SNAPSHOT_VERSION_WITHOUT_AUTH]).expect("encode");
    write_field(&mut w, &header).expect("write");
    for (index, name) in SM_DATA_CFS.iter().enumerate() {
        if *name == CF_KV || (*name == CF_AUTH && !with_auth) {
            continue;
        }
        let handle = cf(&s.db, name).expect("cf");
        for item in s.db.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.expect("item");
            w.write_all(&[index as u8]).expect("write");
            write_field(&mut w, &k).expect("write");
            write_field(&mut w, &v).expect("write");
        }
    }
    w.write_all(&[END]).expect("write");
    let checksum = w.hasher.digest();
    let mut bytes = w.inner;
    bytes.extend_from_slice(&checksum.to_le_bytes());
    fs::write(path, bytes).expect("write file");
}

/// Applies auth commands to `s`'s `auth` column family and returns the table.
fn add_auth(s: &Store) -> crate::kv::auth::AuthTable {
    use crate::kv::auth::{apply_command, generate_token};
    use crate::kv::{AuthCommand, Role, RoleKind};
    let table = crate::kv::auth::SharedAuth::default();
    let mut batch = rocksdb::WriteBatch::default();
    let commands = [
        AuthCommand::Enable {
            admin: generate_token("admin", 1, None).record,
        },
        AuthCommand::PutRole(Role {
            name: "app".into(),
            kind: RoleKind::Writer,
            prefixes: vec!["app/".into()],
        }),
        AuthCommand::CreateToken(generate_token("app", 2, Some(9)).record),
    ];
    for c in &commands {
        apply_command(&table, &s.db, &mut batch, c).expect("apply");
    }
    s.db.write(batch).expect("write");
    let t = table.read().expect("lock").clone();
    assert!(t.enabled());
    t
}

/// Tokens and roles travel in the file; a version-3 file (before auth)
/// installs with auth off, and one holding auth records is corrupt.
#[test]
fn the_auth_table_round_trips_and_older_files_have_none() {
    let s = busy_store();
    let table = add_auth(&s);
    let path = s.write_snapshot("auth.snap").expect("write");
    let target = Store::new();
    let handles: Vec<_> = SM_DATA_CFS
        .iter()
        .map(|n| cf(&target.db, n).expect("cf"))
        .collect();
    for_each_record(&path, |index, k, v| {
        target
            .db
            .put_cf(handles[index], k, v)
            .map_err(crate::db::io_err)
    })
    .expect("load");
    assert_eq!(
        crate::kv::auth::load_table(&target.db).expect("table"),
        table
    );

    let v3 = s.path("v3.snap");
    write_version_3(&s, &v3, false);
    let (header, records) = read_all(&v3).expect("read");
    assert_eq!(header.mvcc, s.state);
    let auth_index = SM_DATA_CFS.iter().position(|n| *n == CF_AUTH);
    assert!(records.iter().all(|(i, _, _)| Some(*i) != auth_index));
    assert!(records.iter().any(|(i, _, _)| *i == SESSIONS));

    let corrupt = s.path("v3-auth.snap");
    write_version_3(&s, &corrupt, true);
    let err = read_all(&corrupt).expect_err("auth records in a version-3 file");
    assert!(err.to_string().contains("no auth records"), "{err}");
}

/// Writes `store` as the build before alarms did: version 4, no `kv`, no
/// `alarms` (unless `with_alarms`, which makes a corrupt file).
fn write_version_4(s: &Store, path: &Path, with_alarms: bool) {
    let mut w = HashingWriter {
        inner: Vec::new(),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC).expect("write");
    let header =
        postcard::to_extend(&s.header(), vec![SNAPSHOT_VERSION_WITHOUT_ALARMS]).expect("encode");
    write_field(&mut w, &header).expect("write");
    for (index, name) in SM_DATA_CFS.iter().enumerate() {
        if *name == CF_KV || (*name == CF_ALARMS && !with_alarms) {
            continue;
        }
        let handle = cf(&s.db, name).expect("cf");
        for item in s.db.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.expect("item");
            w.write_all(&[index as u8]).expect("write");
            write_field(&mut w, &k).expect("write");
            write_field(&mut w, &v).expect("write");
        }
    }
    w.write_all(&[END]).expect("write");
    let checksum = w.hasher.digest();
    let mut bytes = w.inner;
    bytes.extend_from_slice(&checksum.to_le_bytes());
    fs::write(path, bytes).expect("write file");
}

/// Active alarms travel in the file (a node that installs a snapshot still
/// refuses writes while a member is short of space); a version-4 file
/// (before alarms) installs with none, and one holding alarm records is
/// corrupt.
#[test]
fn the_alarm_table_round_trips_and_older_files_have_none() {
    use crate::kv::alarms::{apply_command, load_table, Alarm, AlarmCommand, AlarmKind};
    let s = busy_store();
    let table = crate::kv::alarms::SharedAlarms::default();
    let mut batch = rocksdb::WriteBatch::default();
    let alarm = Alarm {
        member: 3,
        kind: AlarmKind::NoSpace,
    };
    apply_command(&table, &s.db, &mut batch, &AlarmCommand::Activate(alarm)).expect("apply");
    s.db.write(batch).expect("write");
    let path = s.write_snapshot("alarms.snap").expect("write");
    let target = Store::new();
    let handles: Vec<_> = SM_DATA_CFS
        .iter()
        .map(|n| cf(&target.db, n).expect("cf"))
        .collect();
    for_each_record(&path, |index, k, v| {
        target
            .db
            .put_cf(handles[index], k, v)
            .map_err(crate::db::io_err)
    })
    .expect("load");
    assert_eq!(load_table(&target.db).expect("table").active(), vec![alarm]);

    let v4 = s.path("v4.snap");
    write_version_4(&s, &v4, false);
    let (header, records) = read_all(&v4).expect("read");
    assert_eq!(header.mvcc, s.state);
    let alarms_index = SM_DATA_CFS.iter().position(|n| *n == CF_ALARMS);
    assert!(records.iter().all(|(i, _, _)| Some(*i) != alarms_index));

    let corrupt = s.path("v4-alarms.snap");
    write_version_4(&s, &corrupt, true);
    let err = read_all(&corrupt).expect_err("alarm records in a version-4 file");
    assert!(err.to_string().contains("no alarm records"), "{err}");
}
