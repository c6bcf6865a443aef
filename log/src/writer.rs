//! The single writer thread and its commit rounds (group commit).
//!
//! Every change to the log is a [`Command`] on one channel. The writer takes the
//! first command, then everything that queued behind it (while the previous fsync
//! ran), applies them all in ONE redb write transaction and makes it durable with one
//! fsync for the whole round, across all topics and partitions, idempotency rows
//! included: a round of appends and offset commits through the write-ahead log
//! ([`crate::wal`]), any other round, and periodically one of those, by a durable
//! redb commit. A round that goes through the write-ahead log leaves its record
//! batches in memory ([`crate::pending`]) for a later commit to write to redb with
//! those of many other rounds. Only then does it publish the new offsets to readers
//! and answer each command. A failed commit poisons the log: what reached the disk is
//! unknown, so every later write is refused until the process reopens the log.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use redb::{Durability, ReadableTable, WriteTransaction};

use crate::batch::{self, Batch};
use crate::error::{Error, Result};
use crate::log::Shared;
use crate::record::RecordView;
use crate::schema::{
    DEDUPE, DEDUPE_EXPIRY, GROUP_OFFSETS, META, PARTITIONS, PURGE, RECORDS, TOPICS, TopicMeta,
    decode_dedupe, dedupe_key, encode_dedupe, pkey, record_key,
};
use crate::topic::{Topic, TopicConfig};
use crate::wal::{Put, Wal};
use crate::{AppendRequest, now_ms};

pub(crate) use crate::Reply;

/// The most commands one commit round takes, so a flood of small requests still
/// gets answered in bounded time.
const MAX_ROUND: usize = 4096;

pub(crate) enum Command {
    CreateTopic {
        name: String,
        config: TopicConfig,
        reply: Reply<Arc<Topic>>,
    },
    DeleteTopic {
        name: String,
        reply: Reply<()>,
    },
    Append {
        request: AppendRequest,
        reply: Reply<Vec<(u32, u64)>>,
    },
    /// Retention: delete up to `limit` records from the start of a partition while
    /// they are older than `before_ms` (and below `floor`, when a store holds
    /// the topic back) or the partition holds more than `max_bytes`.
    Trim {
        topic: Arc<Topic>,
        partition: u32,
        before_ms: Option<u64>,
        floor: Option<u64>,
        max_bytes: Option<u64>,
        limit: usize,
        reply: Reply<usize>,
    },
    /// Forget dedupe rows created before `before_ms`, up to `limit` of them.
    ExpireDedupe {
        before_ms: u64,
        limit: usize,
        reply: Reply<usize>,
    },
    /// Delete up to `limit` records of deleted topics.
    Purge {
        limit: usize,
        reply: Reply<usize>,
    },
    /// Set a consumer group's committed offsets, all or none.
    CommitOffsets {
        group: String,
        offsets: Vec<(Arc<Topic>, u32, u64)>,
        reply: Reply<()>,
    },
    /// Forget a consumer group's committed offsets.
    DeleteGroup {
        group: String,
        reply: Reply<usize>,
    },
    /// Run a caller's writes (the table engine's) in the round's transaction.
    Write {
        apply: WriteFn,
        reply: Reply<()>,
    },
    /// A state store's batch as its writer `epoch`, with the records it appends.
    CommitState {
        store: String,
        epoch: u64,
        batch: crate::StateBatch,
        reply: Reply<()>,
    },
    /// Compaction: replace stored batches of a partition (`None` deletes one).
    Compact {
        topic: Arc<Topic>,
        partition: u32,
        changes: Vec<crate::compaction::Change>,
        reply: Reply<()>,
    },
    /// Copy the database file between two commits; see [`crate::backup`].
    Snapshot {
        reply: Reply<(std::fs::File, u64)>,
    },
    Shutdown,
}

/// A caller's writes in a round's transaction. The outer error is a storage failure
/// that sinks the whole round; the inner one refuses this write alone and must only
/// be returned before anything was written.
pub(crate) type WriteFn = Box<dyn FnOnce(&WriteTransaction) -> Result<Result<()>> + Send>;

