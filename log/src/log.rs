//! [`Log`]: opening a data directory, reading partitions, and handing writes to the
//! writer thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::batch::Batch;
use crate::disk::{DataFile, Disk};
use crate::error::{Error, Result};
use crate::maintenance;
use crate::record::RecordView;
use crate::schema::{
    DEDUPE, DEDUPE_EXPIRY, FENCING_BLOCK, FENCING_FLOOR, FORMAT_VERSION, GROUP_OFFSETS,
    MAX_PARTITIONS, META, PARTITIONS, PURGE, RECORDS, TOPICS, TopicMeta, pkey, record_key,
};
use crate::topic::{Topic, TopicConfig};
use crate::wal::Wal;
use crate::writer::{Command, Reply, Writer};

/// Called after each durable commit with every partition it advanced:
/// `(topic id, partition, new end offset)`.
pub type AppendHook = Arc<dyn Fn(u64, u32, u64) + Send + Sync>;

/// Called after each commit round with its size and duration.
pub type CommitHook = Arc<dyn Fn(&CommitStats) + Send + Sync>;

/// What one commit round did.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    /// Records written.
    pub records: usize,
    /// Time from taking the group to the end of its fsync.
    pub duration: Duration,
}

/// How to open a log.
#[derive(Clone)]
pub struct LogOptions {
    /// Use redb's two-phase commit: two fsyncs per commit instead of one, so that even
    /// a deliberately crafted torn write can never be mistaken for a valid commit.
    /// Off (the default), a torn commit is detected by its checksum and rolled back.
    pub two_phase_commit: bool,
    /// How long an idempotency key or CloudEvent `source`+`id` is remembered.
    pub dedupe_window: Duration,
    /// How often retention, compaction, dedupe expiry and purges of deleted topics run.
    pub maintenance_interval: Duration,
    /// The longest a compacted partition keeps new records before a compaction pass
    /// (one runs sooner once half its records are new).
    pub compaction_max_dirty: Duration,
    /// Size of redb's page cache in bytes: the bulk of the process's memory.
    pub cache_bytes: usize,
    /// Called after each commit that appended records (more can subscribe later,
    /// see [`Log::subscribe`]).
    pub on_append: Option<AppendHook>,
    /// Called after each commit round.
    pub on_commit: Option<CommitHook>,
    /// Appends are refused while the data directory's disk has less free space
    /// than this (see [`crate::DiskStatus`]).
    pub min_free_bytes: u64,
    /// Size of the reserve file kept for a full disk; 0 keeps none.
    pub reserve_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            two_phase_commit: false,
            dedupe_window: Duration::from_secs(3600),
            maintenance_interval: Duration::from_secs(1),
            compaction_max_dirty: Duration::from_secs(60),
            cache_bytes: 64 * 1024 * 1024,
            on_append: None,
            on_commit: None,
            min_free_bytes: 64 << 20,
            reserve_bytes: 32 << 20,
        }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("two_phase_commit", &self.two_phase_commit)
            .field("dedupe_window", &self.dedupe_window)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

/// A record ready to append: its partition chosen and its bytes encoded
/// (see [`crate::RecordParts::encode`]).
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Target partition.
    pub partition: u32,
    /// Stored form of the record.
    pub bytes: Vec<u8>,
}

/// Records that are written together or not at all, and remembered under a dedupe
/// key when one is given: a unit whose key was seen within the dedupe window is not
/// written again, and its original offsets are returned instead.
#[derive(Debug, Clone, Default)]
pub struct AppendUnit {
    /// Idempotency key, unique per topic.
    pub dedupe_key: Option<Vec<u8>>,
    /// The unit's records.
    pub records: Vec<NewRecord>,
}

/// One append: units of records for one topic, answered with one `(partition,
/// offset)` per record in request order.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Topic name.
    pub topic: String,
    /// Id of the topic the partitions were chosen for; if the topic was deleted and
    /// re-created since, the append is refused rather than misplaced.
    pub topic_id: u64,
    /// The units, in order.
    pub units: Vec<AppendUnit>,
}

