//! The data directory's disk: how much room is left, the floor below which
//! appends are refused, the reserve kept for a full disk, and the storage backend
//! of the redb file.
//!
//! A full disk must never break the store. redb latches the first I/O error of its
//! file and then fails every read and write until it is reopened, so the log keeps
//! redb from meeting one:
//! - **The floor.** Appends are refused ([`crate::Error::InsufficientStorage`])
//!   while free space is below `min_free_bytes`; deletes, offset commits,
//!   retention, compaction and purges go on, and so free space.
//! - **The reserve.** `sluice.reserve`, a file of allocated blocks, stands for room
//!   the disk may lack when something else fills it. When a write of the redb file
//!   finds the disk full, the reserve is deleted and the write tried once more; so a
//!   full disk costs the reserve, not the store. The reserve comes back once there
//!   is room for it above the floor.
//! - **Real blocks.** The file grows by `fallocate`, not by a sparse `set_len`, so
//!   running out of space shows at growth (where the reserve catches it) rather
//!   than at a later write or fsync.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fs4::fs_std::FileExt;
use redb::StorageBackend;
use redb::backends::FileBackend;

/// The reserve's file name in the data directory.
pub const RESERVE_FILE: &str = "sluice.reserve";

/// Free space, the floor and the reserve of one data directory.
#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    min_free: u64,
    reserve_bytes: u64,
    /// Whether the reserve file is there, allocated.
    reserved: AtomicBool,
}

/// What the disk looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStatus {
    /// Bytes free for the data directory (as an unprivileged user sees them).
    pub free_bytes: u64,
    /// The floor: appends are refused below it.
    pub min_free_bytes: u64,
    /// Whether the reserve is held (it is spent when the disk fills up).
    pub reserve_held: bool,
}

impl DiskStatus {
    /// Whether appends are taken.
    pub fn appends_allowed(&self) -> bool {
        self.free_bytes >= self.min_free_bytes
    }
}

impl Disk {
    /// The disk of `dir`; takes the reserve if it is missing and there is room.
    pub(crate) fn open(dir: &Path, min_free: u64, reserve_bytes: u64) -> Arc<Disk> {
        let path = dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() >= reserve_bytes);
        let disk = Arc::new(Disk {
            dir: dir.to_path_buf(),
            min_free,
            reserve_bytes,
            reserved: AtomicBool::new(held),
        });
        disk.restore_reserve();
        disk
    }

    /// Free space now. An error reading it counts as none free.
    pub(crate) fn status(&self) -> DiskStatus {
        let free_bytes = fs4::statvfs(&self.dir)
            .map(|s| s.available_space())
            .unwrap_or(0);
        DiskStatus {
            free_bytes,
            min_free_bytes: self.min_free,
            reserve_held: self.reserved.load(Ordering::Acquire),
        }
    }

    /// Deletes the reserve to make room; returns whether there was one to delete.
    pub(crate) fn release_reserve(&self) -> bool {
        if !self.reserved.swap(false, Ordering::AcqRel) {
            return false;
        }
        let released = std::fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok();
        if released {
            tracing::warn!(
                bytes = self.reserve_bytes,
                "the disk is full: released the reserve so the store can go on"
            );
        }
        released
    }

    /// Takes the reserve again once there is room for it above the floor.
    pub(crate) fn restore_reserve(&self) {
        if self.reserve_bytes == 0 || self.reserved.load(Ordering::Acquire) {
            return;
        }
        if self.status().free_bytes < self.min_free.saturating_add(self.reserve_bytes) {
            return;
        }
        let path = self.dir.join(RESERVE_FILE);
        let made = File::create(&path).and_then(|f| {
            FileExt::allocate(&f, self.reserve_bytes)?;
            f.sync_all()
        });
        match made {
            Ok(()) => self.reserved.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "could not take the disk reserve");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Runs `op`; if the disk is full, releases the reserve and runs it once more.
    fn retry_when_full<T>(&self, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::StorageFull && self.release_reserve() => op(),
            other => other,
        }
    }
}

/// The redb file: redb's own file backend (reads, writes, locks), with growth by
/// allocated blocks and a second try after releasing the reserve when the disk is
/// full.
#[derive(Debug)]
pub(crate) struct DataFile {
    inner: FileBackend,
    /// The same file, for `fallocate`.
    file: File,
    disk: Arc<Disk>,
}

impl DataFile {
    pub(crate) fn open(path: &Path, disk: Arc<Disk>) -> io::Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file.try_clone()?).map_err(io::Error::other)?;
        Ok(DataFile { inner, file, disk })
    }
}

impl StorageBackend for DataFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? {
            let grown = self
                .disk
                .retry_when_full(|| FileExt::allocate(&self.file, len));
            match grown {
                Ok(()) => {}
                // A file system without allocation: grow as redb would.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        self.disk.retry_when_full(|| self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.retry_when_full(|| self.inner.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