/// What one command of a round leaves to do after the commit: publish its state and
/// answer its caller.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// Queues a command's answer for after the commit. When applying it failed the
/// whole round fails: the answer then carries that failure (as every answer of a
/// failed round does) and the error is handed back.
fn settle<T: Send + 'static>(
    round: &mut Round,
    reply: Reply<T>,
    applied: Result<Result<T>>,
) -> Result<()> {
    match applied {
        Ok(result) => {
            round.finishes.push(finish(reply, result));
            Ok(())
        }
        Err(e) => {
            round.finishes.push(finish(reply, Err(Error::Closed)));
            Err(e)
        }
    }
}

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> Finish {
    Box::new(move |commit_error| match commit_error {
        None => reply(result),
        Some(e) => reply(Err(Error::CommitFailed(e.to_string()))),
    })
}

/// Partition state as this round sees it, before it is published.
struct Scratch {
    topic: Arc<Topic>,
    partition: u32,
    state: (u64, u64, u64),
}

struct Round {
    /// Topics created (`Some`) or deleted (`None`) by earlier commands of this round.
    topics: HashMap<String, Option<Arc<Topic>>>,
    parts: BTreeMap<u64, Scratch>,
    /// Records to insert, per partition key, in offset order.
    inserts: BTreeMap<u64, Vec<(u64, Vec<u8>)>>,
    finishes: Vec<Finish>,
    now: u64,
    /// The rows this round writes, when it goes to the write-ahead log instead of
    /// being committed durably.
    redo: Option<Vec<Put>>,
}

impl Round {
    fn redo(&mut self, put: impl FnOnce() -> Put) {
        if let Some(r) = &mut self.redo {
            r.push(put());
        }
    }

    fn topic(&self, shared: &Shared, name: &str) -> Option<Arc<Topic>> {
        match self.topics.get(name) {
            Some(t) => t.clone(),
            None => shared
                .topics
                .read()
                .expect("topics lock")
                .get(name)
                .cloned(),
        }
    }

    fn part(&mut self, topic: &Arc<Topic>, partition: u32) -> &mut Scratch {
        self.parts
            .entry(pkey(topic.id, partition))
            .or_insert_with(|| Scratch {
                topic: topic.clone(),
                partition,
                state: topic.parts[partition as usize].load(),
            })
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Command>,
    pub next_topic_id: u64,
    pub two_phase_commit: bool,
    pub poisoned: bool,
    /// The database file, for snapshots.
    pub path: std::path::PathBuf,
    /// The write-ahead log; see [`crate::wal`].
    pub wal: Wal,
    /// Sequence number of the last entry written to it.
    pub wal_seq: u64,
    /// When the last durable commit ran.
    pub last_durable: std::time::Instant,
    /// Whether appends are being refused for want of disk space.
    pub refusing_appends: bool,
    /// The disk's last reading, and when it was taken.
    pub disk_checked: Option<(std::time::Instant, crate::DiskStatus)>,
}

/// How long a reading of the disk's free space stands for appends.
const DISK_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest the write-ahead log goes without a durable commit (a checkpoint)...
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_millis(250);
/// ...or the most it grows.
const CHECKPOINT_BYTES: u64 = 16 << 20;
/// Bytes of batches that only the write-ahead log holds, past which they
/// go to redb with the next round, in a commit without an fsync.
const PENDING_FLUSH_BYTES: usize = 1 << 20;
/// The largest round, in record bytes, that goes through the write-ahead log.
const WAL_MAX_ROUND_BYTES: usize = 256 << 10;

impl Writer {
    pub(crate) fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut cmds = vec![first];
            while cmds.len() < MAX_ROUND {
                match self.rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            let stop = cmds.iter().any(|c| matches!(c, Command::Shutdown));
            // A snapshot splits the round: what came before it is committed first,
            // and nothing is written while the file is copied.
            let mut round = Vec::with_capacity(cmds.len());
            for c in cmds {
                match c {
                    Command::Snapshot { reply } => {
                        if !round.is_empty() {
                            self.commit_round(std::mem::take(&mut round));
                        }
                        reply(if self.poisoned {
                            Err(Error::Poisoned)
                        } else {
                            // The copy must hold what only the write-ahead log holds.
                            self.checkpoint()
                                .and_then(|()| crate::backup::snapshot(&self.path))
                        });
                    }
                    other => round.push(other),
                }
            }
            if !round.is_empty() {
                self.commit_round(round);
            }
            if stop {
                // Commands queued after a shutdown are dropped unanswered; their
                // callers see the log as closed.
                return;
            }
        }
    }