impl AppendRequest {
    /// Checks every record against the topic it is for (`partitions` of them,
    /// compacted or not): each decodes, names an existing partition, and has a
    /// key when the topic is compacted. Engines check before writing anything.
    pub fn check(&self, partitions: u32, compacted: bool) -> Result<()> {
        for unit in &self.units {
            for r in &unit.records {
                let Some(view) = RecordView::decode(&r.bytes) else {
                    return Err(Error::Invalid("a record does not decode".into()));
                };
                if compacted && view.key.is_none() {
                    return Err(Error::KeyRequired(self.topic.clone()));
                }
                if r.partition >= partitions {
                    return Err(Error::PartitionNotFound {
                        topic: self.topic.clone(),
                        partition: r.partition,
                        partitions,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The outcome of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Offset after the last record visited (the next one to read).
    pub next_offset: u64,
    /// The partition's end offset when the read started.
    pub high_watermark: u64,
    /// The partition's first retained offset.
    pub start_offset: u64,
    /// Records visited.
    pub records: usize,
}

pub(crate) struct Shared {
    pub db: Database,
    pub disk: Arc<Disk>,
    pub topics: RwLock<HashMap<String, Arc<Topic>>>,
    pub poisoned: AtomicBool,
    /// Batches only the write-ahead log holds yet.
    pub pending: crate::pending::PendingBatches,
    /// Told of every partition whose end moved, after each commit round.
    pub on_append: RwLock<Vec<AppendHook>>,
    pub on_commit: Option<CommitHook>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Command>,
    epoch: String,
    path: PathBuf,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.writer.lock().expect("writer lock").take() {
            let _ = t.join();
        }
    }
}

/// Held by every handle the caller has, not by the maintenance thread's own. When
/// the last one goes, it stops that thread and waits for it, so the thread's
/// short-lived handles are gone before the caller's last handle closes the file:
/// dropping the last `Log` closes it on the caller's thread, and a reopen right
/// after finds it closed.
struct Owner {
    stop: Arc<(Mutex<bool>, Condvar)>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        {
            let (flag, cv) = &*self.stop;
            *flag.lock().expect("stop lock") = true;
            cv.notify_all();
        }
        if let Some(t) = self.maintenance.lock().expect("maintenance lock").take() {
            let _ = t.join();
        }
    }
}

/// A durable partitioned log in one redb file. Cheap to clone; the last clone to be
/// dropped stops the writer and closes the file.
#[derive(Clone)]
pub struct Log {
    // Dropped before `inner`: see `Owner`. `None` in the maintenance thread's
    // handles.
    _owner: Option<Arc<Owner>>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks a topic, group, table or consumer name: `[A-Za-z0-9._-]{1,249}`.
pub fn valid_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Makes a new database under a temporary name and renames it into place once it
/// is durable, so that a power cut during the first start never leaves a file that
/// does not open (redb writes its header only with the first fsync). A file that is
/// empty or all zeros, as such a cut left behind before, holds nothing and counts
/// as not made yet.
fn create_if_new(dir: &Path, path: &Path, builder: &redb::Builder, disk: &Arc<Disk>) -> Result<()> {
    let fresh = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e.into()),
        Ok(f) => {
            use std::io::Read;
            let mut reader = std::io::BufReader::new(f);
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break true;
                }
                if buf[..n].iter().any(|b| *b != 0) {
                    break false;
                }
            }
        }
    };
    if !fresh {
        return Ok(());
    }
    let tmp = dir.join(format!("{}.new", crate::backup::DB_FILE));
    let _ = std::fs::remove_file(&tmp);
    {
        let db = builder.create_with_backend(DataFile::open(&tmp, disk.clone())?)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Log {
    /// Opens (or creates) the log in `dir`. Start-up reads one row per topic and
    /// per partition, never the records.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log> {
        std::fs::create_dir_all(dir)?;
        crate::backup::remove_stale_snapshots(dir);
        let path = dir.join(crate::backup::DB_FILE);
        let disk = Disk::open(dir, options.min_free_bytes, options.reserve_bytes);
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        create_if_new(dir, &path, &builder, &disk)?;
        let db = builder.create_with_backend(DataFile::open(&path, disk.clone())?)?;
        let txn = db.begin_write()?;
        let epoch;
        let next_topic_id;
        let mut topics = HashMap::new();
        // Rows of the write-ahead log's entries that redb's last durable commit does
        // not hold are written again first.
        let (mut wal, entries) = Wal::open(dir)?;
        let mut wal_seq = {
            let meta = txn.open_table(META)?;
            meta.get("wal_seq")?
                .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
                .unwrap_or(0)
        };
        let mut replayed = 0usize;
        for (seq, puts) in entries {
            if seq > wal_seq {
                crate::wal::replay(&txn, &puts)?;
                wal_seq = seq;
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(entries = replayed, "replayed the write-ahead log");
        }
        txn.open_table(META)?
            .insert("wal_seq", wal_seq.to_le_bytes().as_slice())?;
        {
            let mut meta = txn.open_table(META)?;
            let stored = meta
                .get("epoch")?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            epoch = match stored {
                Some(e) => e,
                None => {
                    let e = format!("{:016x}", rand::random::<u64>());
                    meta.insert("epoch", e.as_bytes())?;
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())?;
                    e
                }
            };
            let format = meta
                .get("format")?
                .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])));
            if let Some(f) = format.filter(|f| *f != FORMAT_VERSION) {
                return Err(Error::Invalid(format!(
                    "data directory has format {f}; this build reads format {FORMAT_VERSION}"
                )));
            }
            next_topic_id = meta
                .get("next_topic_id")?
                .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
                .unwrap_or(1);
            // Create every table so readers never meet a missing one.
            txn.open_table(RECORDS)?;
            txn.open_table(DEDUPE)?;
            txn.open_table(DEDUPE_EXPIRY)?;
            txn.open_table(PURGE)?;
            txn.open_table(GROUP_OFFSETS)?;
            crate::state::create_tables(&txn)?;
            let parts = txn.open_table(PARTITIONS)?;
            let table = txn.open_table(TOPICS)?;
            for item in table.iter()? {
                let (name, v) = item?;
                let meta: TopicMeta = serde_json::from_slice(v.value())
                    .map_err(|e| Error::Invalid(format!("topic row does not decode: {e}")))?;
                let topic = Topic::new(name.value().to_string(), &meta);
                for p in 0..meta.partitions {
                    if let Some(s) = parts.get(pkey(meta.id, p))? {
                        topic.parts[p as usize].store(s.value());
                    }
                }
                topics.insert(name.value().to_string(), Arc::new(topic));
            }
        }
        txn.commit()?;
        wal.reset()?;

        let shared = Arc::new(Shared {
            db,
            disk,
            topics: RwLock::new(topics),
            poisoned: AtomicBool::new(false),
            pending: Default::default(),
            on_append: RwLock::new(options.on_append.iter().cloned().collect()),
            on_commit: options.on_commit.clone(),
        });
        let (tx, rx) = channel();
        let writer = Writer {
            shared: shared.clone(),
            rx,
            next_topic_id,
            two_phase_commit: options.two_phase_commit,
            poisoned: false,
            path: path.clone(),
            wal,
            wal_seq,
            last_durable: std::time::Instant::now(),
            refusing_appends: false,
            disk_checked: None,
        };
        let writer = std::thread::Builder::new()
            .name("sluice-writer".into())
            .spawn(move || writer.run())?;
        let inner = Arc::new(Inner {
            shared,
            tx,
            epoch,
            path,
            writer: Mutex::new(Some(writer)),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let owner = Arc::new(Owner {
            stop: stop.clone(),
            maintenance: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let interval = options.maintenance_interval;
        let window = options.dedupe_window;
        let max_dirty = options.compaction_max_dirty;
        let maintenance = std::thread::Builder::new()
            .name("sluice-maintenance".into())
            .spawn(move || {
                maintenance::run(interval, window, max_dirty, &stop, || {
                    weak.upgrade().map(|inner| Log {
                        _owner: None,
                        inner,
                    })
                })
            })?;
        *owner.maintenance.lock().expect("maintenance lock") = Some(maintenance);
        Ok(Log {
            _owner: Some(owner),
            inner,
        })
    }

    /// The data directory's random epoch: it changes when the data is wiped.
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// Path of the redb file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Free space of the data directory's disk, and whether appends are taken.
    pub fn disk(&self) -> crate::DiskStatus {
        self.inner.shared.disk.status()
    }

    /// Calls `hook(topic id, partition, end offset)` after every commit round that
    /// moved a partition's end, on the writer thread (it must not block).
    pub fn subscribe(&self, hook: AppendHook) {
        self.inner
            .shared
            .on_append
            .write()
            .expect("subscribers lock")
            .push(hook);
    }

    /// Whether a failed commit has stopped all writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner
            .shared
            .topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .inner
            .shared
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub(crate) fn send(&self, cmd: Command) {
        if let Err(e) = self.inner.tx.send(cmd) {
            // The writer is gone: answer the command here.
            crate::writer::reject_closed(e.0);
        }
    }

    /// Creates a topic; `reply` is called once the topic is durable.
    pub fn create_topic(&self, name: &str, config: TopicConfig, reply: Reply<Arc<Topic>>) {
        if let Err(e) = check_topic(name, &config) {
            return reply(Err(e));
        }
        self.send(Command::CreateTopic {
            name: name.to_string(),
            config,
            reply,
        });
    }

    /// Deletes a topic; its records are purged in the background.
    pub fn delete_topic(&self, name: &str, reply: Reply<()>) {
        self.send(Command::DeleteTopic {
            name: name.to_string(),
            reply,
        });
    }

    /// Appends records; `reply` gets one `(partition, offset)` per record, in order,
    /// once they are durable.
    pub fn append(&self, request: AppendRequest, reply: Reply<Vec<(u32, u64)>>) {
        self.send(Command::Append { request, reply });
    }

    /// Commits a consumer group's offsets (the next offset to read per partition),
    /// atomically; `reply` is called once they are durable.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(Arc<Topic>, u32, u64)>,
        reply: Reply<()>,
    ) {
        self.send(Command::CommitOffsets {
            group: group.to_string(),
            offsets,
            reply,
        });
    }

    /// Forgets a consumer group's committed offsets; answers how many there were.
    pub fn delete_group(&self, group: &str, reply: Reply<usize>) {
        self.send(Command::DeleteGroup {
            group: group.to_string(),
            reply,
        });
    }

    /// Runs `apply` inside the next commit round's write transaction. `reply` is
    /// called once the commit is durable.
    pub(crate) fn write(&self, apply: crate::writer::WriteFn, reply: Reply<()>) {
        self.send(Command::Write { apply, reply });
    }

    /// A consistent copy of the whole database as of the last commit, for backups:
    /// an unlinked temporary file in the data directory, open at its start, and its
    /// length. Writes wait while the file is copied; reads do not.
    pub fn snapshot(&self, reply: Reply<(std::fs::File, u64)>) {
        self.send(Command::Snapshot { reply });
    }

    /// [`Log::write`], waiting for the answer.
    pub(crate) fn write_blocking(&self, apply: crate::writer::WriteFn) -> Result<()> {
        blocking(|r| self.write(apply, r))
    }

    /// A read transaction over the whole file.
    pub(crate) fn read_txn(&self) -> Result<redb::ReadTransaction> {
        Ok(self.inner.shared.db.begin_read()?)
    }

    /// A group's committed offsets for one topic, per partition.
    pub fn committed_offsets(&self, group: &str, topic: &Topic) -> Result<Vec<Option<u64>>> {
        let mut out = vec![None; topic.partition_count() as usize];
        let txn = self.inner.shared.db.begin_read()?;
        let table = txn.open_table(GROUP_OFFSETS)?;
        for item in table.range((group, topic.id, 0u32)..=(group, topic.id, u32::MAX))? {
            let (k, v) = item?;
            let (_, _, p) = k.value();
            if let Some(slot) = out.get_mut(p as usize) {
                *slot = Some(v.value());
            }
        }
        Ok(out)
    }

    /// Every group with committed offsets, with the topics (that still exist) it
    /// committed for.
    pub fn committed_groups(&self) -> Result<Vec<(String, Vec<Arc<Topic>>)>> {
        let by_id: HashMap<u64, Arc<Topic>> =
            self.topics().into_iter().map(|t| (t.id, t)).collect();
        let txn = self.inner.shared.db.begin_read()?;
        let table = txn.open_table(GROUP_OFFSETS)?;
        let mut out: Vec<(String, Vec<Arc<Topic>>)> = Vec::new();
        for item in table.iter()? {
            let (k, _) = item?;
            let (group, topic_id, _) = k.value();
            let Some(topic) = by_id.get(&topic_id) else {
                continue;
            };
            match out.last_mut() {
                Some((g, topics)) if g == group => {
                    if topics.last().is_none_or(|t| t.id != topic_id) {
                        topics.push(topic.clone());
                    }
                }
                _ => out.push((group.to_string(), vec![topic.clone()])),
            }
        }
        Ok(out)
    }

    /// Durably reserves a block of fencing tokens (consumer-group generations) that
    /// no earlier reservation in this data directory handed out, and returns it.
    /// Blocks until the reservation is durable.
    pub fn reserve_fencing_tokens(&self) -> Result<std::ops::Range<u64>> {
        let floor = Arc::new(AtomicU64::new(0));
        let seen = floor.clone();
        self.write_blocking(Box::new(move |txn| {
            let mut meta = txn.open_table(META)?;
            let start = meta
                .get(FENCING_FLOOR)?
                .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
                .unwrap_or(1);
            let end = start.saturating_add(FENCING_BLOCK);
            meta.insert(FENCING_FLOOR, end.to_le_bytes().as_slice())?;
            seen.store(start, Ordering::Release);
            Ok(Ok(()))
        }))?;
        let start = floor.load(Ordering::Acquire);
        Ok(start..start.saturating_add(FENCING_BLOCK))
    }

    /// [`Log::create_topic`], waiting for the answer.
    pub fn create_topic_blocking(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        blocking(|r| self.create_topic(name, config, r))
    }

    /// [`Log::delete_topic`], waiting for the answer.
    pub fn delete_topic_blocking(&self, name: &str) -> Result<()> {
        blocking(|r| self.delete_topic(name, r))
    }

    /// [`Log::commit_offsets`], waiting for the answer.
    pub fn commit_offsets_blocking(
        &self,
        group: &str,
        offsets: Vec<(Arc<Topic>, u32, u64)>,
    ) -> Result<()> {
        blocking(|r| self.commit_offsets(group, offsets, r))
    }

    /// [`Log::append`], waiting for the answer.
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Vec<(u32, u64)>> {
        blocking(|r| self.append(request, r))
    }

    /// Reads records of one partition from `from`, at most `max_records` and about
    /// `max_bytes` (the first record is always read, however large, so a reader makes
    /// progress). Each record is handed to `visit` with its offset, straight from the
    /// storage page.
    pub fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(u64, RecordView<'_>),
    ) -> Result<ReadOutcome> {
        let state = topic.state(partition)?;
        let (start, end, _) = state.load();
        if from < start || from > end {
            return Err(Error::OffsetOutOfRange {
                offset: from,
                start,
                end,
            });
        }
        let mut outcome = ReadOutcome {
            next_offset: from,
            high_watermark: end,
            start_offset: start,
            records: 0,
        };
        if from == end || max_records == 0 {
            return Ok(outcome);
        }
        let pk = pkey(topic.id, partition);
        // Missing records below a batch: retention removed them after `start` was
        // read (an error), or compaction removed whole batches (skipped).
        let retained = || {
            let (start, end, _) = state.load();
            if from < start {
                Err(Error::OffsetOutOfRange {
                    offset: from,
                    start,
                    end,
                })
            } else {
                Ok(())
            }
        };
        let mut bytes = 0usize;
        let mut visited = false;
        let mut done = false;
        self.scan(pk, from, end, max_records, |base, value| {
            visited = true;
            let corrupted = || Error::Corrupted {
                pkey: pk,
                offset: base,
            };
            let batch = Batch::parse(value).ok_or_else(corrupted)?;
            if base > outcome.next_offset {
                retained()?;
                outcome.next_offset = base;
            }
            let skip = (outcome.next_offset - base) as usize;
            for i in skip..batch.len() {
                let offset = base + i as u64;
                if offset >= end {
                    return Ok(false);
                }
                let value = batch.get(i).ok_or_else(corrupted)?;
                if value.is_empty() {
                    // Compacted away: the offset stays, with no record.
                    outcome.next_offset = offset + 1;
                    continue;
                }
                if outcome.records > 0 && bytes + value.len() > max_bytes {
                    done = true;
                    return Ok(false);
                }
                let view = RecordView::decode(value).ok_or_else(corrupted)?;
                visit(offset, view);
                bytes += value.len();
                outcome.records += 1;
                outcome.next_offset = offset + 1;
                if outcome.records >= max_records {
                    done = true;
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if !visited {
            retained()?;
        }
        if !done {
            // Everything below `end` was visited: offsets past the last record read
            // hold no record (compacted away).
            outcome.next_offset = end;
        }
        Ok(outcome)
    }

    /// Visits the stored batches of partition `pk` that may hold offsets in
    /// `[from, end)`, in offset order: from redb below the first offset of the
    /// batches only the write-ahead log holds yet (see [`crate::pending`]), then
    /// those, enough of them for `max_records` records. `visit` gets a batch's first
    /// offset and bytes and says whether to go on.
    pub(crate) fn scan(
        &self,
        pk: u64,
        from: u64,
        end: u64,
        max_records: usize,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        // Taken before the read transaction is opened: see `crate::pending`.
        let pending = self
            .inner
            .shared
            .pending
            .batches_from(pk, from, max_records);
        let stored_end = pending.as_ref().map_or(end, |(first, _)| (*first).min(end));
        if from < stored_end {
            let txn = self.inner.shared.db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            // The batch holding `from` is the last one whose first offset is at or
            // below it.
            let base = table
                .range(record_key(pk, 0)..=record_key(pk, from))?
                .next_back()
                .transpose()?
                .map_or(from, |(k, _)| k.value() as u64);
            for item in table.range(record_key(pk, base)..record_key(pk, stored_end))? {
                let (k, v) = item?;
                if !visit(k.value() as u64, v.value())? {
                    return Ok(());
                }
            }
        }
        for (base, bytes) in pending.map(|(_, b)| b).unwrap_or_default() {
            if base >= end || !visit(base, &bytes)? {
                break;
            }
        }
        Ok(())
    }

    /// The offset of the first record whose timestamp is at or after `timestamp_ms`,
    /// or the end offset if there is none. Scans forward from the start; meant for
    /// rare administrative seeks, not the fetch path.
    pub fn offset_for_timestamp(
        &self,
        topic: &Topic,
        partition: u32,
        timestamp_ms: u64,
    ) -> Result<u64> {
        let state = topic.state(partition)?;
        let (start, end, _) = state.load();
        let pk = pkey(topic.id, partition);
        let mut found = end;
        self.scan(pk, start, end, usize::MAX, |base, value| {
            let corrupted = || Error::Corrupted {
                pkey: pk,
                offset: base,
            };
            let batch = Batch::parse(value).ok_or_else(corrupted)?;
            for i in 0..batch.len() {
                let r = batch.get(i).ok_or_else(corrupted)?;
                if r.is_empty() {
                    continue;
                }
                let r = RecordView::decode(r).ok_or_else(corrupted)?;
                if r.timestamp >= timestamp_ms && base + i as u64 >= start {
                    found = (base + i as u64).min(end);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// The timestamp of a partition's first retained record, if it has one.
    pub(crate) fn first_timestamp(&self, topic: &Topic, partition: u32) -> Result<Option<u64>> {
        let (start, end, _) = topic.parts[partition as usize].load();
        if start == end {
            return Ok(None);
        }
        let mut first = None;
        self.scan(pkey(topic.id, partition), start, end, 1, |_, value| {
            let Some(b) = Batch::parse(value) else {
                return Ok(false);
            };
            // The first record not compacted away.
            let record = (0..b.len())
                .filter_map(|i| b.get(i))
                .find(|r| !r.is_empty());
            match record {
                Some(r) => {
                    first = RecordView::decode(r).map(|r| r.timestamp);
                    Ok(false)
                }
                None => Ok(true),
            }
        })?;
        Ok(first)
    }
}

fn check_topic(name: &str, config: &TopicConfig) -> Result<()> {
    if !valid_name(name) {
        return Err(Error::Invalid(
            "topic names are 1 to 249 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
        return Err(Error::Invalid(format!(
            "partitions must be between 1 and {MAX_PARTITIONS}"
        )));
    }
    Ok(())
}

/// Runs a callback-style call and waits for its answer.
pub(crate) fn blocking<T: Send + 'static>(call: impl FnOnce(Reply<T>)) -> Result<T> {
    let (tx, rx) = sync_channel(1);
    call(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv().unwrap_or(Err(Error::Closed))
}
