//! Backups: a consistent copy of the database taken while it serves, and restoring
//! one into a data directory.
//!
//! A snapshot is taken on the writer thread between two commit rounds, right after a
//! durable commit that holds everything the write-ahead log held; nothing writes
//! while the file is copied, so the copy is the database exactly as of that commit.
//! The copy opens like a database after a crash at that commit. Writes wait while
//! the file is copied; reads go on.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::schema::{META, PARTITIONS, TOPICS, TopicMeta, pkey};

/// The database file's name inside a data directory.
pub(crate) const DB_FILE: &str = "sluice.redb";

/// Prefix and suffix of the temporary snapshot files in a data directory; any left
/// by a crash are removed when the log opens.
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".tmp";

/// What a database file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The data's epoch.
    pub epoch: String,
    /// Topics.
    pub topics: usize,
    /// Records retained, over all partitions.
    pub records: u64,
    /// Bytes of records retained.
    pub bytes: u64,
}

/// Copies the database file at `db` (which nothing writes meanwhile) into a new
/// temporary file beside it, unlinks that file and returns it open at its start,
/// with its length.
pub(crate) fn snapshot(db: &Path) -> Result<(File, u64)> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "{SNAPSHOT_PREFIX}{:016x}{SNAPSHOT_SUFFIX}",
        rand::random::<u64>()
    ));
    let mut out = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let copied = (|| {
        let mut src = File::open(db)?;
        let n = std::io::copy(&mut src, &mut out)?;
        out.seek(SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>(n)
    })();
    // Unlinked at once: the open handle keeps the data until the reader is done.
    let _ = std::fs::remove_file(&tmp);
    Ok((out, copied?))
}

/// Removes snapshot files a crash left in `dir`.
pub(crate) fn remove_stale_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(SNAPSHOT_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Opens the database file at `file` (recovering it like after a crash if it needs
/// it) and says what it holds. Fails when it is not a Sluice database or a server
/// has it open.
pub fn inspect(file: &Path) -> Result<Summary> {
    let db = open_file(file)?;
    summarize(&db)
}

fn open_file(file: &Path) -> Result<Database> {
    if !file.is_file() {
        return Err(Error::Invalid(format!("{} is not a file", file.display())));
    }
    Database::open(file).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            Error::Invalid(format!("{} is in use by a running server", file.display()))
        }
        other => Error::Invalid(format!(
            "{} is not a Sluice database: {other}",
            file.display()
        )),
    })
}

fn summarize(db: &Database) -> Result<Summary> {
    let txn = db.begin_read()?;
    let not_ours = |_| Error::Invalid("not a Sluice database: it has no meta table".into());
    let meta = txn.open_table(META).map_err(not_ours)?;
    let epoch = meta
        .get("epoch")?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .ok_or_else(|| Error::Invalid("not a Sluice database: it has no epoch".into()))?;
    let topics = txn.open_table(TOPICS)?;
    let parts = txn.open_table(PARTITIONS)?;
    let mut summary = Summary {
        epoch,
        topics: 0,
        records: 0,
        bytes: 0,
    };
    for item in topics.iter()? {
        let (_, v) = item?;
        let meta: TopicMeta = serde_json::from_slice(v.value())
            .map_err(|e| Error::Invalid(format!("topic row does not decode: {e}")))?;
        summary.topics += 1;
        for p in 0..meta.partitions {
            if let Some(s) = parts.get(pkey(meta.id, p))? {
                let (start, end, bytes) = s.value();
                summary.records += end - start;
                summary.bytes += bytes;
            }
        }
    }
    Ok(summary)
}

/// Makes `data_dir` hold the database in the backup file `backup`. The restored
/// data gets a new epoch: offsets written after the backup was taken will be
/// written again, and the epoch tells clients that stored offsets are void.
/// Refuses when `data_dir` already holds data unless `replace`, and always while a
/// server has it open. The directory's write-ahead log goes with the data it
/// replaces.
pub fn restore(backup: &Path, data_dir: &Path, replace: bool) -> Result<Summary> {
    inspect(backup)?;
    std::fs::create_dir_all(data_dir)?;
    let target = data_dir.join(DB_FILE);
    if target.exists() {
        if !replace {
            return Err(Error::Invalid(format!(
                "{} already holds data; pass --replace to overwrite it",
                data_dir.display()
            )));
        }
        // Fails while a server has it open.
        drop(open_file(&target)?);
    }
    let tmp: PathBuf = data_dir.join(format!("{DB_FILE}.restoring"));
    std::fs::copy(backup, &tmp)?;
    let summary = (|| {
        let db = open_file(&tmp)?;
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert(
            "epoch",
            format!("{:016x}", rand::random::<u64>()).as_bytes(),
        )?;
        txn.commit()?;
        summarize(&db)
    })();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The database and the write-ahead log are one unit: entries of the data being
    // replaced would be replayed onto the restored copy. The log goes first, so a
    // crash in between leaves the old database without it (its durable state, about
    // to be replaced anyway), never the new one with the old log.
    match std::fs::remove_file(data_dir.join(crate::wal::WAL_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    File::open(data_dir)?.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    File::open(data_dir)?.sync_all()?;
    Ok(summary)
}