    fn commit_round(&mut self, cmds: Vec<Command>) {
        let started = std::time::Instant::now();
        if self.poisoned {
            for c in cmds {
                reject(c, || Error::Poisoned);
            }
            return;
        }
        let cmds = self.admit(cmds);
        if cmds.is_empty() {
            return;
        }
        let mut round = Round {
            topics: HashMap::new(),
            parts: BTreeMap::new(),
            inserts: BTreeMap::new(),
            finishes: Vec::with_capacity(cmds.len()),
            now: now_ms(),
            redo: None,
        };
        let next_topic_id = self.next_topic_id;
        let mut cmds = cmds.into_iter();
        let outcome = self.apply(&mut round, &mut cmds);
        let commit_error = match outcome {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "round commit failed; refusing further writes");
                self.poisoned = true;
                self.shared.poisoned.store(true, Ordering::Release);
                self.next_topic_id = next_topic_id;
                // The commands the failure left unapplied are answered with it too.
                let message = e.to_string();
                for c in cmds {
                    reject(c, || Error::CommitFailed(message.clone()));
                }
                Some(message)
            }
        };
        if commit_error.is_none() {
            self.publish(&round);
        }
        let records: usize = round.inserts.values().map(Vec::len).sum();
        for f in round.finishes {
            f(commit_error.as_deref());
        }
        if let Some(hook) = &self.shared.on_commit {
            hook(&crate::CommitStats {
                records,
                duration: started.elapsed(),
            });
        }
    }

    /// Refuses the round's appends while the disk is below the floor; everything
    /// else goes on, as deletes, retention and compaction are what frees space.
    /// Takes the disk reserve back once there is room for it.
    fn admit(&mut self, cmds: Vec<Command>) -> Vec<Command> {
        if !cmds.iter().any(|c| matches!(c, Command::Append { .. })) {
            return cmds;
        }
        // While appends are taken, read at most every `DISK_CHECK_EVERY` (at any
        // write rate far less than the floor; it keeps a `statvfs` off most rounds);
        // while they are refused, every time, so they resume as soon as there is room.
        let disk = &self.shared.disk;
        let status = match self.disk_checked {
            Some((at, status)) if status.appends_allowed() && at.elapsed() < DISK_CHECK_EVERY => {
                status
            }
            _ => {
                let status = disk.status();
                if !status.reserve_held {
                    disk.restore_reserve();
                }
                self.disk_checked = Some((std::time::Instant::now(), status));
                status
            }
        };
        let allowed = status.appends_allowed();
        if allowed == self.refusing_appends {
            self.refusing_appends = !allowed;
            if allowed {
                tracing::info!(
                    free_bytes = status.free_bytes,
                    "disk space is back: taking appends again"
                );
            } else {
                tracing::warn!(
                    free_bytes = status.free_bytes,
                    min_free_bytes = status.min_free_bytes,
                    "the disk is below its free-space floor: refusing appends until space is freed"
                );
            }
        }
        if allowed {
            return cmds;
        }
        let refused = || Error::InsufficientStorage {
            free_bytes: status.free_bytes,
            min_free_bytes: status.min_free_bytes,
        };
        cmds.into_iter()
            .filter_map(|c| match c {
                Command::Append { .. } => {
                    reject(c, refused);
                    None
                }
                other => Some(other),
            })
            .collect()
    }

    /// A durable commit of the write-ahead log's rows and its position.
    fn checkpoint(&mut self) -> Result<()> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        self.shared.pending.write_into(&txn)?;
        self.checkpointed(&txn)?;
        txn.commit()?;
        self.after_durable_commit()
    }

    /// Applies a round to one transaction and makes it durable.
    /// Takes commands from `cmds` as it applies them; on an error, the failing
    /// command is answered with the round (see [`settle`]) and the rest stay in
    /// `cmds`.
    fn apply(&mut self, round: &mut Round, cmds: &mut std::vec::IntoIter<Command>) -> Result<()> {
        // Small rounds of appends and offset commits go to the write-ahead log unless
        // a checkpoint is due; everything else commits durably. A large round gains
        // little from the log (its pages are mostly its records) and would write its
        // records twice.
        let mut bytes = 0usize;
        let logged = cmds.as_slice().iter().all(|c| match c {
            Command::Append { request, .. } => {
                bytes += request
                    .units
                    .iter()
                    .flat_map(|u| &u.records)
                    .map(|r| r.bytes.len())
                    .sum::<usize>();
                true
            }
            Command::CommitOffsets { .. } => true,
            _ => false,
        }) && bytes <= WAL_MAX_ROUND_BYTES
            && self.last_durable.elapsed() < CHECKPOINT_AFTER
            && self.wal.len() < CHECKPOINT_BYTES;
        let mut txn = self.shared.db.begin_write()?;
        if logged {
            txn.set_durability(Durability::None)?;
            round.redo = Some(Vec::new());
        } else {
            txn.set_durability(Durability::Immediate)?;
            txn.set_two_phase_commit(self.two_phase_commit);
        }
        // The batches only the write-ahead log holds go to redb in a durable commit
        // (first, so this round's commands see every record), and otherwise once
        // they add up to `PENDING_FLUSH_BYTES`: one B-tree update for many rounds.
        let flush_pending = !logged || self.shared.pending.bytes() >= PENDING_FLUSH_BYTES;
        if flush_pending {
            self.shared.pending.write_into(&txn)?;
        }
        for cmd in cmds.by_ref() {
            match cmd {
                Command::CreateTopic {
                    name,
                    config,
                    reply,
                } => {
                    let r = self.create_topic(&txn, round, name, config);
                    settle(round, reply, r)?;
                }
                Command::DeleteTopic { name, reply } => {
                    let r = delete_topic(&self.shared, &txn, round, &name);
                    settle(round, reply, r)?;
                }
                Command::Append { request, reply } => {
                    let r = append(&self.shared, &txn, round, request);
                    settle(round, reply, r)?;
                }
                Command::Trim {
                    topic,
                    partition,
                    before_ms,
                    floor,
                    max_bytes,
                    limit,
                    reply,
                } => {
                    let r = trim(
                        &self.shared,
                        &txn,
                        round,
                        &topic,
                        partition,
                        Retention {
                            before_ms,
                            floor,
                            max_bytes,
                        },
                        limit,
                    );
                    settle(round, reply, r.map(Ok))?;
                }
                Command::ExpireDedupe {
                    before_ms,
                    limit,
                    reply,
                } => {
                    let r = expire_dedupe(&txn, before_ms, limit);
                    settle(round, reply, r.map(Ok))?;
                }
                Command::Purge { limit, reply } => {
                    settle(round, reply, purge(&txn, limit).map(Ok))?;
                }
                Command::CommitOffsets {
                    group: name,
                    offsets,
                    reply,
                } => {
                    let r = commit_offsets(&self.shared, &txn, round, &name, &offsets);
                    settle(round, reply, r)?;
                }
                Command::DeleteGroup { group: name, reply } => {
                    settle(round, reply, delete_group(&txn, &name).map(Ok))?;
                }
                Command::Write { apply, reply } => settle(round, reply, apply(&txn))?,
                Command::CommitState {
                    store,
                    epoch,
                    batch,
                    reply,
                } => {
                    let r = commit_state(&self.shared, &txn, round, &store, epoch, batch);
                    settle(round, reply, r)?;
                }
                Command::Compact {
                    topic,
                    partition,
                    changes,
                    reply,
                } => {
                    let r = compact(&self.shared, &txn, round, &topic, partition, changes);
                    settle(round, reply, r.map(Ok))?;
                }
                // Taken between rounds by `run`.
                Command::Snapshot { reply } => reply(Err(Error::Closed)),
                Command::Shutdown => {}
            }
        }
        flush_inserts(&txn, &mut *round)?;
        match round.redo.take() {
            Some(puts) => {
                // Dedupe rows and committed offsets are in redb at once (readers
                // look for them there); records and partition rows are not.
                if flush_pending
                    || puts
                        .iter()
                        .any(|p| !matches!(p, Put::Record { .. } | Put::Partition { .. }))
                {
                    txn.commit()?;
                } else {
                    txn.abort()?;
                }
                if flush_pending {
                    // Readers find them in redb from now on.
                    self.shared.pending.clear();
                }
                if !puts.is_empty() {
                    self.wal.append(self.wal_seq + 1, &puts)?;
                    self.wal_seq += 1;
                    self.shared.pending.add(&puts);
                }
            }
            None => {
                self.checkpointed(&txn)?;
                txn.commit()?;
                self.after_durable_commit()?;
            }
        }
        Ok(())
    }

    /// Records in a durable commit that it holds every write-ahead log entry so far.
    fn checkpointed(&self, txn: &WriteTransaction) -> Result<()> {
        txn.open_table(META)?
            .insert("wal_seq", self.wal_seq.to_le_bytes().as_slice())?;
        Ok(())
    }

    /// After a durable commit: the write-ahead log's entries are all in redb.
    fn after_durable_commit(&mut self) -> Result<()> {
        self.shared.pending.clear();
        self.wal.reset()?;
        self.last_durable = std::time::Instant::now();
        Ok(())
    }

    fn create_topic(
        &mut self,
        txn: &WriteTransaction,
        round: &mut Round,
        name: String,
        config: TopicConfig,
    ) -> Result<Result<Arc<Topic>>> {
        if round.topic(&self.shared, &name).is_some() {
            return Ok(Err(Error::TopicExists(name)));
        }
        let meta = TopicMeta {
            id: self.next_topic_id,
            partitions: config.partitions,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            created_ms: round.now,
            compaction: config.compaction,
        };
        self.next_topic_id += 1;
        let json = serde_json::to_vec(&meta).expect("topic meta serializes");
        txn.open_table(TOPICS)?
            .insert(name.as_str(), json.as_slice())?;
        txn.open_table(META)?
            .insert("next_topic_id", self.next_topic_id.to_le_bytes().as_slice())?;
        let mut parts = txn.open_table(PARTITIONS)?;
        for p in 0..meta.partitions {
            parts.insert(pkey(meta.id, p), (0, 0, 0))?;
        }
        let topic = Arc::new(Topic::new(name.clone(), &meta));
        round.topics.insert(name, Some(topic.clone()));
        Ok(Ok(topic))
    }

    /// Makes the committed round visible: partition offsets first, then the topic map.
    fn publish(&self, round: &Round) {
        for s in round.parts.values() {
            s.topic.parts[s.partition as usize].store(s.state);
        }
        if !round.topics.is_empty() {
            let mut topics = self.shared.topics.write().expect("topics lock");
            for (name, t) in &round.topics {
                match t {
                    Some(t) => {
                        topics.insert(name.clone(), t.clone());
                    }
                    None => {
                        topics.remove(name);
                    }
                }
            }
        }
        let hooks = self.shared.on_append.read().expect("subscribers lock");
        for hook in hooks.iter() {
            for s in round.parts.values() {
                hook(s.topic.id, s.partition, s.state.1);
            }
        }
    }
}

