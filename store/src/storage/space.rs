//! Free space on the filesystem of the data directory, and the reserve file
//! that lets a node start and flush on a full disk.
//!
//! RocksDB does not survive running out of space well (the Debian build
//! asserts and aborts), so a node never lets it get there in normal
//! operation:
//! - Below the floor (`--min-free-bytes`) the node reports itself short of
//!   space; the node then raises a `nospace` alarm and every member refuses
//!   writes that could add data (see `raft::alarm`).
//! - The reserve (`--reserve-bytes`) is a file of that size in the data
//!   directory, written when the disk has room for it above the floor. It is
//!   deleted when the disk is nearly full anyway (below half the floor at run
//!   time, for example because another process filled it, or below the floor
//!   at start), which gives RocksDB the room it needs to open, replay its
//!   log and flush. It is written again once free space is back above the
//!   floor plus its size.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The reserve file's name in the data directory.
pub const RESERVE_FILE: &str = "space.reserve";
/// Bytes written per call while the reserve file is created.
const RESERVE_CHUNK_BYTES: usize = 1 << 20;

/// How a node guards the free space of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceOptions {
    /// Below this many free bytes the node is short of space (0: never).
    pub min_free_bytes: u64,
    /// Size of the reserve file (0: none).
    pub reserve_bytes: u64,
    /// How often free space is measured besides before each write.
    pub check_interval: Duration,
}

/// Bytes an unprivileged process may still write on the filesystem that
/// holds `dir` (`statvfs`: available blocks times the fragment size).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// Whether `e` (or the RocksDB message it carries) says the disk is full.
pub fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENOSPC)
        || e.kind() == io::ErrorKind::StorageFull
        || e.to_string().contains("No space left on device")
        || e.to_string().contains("NoSpace")
}

/// The free space of one data directory, as last measured, and its reserve
/// file. Shared by the request paths (which measure before a write) and the
/// monitor task.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    options: SpaceOptions,
    free: AtomicU64,
    low: AtomicBool,
    /// Wakes the monitor when a write found the disk short, so the alarm is
    /// raised without waiting for the next periodic check.
    wake: tokio::sync::Notify,
}

impl DiskSpace {
    /// Measures `data_dir` at start and settles the reserve: deleted when
    /// free space is below the floor (so RocksDB can open), written when
    /// there is room for it above the floor.
    pub fn at_start(data_dir: &Path, options: SpaceOptions) -> io::Result<DiskSpace> {
        let space = DiskSpace {
            dir: data_dir.to_path_buf(),
            options,
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        };
        let free = free_bytes(&space.dir)?;
        if free < options.min_free_bytes {
            space.release_reserve(free);
        }
        space.settle()?;
        Ok(space)
    }

    /// The options it runs with.
    pub fn options(&self) -> SpaceOptions {
        self.options
    }

    /// Free bytes at the last measurement.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Acquire)
    }

    /// Whether the last measurement was below the floor.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Acquire)
    }

    /// Asks the monitor for a check now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`DiskSpace::wake`] is called (or was, since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether the reserve file is in place.
    pub fn reserve_present(&self) -> bool {
        self.reserve_path().is_file()
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Measures free space (cheap: one `statvfs`) and records it. Returns
    /// whether the node is short of space.
    pub fn measure(&self) -> io::Result<bool> {
        let free = free_bytes(&self.dir)?;
        let low = free < self.options.min_free_bytes;
        self.free.store(free, Ordering::Release);
        self.low.store(low, Ordering::Release);
        Ok(low)
    }

    /// One periodic check: measures, deletes the reserve when the disk is
    /// nearly full (below half the floor), writes it back when there is room
    /// again. Blocking (it may write the reserve file). Returns whether the
    /// node is short of space.
    pub fn check(&self) -> io::Result<bool> {
        let free = free_bytes(&self.dir)?;
        if free < self.options.min_free_bytes / 2 {
            self.release_reserve(free);
        }
        self.settle()
    }

    /// Deletes the reserve now, whatever the free space (a RocksDB write
    /// failed for lack of space). Returns whether there was one.
    pub fn release_now(&self) -> bool {
        let free = self.free();
        self.release_reserve(free)
    }

    fn release_reserve(&self, free: u64) -> bool {
        let path = self.reserve_path();
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(
                    free_bytes = free,
                    reserve_bytes = self.options.reserve_bytes,
                    "the disk is nearly full: deleted the reserve file to give the database room"
                );
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot delete the reserve file");
                false
            }
        }
    }

    /// Writes the reserve when it is missing and fits above the floor, then
    /// records the free space.
    fn settle(&self) -> io::Result<bool> {
        let reserve = self.options.reserve_bytes;
        let free = free_bytes(&self.dir)?;
        if reserve > 0
            && free >= self.options.min_free_bytes.saturating_add(reserve)
            && !self.reserve_present()
        {
            match write_reserve(&self.reserve_path(), reserve) {
                Ok(()) => tracing::info!(bytes = reserve, "wrote the reserve file"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the reserve file");
                }
            }
        }
        self.measure()
    }
}

/// Writes `bytes` of zeros (real blocks, not a sparse file) to a temporary
/// file, syncs it and renames it to `path`; leaves nothing on failure.
fn write_reserve(path: &Path, bytes: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&tmp)?;
        let chunk = vec![0u8; RESERVE_CHUNK_BYTES];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(RESERVE_CHUNK_BYTES as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(min_free_bytes: u64, reserve_bytes: u64) -> SpaceOptions {
        SpaceOptions {
            min_free_bytes,
            reserve_bytes,
            check_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn free_space_is_measured() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_reserve_is_written_when_it_fits_and_the_floor_decides_low() {
        let dir = tempfile::tempdir().expect("temp dir");
        let space = DiskSpace::at_start(dir.path(), options(0, 1 << 20)).expect("start");
        assert!(space.reserve_present());
        assert_eq!(
            fs::metadata(dir.path().join(RESERVE_FILE))
                .expect("reserve")
                .len(),
            1 << 20
        );
        assert!(!space.is_low());
        assert!(space.free() > 0);
        assert!(space.release_now());
        assert!(!space.reserve_present());
        assert!(!space.release_now());
        // Written again at the next check.
        assert!(!space.check().expect("check"));
        assert!(space.reserve_present());
    }

    #[test]
    fn a_floor_above_the_free_space_is_low_and_releases_the_reserve() {
        let dir = tempfile::tempdir().expect("temp dir");
        let space = DiskSpace::at_start(dir.path(), options(0, 1 << 20)).expect("start");
        assert!(space.reserve_present());
        // A floor no disk here meets: short of space, and the reserve goes
        // at start (it would also go at a check: free < floor / 2).
        let space = DiskSpace::at_start(dir.path(), options(u64::MAX, 1 << 20)).expect("start");
        assert!(space.is_low());
        assert!(!space.reserve_present());
        assert!(space.check().expect("check"));
        assert!(!space.reserve_present(), "no room for it above the floor");
    }

    #[test]
    fn enospc_is_recognized() {
        assert!(is_no_space(&io::Error::from_raw_os_error(
            nix::libc::ENOSPC
        )));
        assert!(is_no_space(&io::Error::other(
            "IO error: No space left on device: While appending to file"
        )));
        assert!(!is_no_space(&io::Error::other("corruption")));
    }
}
