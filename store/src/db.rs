//! The one RocksDB instance a node keeps: column families and open options.
//!
//! The Raft log and the state machine share one database and therefore one
//! write-ahead log. That ordering is what makes the durability rules cheap: a
//! sync of the WAL (done for every log append and vote) also makes every
//! earlier state-machine write durable, so nothing the state machine reports
//! as applied can be newer than what a crash would keep.
//!
//! Below every layer that reads or writes the database: `storage` keeps the
//! Raft log and the state machine here, `kv` its key space.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Raft metadata: vote, last purged log id, committed log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Raft log entries keyed by big-endian index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// State-machine metadata: last applied log id, membership, revision, hash.
pub const CF_SM_META: &str = "sm_meta";
/// Current key space: user key → latest record.
pub const CF_KV: &str = "kv";
/// MVCC history: user key, NUL, big-endian revision → record or tombstone.
pub const CF_HISTORY: &str = "history";
/// Changes by revision: big-endian revision → the events of that revision.
pub const CF_CHANGES: &str = "changes";

/// Client sessions: the replicated table of recent write results per client
/// (`kv::sessions`).
pub const CF_SESSIONS: &str = "sessions";

/// Tokens and roles: the replicated auth table (`kv::auth`).
pub const CF_AUTH: &str = "auth";

/// Active alarms: the replicated alarm table (`kv::alarms`).
pub const CF_ALARMS: &str = "alarms";

/// The state-machine column families, in the order snapshots carry them
/// (a snapshot record names its family by its index here, so new families
/// are only ever appended).
pub const SM_DATA_CFS: [&str; 6] = [
    CF_KV,
    CF_HISTORY,
    CF_CHANGES,
    CF_SESSIONS,
    CF_AUTH,
    CF_ALARMS,
];

const ALL_CFS: [&str; 9] = [
    CF_RAFT_META,
    CF_RAFT_LOG,
    CF_SM_META,
    CF_KV,
    CF_HISTORY,
    CF_CHANGES,
    CF_SESSIONS,
    CF_AUTH,
    CF_ALARMS,
];

/// Most bytes of WAL kept before RocksDB flushes the column families that
/// hold the oldest of it.
const MAX_TOTAL_WAL_BYTES: u64 = 128 * 1024 * 1024;

/// The smallest WAL cap [`wal_cap_for_reserve`] picks.
const MIN_TOTAL_WAL_BYTES: u64 = 1024 * 1024;

/// The WAL cap of a node that keeps a reserve file of `reserve_bytes` (0:
/// none): a quarter of the reserve, within 1 MiB and the default cap. The
/// memtables are held to it as well ([`open_with_wal_cap`]).
///
/// At open, RocksDB replays its WAL into memtables and flushes them to new
/// SST files before the old WAL is deleted: that needs about as much free
/// space as the WAL holds. It also preallocates its new WAL file (up to the
/// cap) and MANIFEST (4 MiB). On a full disk the reserve file is all the
/// room there is, so all of that must fit in it with room to spare: a
/// restart that leaves the disk full meets `ENOSPC` at its first write.
pub fn wal_cap_for_reserve(reserve_bytes: u64) -> u64 {
    if reserve_bytes == 0 {
        return MAX_TOTAL_WAL_BYTES;
    }
    (reserve_bytes / 4).clamp(MIN_TOTAL_WAL_BYTES, MAX_TOTAL_WAL_BYTES)
}

/// Opens (creating if needed) the node's database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    open_with_wal_cap(dir, MAX_TOTAL_WAL_BYTES)
}

/// [`open`], keeping at most `max_total_wal_bytes` of WAL (see
/// [`wal_cap_for_reserve`]).
pub fn open_with_wal_cap(dir: &Path, max_total_wal_bytes: u64) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Everything is written through the WAL; a crash never loses a synced write.
    opts.set_max_background_jobs(2);
    // RocksDB keeps a WAL file until every column family has flushed past
    // it. The small metadata families rarely fill a memtable, so without a
    // cap the WAL grew to the size of everything written (600 MB of WAL for
    // 200 MB of values); past the cap the families holding the oldest WAL
    // are flushed.
    opts.set_max_total_wal_size(max_total_wal_bytes);
    // That cap counts the WAL files RocksDB has moved past, not the one it
    // writes: the current file grows until a memtable fills (64 MiB per
    // column family by default). A node stopped before its memtables were
    // flushed then replays all of that at its next open and must write it
    // out as new SST files first, which on a full disk fails (`ENOSPC`: a
    // 38 MB WAL was seen behind a 4 MiB cap). Holding all memtables together
    // to the cap bounds the current WAL file too: past it the largest
    // memtable is flushed and a new WAL file started.
    opts.set_db_write_buffer_size(usize::try_from(max_total_wal_bytes).unwrap_or(usize::MAX));
    // Writes to one database come from few threads (the log append, the
    // state-machine apply), so concurrent memtable inserts buy nothing, and
    // they cost a full skip-list search per insert: the single-writer insert
    // reuses the previous insert's position, which makes the log's and the
    // change feed's ever-increasing keys nearly free to insert.
    opts.set_allow_concurrent_memtable_write(false);
    // A writer waiting for the write group's leader yields in a spin loop
    // first; on a machine with few cores (and three nodes in one process
    // under `ballastd dev`) that spinning takes the CPU the leader needs.
    opts.set_enable_write_thread_adaptive_yield(false);
    // RocksDB's own info log (`LOG` in the data directory) gets only fatal
    // errors (it stays empty otherwise). On a full disk a write to
    // that file fails like any other, and in builds of RocksDB with
    // assertions on (Debian's library) the next line written to it aborts
    // the process: at the default level that next line is the error report
    // of the failed write itself. The node logs every RocksDB error it is
    // handed, with RocksDB's message, in its own log instead.
    opts.set_log_level(rocksdb::LogLevel::Fatal);
    // RocksDB starts a new file at each open: keep the last few.
    opts.set_keep_log_file_num(4);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Syncs the WAL (`flush_wal(true)`), unless RocksDB has stopped taking