pub(crate) fn reject_closed(cmd: Command) {
    reject(cmd, || Error::Closed)
}

fn reject(cmd: Command, err: impl Fn() -> Error) {
    match cmd {
        Command::CreateTopic { reply, .. } => reply(Err(err())),
        Command::DeleteTopic { reply, .. } => reply(Err(err())),
        Command::Append { reply, .. } => reply(Err(err())),
        Command::Trim { reply, .. } => reply(Err(err())),
        Command::ExpireDedupe { reply, .. } => reply(Err(err())),
        Command::Purge { reply, .. } => reply(Err(err())),
        Command::CommitOffsets { reply, .. } => reply(Err(err())),
        Command::DeleteGroup { reply, .. } => reply(Err(err())),
        Command::Write { reply, .. } => reply(Err(err())),
        Command::CommitState { reply, .. } => reply(Err(err())),
        Command::Snapshot { reply } => reply(Err(err())),
        Command::Compact { reply, .. } => reply(Err(err())),
        Command::Shutdown => {}
    }
}

fn delete_topic(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    name: &str,
) -> Result<Result<()>> {
    let Some(topic) = round.topic(shared, name) else {
        return Ok(Err(Error::TopicNotFound(name.to_string())));
    };
    txn.open_table(TOPICS)?.remove(name)?;
    let mut parts = txn.open_table(PARTITIONS)?;
    let mut purge = txn.open_table(PURGE)?;
    for p in 0..topic.partition_count() {
        let k = pkey(topic.id, p);
        parts.remove(k)?;
        purge.insert(k, ())?;
        // Records of this round not yet inserted must not outlive the topic.
        round.inserts.remove(&k);
        round.parts.remove(&k);
    }
    round.topics.insert(name.to_string(), None);
    Ok(Ok(()))
}

/// Applies one append to the round. The outer error is a storage failure that
/// sinks the whole round; the inner one refuses this request alone, and is only
/// ever returned before the request changed anything.
fn append(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    request: AppendRequest,
) -> Result<Result<Vec<(u32, u64)>>> {
    let topic = match round.topic(shared, &request.topic) {
        Some(t) if t.id == request.topic_id => t,
        _ => return Ok(Err(Error::TopicNotFound(request.topic))),
    };
    if let Err(e) = request.check(topic.partition_count(), topic.config.compaction.is_some()) {
        return Ok(Err(e));
    }
    let total: usize = request.units.iter().map(|u| u.records.len()).sum();
    let mut out = Vec::with_capacity(total);
    let deduped = request.units.iter().any(|u| u.dedupe_key.is_some());
    let mut tables = if deduped {
        Some((txn.open_table(DEDUPE)?, txn.open_table(DEDUPE_EXPIRY)?))
    } else {
        None
    };
    for unit in request.units {
        let key = match (&unit.dedupe_key, &tables) {
            (Some(k), Some((dedupe, _))) => {
                let key = dedupe_key(topic.id, k);
                if let Some(v) = dedupe.get(key.as_slice())? {
                    // A dedupe row always decodes: it is written only here.
                    out.extend(decode_dedupe(v.value()).unwrap_or_default());
                    continue;
                }
                Some(key)
            }
            _ => None,
        };
        let first = out.len();
        for r in unit.records {
            let s = round.part(&topic, r.partition);
            let offset = s.state.1;
            s.state.1 += 1;
            out.push((r.partition, offset));
            round
                .inserts
                .entry(pkey(topic.id, r.partition))
                .or_default()
                .push((offset, r.bytes));
        }
        if let (Some(key), Some((dedupe, expiry))) = (key, tables.as_mut()) {
            let value = encode_dedupe(round.now, &out[first..]);
            dedupe.insert(key.as_slice(), value.as_slice())?;
            expiry.insert((round.now, key.as_slice()), ())?;
            let now = round.now;
            round.redo(|| Put::Dedupe {
                key: key.clone(),
                value,
            });
            round.redo(|| Put::DedupeExpiry { at: now, key });
        }
    }
    Ok(Ok(out))
}