/// writes after an earlier failure.
///
/// After a failed WAL write (`ENOSPC`, say) RocksDB refuses writes (its
/// "background error"), and the WAL writer remembers the failure: asking
/// that writer to sync again trips a debug assertion in builds of RocksDB
/// that keep assertions on (Debian's library is one), which aborts the
/// process. So a write with nothing in it and the WAL off goes first: it
/// passes the same stopped-database check as every write, without touching
/// the WAL, and returns the earlier error if there was one.
pub fn sync_wal(db: &DB) -> Result<(), rocksdb::Error> {
    let mut probe = rocksdb::WriteOptions::default();
    probe.disable_wal(true);
    db.write_opt(rocksdb::WriteBatch::default(), &probe)?;
    db.flush_wal(true)
}

/// Converts a RocksDB error into the `io::Error` openraft's storage traits use.
pub fn io_err(e: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(e.into_string())
}

/// Looks up a column family that [`open`] always creates.
pub fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, std::io::Error> {
    db.cf_handle(name)
        .ok_or_else(|| std::io::Error::other(format!("column family {name} is missing")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A small tmpfs, unmounted on drop (also when the test fails).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(mib: u64) -> Result<Tmpfs, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir.path())
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            Ok(Tmpfs(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }

    /// A WAL write that meets a full disk stops the database; syncing the
    /// WAL afterwards is an error, not an abort (with an asserting RocksDB,
    /// syncing the failed writer straight away aborts the test binary).
    #[test]
    fn sync_wal_after_a_failed_wal_write_is_an_error_not_an_abort() {
        let tmpfs = match Tmpfs::mount(8) {
            Ok(t) => t,
            Err(why) => {
                ballast_testkit::skipped(&format!(
                    "sync_wal_after_a_failed_wal_write_is_an_error_not_an_abort: \
                     cannot mount a tmpfs (needs root): {why}"
                ));
                return;
            }
        };
        let db = open(&tmpfs.0.path().join("db")).expect("open");
        sync_wal(&db).expect("a healthy database syncs");
        let kv = db.cf_handle(ALL_CFS[0]).expect("column family");
        let value = vec![7u8; 256 * 1024];
        let mut failed = None;
        // Bounded: 64 MiB of values on an 8 MiB filesystem.
        for i in 0u32..256 {
            if let Err(e) = db.put_cf(kv, i.to_be_bytes(), &value) {
                failed = Some(e);
                break;
            }
        }
        let failed = failed.expect("the 8 MiB filesystem filled up");
        assert!(
            failed.to_string().contains("No space left"),
            "unexpected first failure: {failed}"
        );
        let synced = sync_wal(&db);
        assert!(synced.is_err(), "a stopped database does not sync");
        // Writes keep failing the same way, and nothing aborted.
        assert!(db.put_cf(kv, b"after", b"x").is_err());
        drop(db);
    }

    /// The current WAL file stays near the cap (the memtables are held to
    /// it): it does not grow with everything written since the last flush.
    #[test]
    fn the_current_wal_file_stays_near_the_cap() {
        const CAP: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let db = open_with_wal_cap(&path, CAP).expect("open");
        let value = vec![7u8; 64 * 1024];
        // 16 MiB in all, into two column families, as a put writes the log
        // and the key space.
        for i in 0u32..128 {
            for name in [ALL_CFS[0], CF_KV] {
                db.put_cf(cf(&db, name).expect("cf"), i.to_be_bytes(), &value)
                    .expect("put");
            }
        }
        let largest = std::fs::read_dir(&path)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().expect("metadata").len())
            .max()
            .expect("a WAL file");
        assert!(
            largest <= 2 * CAP,
            "a WAL file of {largest} bytes behind a cap of {CAP}"
        );
    }
}