/// A state store's batch and its appends, all or nothing: the writer and every
/// append are checked before anything is written.
fn commit_state(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    store: &str,
    epoch: u64,
    mut batch: crate::StateBatch,
) -> Result<Result<()>> {
    if let Err(e) = crate::state::check_writer(txn, store, epoch)? {
        return Ok(Err(e));
    }
    for a in &batch.appends {
        let topic = match round.topic(shared, &a.topic) {
            Some(t) if t.id == a.topic_id => t,
            _ => return Ok(Err(Error::TopicNotFound(a.topic.clone()))),
        };
        if let Err(e) = a.check(topic.partition_count(), topic.config.compaction.is_some()) {
            return Ok(Err(e));
        }
    }
    for mut a in std::mem::take(&mut batch.appends) {
        for u in &mut a.units {
            u.dedupe_key = None;
        }
        if let Err(e) = append(shared, txn, round, a)? {
            return Err(Error::CommitFailed(format!(
                "an append checked beforehand failed: {e}"
            )));
        }
    }
    crate::state::apply_batch(txn, store, &batch)?;
    Ok(Ok(()))
}

/// Writes the round's records as batches, one cursor per partition, and each
/// touched partition's state row. A partition's stored bytes grow by the size of the
/// batches written, so retention by size measures what is really on disk.
fn flush_inserts(txn: &WriteTransaction, round: &mut Round) -> Result<()> {
    let Round {
        inserts,
        parts,
        redo,
        ..
    } = round;
    if !inserts.is_empty() {
        // Through the write-ahead log, batches go to redb later, many rounds at
        // once (see `crate::pending`).
        let mut records = match redo {
            Some(_) => None,
            None => Some(txn.open_table(RECORDS)?),
        };
        for (&pk, rows) in inserts.iter() {
            let Some((first, _)) = rows.first() else {
                continue;
            };
            let mut cursor = match &mut records {
                Some(t) => Some(t.upper_bound_mut(Bound::Excluded(record_key(pk, *first)))?),
                None => None,
            };
            let mut added = 0u64;
            let mut rest = rows.as_slice();
            while !rest.is_empty() {
                let mut bytes = 4;
                let n = rest
                    .iter()
                    .take_while(|(_, b)| {
                        bytes += batch::cost(b.len());
                        bytes <= batch::TARGET_BATCH_BYTES
                    })
                    .count()
                    .max(1);
                let (chunk, tail) = rest.split_at(n);
                let value = batch::encode(chunk.iter().map(|(_, b)| b.as_slice()));
                added += value.len() as u64;
                let key = record_key(pk, chunk[0].0);
                match (&mut cursor, &mut *redo) {
                    (Some(c), _) => c.insert_before(key, value.as_slice())?,
                    (None, Some(r)) => r.push(Put::Record {
                        key,
                        value: Arc::new(value),
                    }),
                    (None, None) => unreachable!("a round writes to redb or to the log"),
                }
                rest = tail;
            }
            if let Some(c) = cursor {
                c.close()?;
            }
            if let Some(s) = parts.get_mut(&pk) {
                s.state.2 += added;
            }
        }
    }
    if !parts.is_empty() {
        match redo {
            Some(r) => r.extend(parts.iter().map(|(&pk, s)| Put::Partition {
                key: pk,
                state: s.state,
            })),
            None => {
                let mut table = txn.open_table(PARTITIONS)?;
                for (&pk, s) in parts.iter() {
                    table.insert(pk, s.state)?;
                }
            }
        }
    }
    Ok(())
}

/// What retention deletes of a partition.
struct Retention {
    /// Records older than this (ms), ...
    before_ms: Option<u64>,
    /// ... that end below this offset (what stores holding the topic passed);
    floor: Option<u64>,
    /// and whatever makes the partition larger than this.
    max_bytes: Option<u64>,
}

/// Retention: deletes whole batches from the start of a partition while every record
/// of the batch is older than `before_ms` (and the batch ends at or below `floor`),
/// or while the partition holds more than `max_bytes`; at least `limit` records when
/// that many qualify. Returns the number of records deleted.
fn trim(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    topic: &Arc<Topic>,
    partition: u32,
    retention: Retention,
    limit: usize,
) -> Result<usize> {
    let Retention {
        before_ms,
        floor,
        max_bytes,
    } = retention;
    match round.topic(shared, &topic.name) {
        Some(t) if t.id == topic.id => {}
        _ => return Ok(0),
    }
    let pk = pkey(topic.id, partition);
    // Records this round is about to insert are not in the table yet; trimming
    // reads only what is.
    let (start, _, bytes) = round.part(topic, partition).state;
    let stored_end = topic.parts[partition as usize].end.load(Ordering::Acquire);
    let mut records = txn.open_table(RECORDS)?;
    // Offsets below `new_start` go; compaction may have left gaps between batches
    // and empty slots in them, so the new start is the end of the last batch removed.
    let mut new_start = start;
    let mut freed = 0u64;
    for item in records.range(record_key(pk, start)..record_key(pk, stored_end))? {
        if new_start - start >= limit as u64 {
            break;
        }
        let (k, v) = item?;
        let base = k.value() as u64;
        let value = v.value();
        let corrupted = || Error::Corrupted {
            pkey: pk,
            offset: base,
        };
        let b = Batch::parse(value).ok_or_else(corrupted)?;
        let old = match before_ms {
            Some(cut) => {
                let mut newest = 0;
                for i in 0..b.len() {
                    let r = b.get(i).ok_or_else(corrupted)?;
                    if r.is_empty() {
                        continue;
                    }
                    let r = RecordView::decode(r).ok_or_else(corrupted)?;
                    newest = newest.max(r.timestamp);
                }
                newest < cut && floor.is_none_or(|f| base + b.len() as u64 <= f)
            }
            None => false,
        };
        let over = max_bytes.is_some_and(|max| bytes - freed > max);
        if !(old || over) {
            break;
        }
        new_start = base + b.len() as u64;
        freed += value.len() as u64;
    }
    let removed = (new_start - start) as usize;
    if removed > 0 {
        let lo = record_key(pk, start);
        let hi = record_key(pk, new_start);
        records.retain_in(lo..hi, |_, _| false)?;
        let s = round.part(topic, partition);
        s.state.0 = new_start;
        s.state.2 -= freed;
    }
    Ok(removed)
}

/// Applies compaction's new batches. A batch that is no longer stored as planned
/// (retention removed it meanwhile) is left alone.
fn compact(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    topic: &Arc<Topic>,
    partition: u32,
    changes: Vec<crate::compaction::Change>,
) -> Result<()> {
    match round.topic(shared, &topic.name) {
        Some(t) if t.id == topic.id => {}
        _ => return Ok(()),
    }
    let pk = pkey(topic.id, partition);
    let mut records = txn.open_table(RECORDS)?;
    let mut delta: i64 = 0;
    for c in changes {
        let key = record_key(pk, c.base);
        let stored = records.get(key)?.map(|v| v.value().len());
        if stored != Some(c.old_len) {
            continue;
        }
        match c.new {
            Some(value) => {
                delta += value.len() as i64 - c.old_len as i64;
                records.insert(key, value.as_slice())?;
            }
            None => {
                delta -= c.old_len as i64;
                records.remove(key)?;
            }
        }
    }
    drop(records);
    let s = round.part(topic, partition);
    s.state.2 = s.state.2.saturating_add_signed(delta);
    Ok(())
}

fn expire_dedupe(txn: &WriteTransaction, before_ms: u64, limit: usize) -> Result<usize> {
    let mut expiry = txn.open_table(DEDUPE_EXPIRY)?;
    let mut doomed: Vec<(u64, Vec<u8>)> = Vec::new();
    for item in expiry.range((0u64, &[][..])..(before_ms, &[][..]))? {
        if doomed.len() >= limit {
            break;
        }
        let (k, _) = item?;
        let (ts, key) = k.value();
        doomed.push((ts, key.to_vec()));
    }
    let mut dedupe = txn.open_table(DEDUPE)?;
    for (ts, key) in &doomed {
        expiry.remove((*ts, key.as_slice()))?;
        dedupe.remove(key.as_slice())?;
    }
    Ok(doomed.len())
}

fn purge(txn: &WriteTransaction, limit: usize) -> Result<usize> {
    let mut purge = txn.open_table(PURGE)?;
    let Some(pk) = purge.first()?.map(|(k, _)| k.value()) else {
        return Ok(0);
    };
    let mut records = txn.open_table(RECORDS)?;
    let lo = record_key(pk, 0);
    let hi = record_key(pk + 1, 0);
    let mut upto = None;
    let mut n = 0usize;
    for item in records.range(lo..hi)? {
        let (k, _) = item?;
        n += 1;
        upto = Some(k.value());
        if n >= limit {
            break;
        }
    }
    match upto {
        Some(last) => records.retain_in(lo..=last, |_, _| false)?,
        None => {
            purge.remove(pk)?;
        }
    }
    Ok(n)
}

/// Commits a consumer group's offsets if every topic still exists; nothing otherwise.
fn commit_offsets(
    shared: &Shared,
    txn: &WriteTransaction,
    round: &mut Round,
    name: &str,
    offsets: &[(Arc<Topic>, u32, u64)],
) -> Result<Result<()>> {
    for (topic, partition, _) in offsets {
        match round.topic(shared, &topic.name) {
            Some(t) if t.id == topic.id && *partition < t.partition_count() => {}
            Some(t) if t.id == topic.id => {
                return Ok(Err(Error::PartitionNotFound {
                    topic: topic.name.clone(),
                    partition: *partition,
                    partitions: t.partition_count(),
                }));
            }
            _ => return Ok(Err(Error::TopicNotFound(topic.name.clone()))),
        }
    }
    let mut table = txn.open_table(GROUP_OFFSETS)?;
    for (topic, partition, offset) in offsets {
        table.insert((name, topic.id, *partition), *offset)?;
        round.redo(|| Put::GroupOffset {
            group: name.to_string(),
            topic_id: topic.id,
            partition: *partition,
            offset: *offset,
        });
    }
    Ok(Ok(()))
}

fn delete_group(txn: &WriteTransaction, name: &str) -> Result<usize> {
    let mut table = txn.open_table(GROUP_OFFSETS)?;
    let mut n = 0;
    table.retain_in((name, 0u64, 0u32)..=(name, u64::MAX, u32::MAX), |_, _| {
        n += 1;
        false
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    /// A commit that fails answers every command of its group with the failure, the
    /// one that failed included (it used to be dropped, so its caller saw a closed
    /// log), and the log then refuses writes until it is reopened.
    #[test]
    fn a_failed_commit_answers_its_commands_with_the_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let log = crate::Log::open(tmp.path(), crate::LogOptions::default()).expect("open");
        let failed = log.write_blocking(Box::new(|_| {
            Err(crate::Error::Io(std::io::Error::other("the disk failed")))
        }));
        match failed {
            Err(crate::Error::CommitFailed(why)) => assert!(why.contains("the disk failed")),
            other => panic!("expected the commit's failure, got {other:?}"),
        }
        assert!(log.is_poisoned());
        assert!(matches!(
            log.create_topic_blocking("t", crate::TopicConfig::default()),
            Err(crate::Error::Poisoned)
        ));
        drop(log);
        let log = crate::Log::open(tmp.path(), crate::LogOptions::default()).expect("open");
        assert!(!log.is_poisoned(), "reopening recovers");
    }
}
