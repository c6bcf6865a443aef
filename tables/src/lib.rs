//! The table engine of Sluice: projection tables (latest row per key) and state
//! tables (aggregates per key, optionally per tumbling window) folded from topics.
//!
//! It owns table definitions (JSON, or a SQL subset parsed with sqlparser), the
//! materializer that follows each table's source partitions, and point and prefix
//! queries; and the expression engine (filters and scalar expressions) and the
//! definitions of derived streams (`CREATE STREAM ... AS SELECT`, see `stream`:
//! what a stream writes for each input record) and the processors that keep
//! derived streams as topics (see `processor`). It reads its sources and keeps
//! its rows only through the storage seam ([`sluice_log::Backend`]): each table is a state store whose rows and source
//! offsets (and changelog records) commit together as one [`StateBatch`] of a
//! fenced writer, so a crash neither loses nor counts an event twice, on any
//! engine; a processor's outputs commit with its offsets the same way. Where the engine
//! splits stores (over a cluster), a state table has one shard per source
//! partition, each with its own writer, possibly on another gateway; a row is
//! then kept in parts, one per shard that folded records into it, merged when
//! read.
//!
//! It depends on `sluice-log` only, never on a storage engine's internals, HTTP or
//! an async runtime.

mod def;
mod expr;
mod fold;
mod processor;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_log::{Backend, StateBatch, Topic, wait};

pub use crate::def::{Aggregate, TableDef, Window};
use crate::def::{Compiled, Kind};
pub use crate::expr::{Filter, Path, Scalar};
use crate::fold::{Change, Folded, StateRow, empty_state};
pub use crate::processor::{
    Counts, DEAD_LETTERS, ERROR_HEADER, ProcessorState, ProcessorStatus, Processors, SOURCE_OFFSET,
    SOURCE_PARTITION, SOURCE_TOPIC, dead_letter_topic,
};
pub use crate::stream::{CompiledStream, Derived, Join, JoinKind, OnError, StreamDef};

/// Table engine errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definition or query argument that cannot be accepted.
    #[error("{0}")]
    Invalid(String),
    /// No such table.
    #[error("table '{0}' does not exist")]
    NotFound(String),
    /// A table of that name exists.
    #[error("table '{0}' already exists")]
    Exists(String),
    /// The source topic does not exist.
    #[error("source topic '{0}' does not exist")]
    NoSource(String),
    /// A table named by a definition (a join's) does not exist.
    #[error("table '{0}' does not exist")]
    NoTable(String),
    /// The storage engine failed.
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Records folded into one commit per partition.
const BATCH: usize = 5_000;

/// Records of each of its partitions a shard of a store of several folds into
/// one commit: each shard commits a transaction of its own, so its batches are
/// larger.
const SHARD_BATCH: usize = 4 * BATCH;

/// How often closed windows past their retention are deleted.
const WINDOW_SWEEP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDef {
    def: TableDef,
    /// Id of the source topic when the table was created; a re-created topic of the
    /// same name is another topic.
    topic_id: u64,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    /// Its store's shards (see `Backend::shards`): source partition `p` is
    /// folded by shard `p % shards`, each with its own writer.
    #[serde(default = "one")]
    shards: u32,
    /// Id of the changelog topic the table made, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changelog_id: Option<u64>,
}

fn one() -> u32 {
    1
}

/// Where a table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Catching up with what its topic held when it started.
    Backfilling,
    /// Caught up; applying new records as they come.
    Live,
    /// Stopped (its source topic was deleted).
    Failed,
}

/// A table's status.
#[derive(Debug, Clone)]
pub struct Status {
    pub def: TableDef,
    pub sql: Option<String>,
    pub state: State,
    pub reason: Option<String>,
    pub rows: u64,
    pub skipped: u64,
    pub created_ms: u64,
    /// Per source partition: (partition, applied offset, end offset).
    pub partitions: Vec<(u32, u64, u64)>,
    /// Over a cluster, the source partitions this gateway folds now (those of
    /// the shards it writes, see `Backend::writes_store`); `None` on one machine.
    pub written_here: Option<Vec<u32>>,
}

struct Table {
    compiled: Compiled,
    /// The source; `None` when it was already gone when the engine opened (the
    /// table is then failed, listed and deletable).
    topic: Option<Arc<Topic>>,
    sql: Option<String>,
    created_ms: u64,
    applied: Mutex<Vec<u64>>,
    state: Mutex<(State, Option<String>)>,
    /// Goes up with every applied batch.
    version: AtomicU64,
    /// Its store's shards.
    shards: u32,
    /// This engine's writer epoch for each shard of the table's store it
    /// writes, once opened.
    writers: Mutex<HashMap<u32, u64>>,
    /// The newest record timestamp applied, for closing windows.
    stream_time: AtomicU64,
    /// Where each source partition ended when the table started here: the
    /// backfill is done once they are applied.
    backfill_to: Vec<u64>,
    /// The changelog topic (name and id), if the table keeps one.
    changelog: Option<(String, u64)>,
}

impl Table {
    fn new(
        compiled: Compiled,
        topic: Option<Arc<Topic>>,
        stored: &StoredDef,
        applied: Vec<u64>,
        state: (State, Option<String>),
    ) -> Table {
        let backfill_to = topic.as_ref().map_or_else(Vec::new, |t| {
            t.partitions().iter().map(|p| p.end_offset).collect()
        });
        Table {
            backfill_to,
            compiled,
            topic,
            sql: stored.sql.clone(),
            created_ms: stored.created_ms,
            applied: Mutex::new(applied),
            state: Mutex::new(state),
            version: AtomicU64::new(0),
            shards: stored.shards.max(1),
            writers: Mutex::default(),
            stream_time: AtomicU64::new(0),
            changelog: stored.def.changelog.clone().zip(stored.changelog_id),
        }
    }

    /// The changelog records of row changes (`rows`: stored key and value),
    /// for a table that keeps a changelog (always of one shard).
    fn changelog(
        &self,
        log: &dyn Backend,
        rows: &[(String, Option<Vec<u8>>)],
        timestamp: u64,
    ) -> Result<Vec<sluice_log::AppendRequest>> {
        let Some((name, id)) = &self.changelog else {
            return Ok(Vec::new());
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let topic = log
            .topic(name)
            .filter(|t| t.id() == *id)
            .ok_or_else(|| Error::Invalid(format!("changelog topic '{name}' was deleted")))?;
        let n = topic.partition_count();
        let records = rows
            .iter()
            .map(|(key, value)| {
                let change = match value {
                    Some(v) => serde_json::json!({"key": key, "op": "upsert", "row": render(&self.compiled, v)}),
                    None => serde_json::json!({"key": key, "op": "delete", "row": null}),
                };
                let bytes = serde_json::to_vec(&change).expect("JSON serializes");
                sluice_log::NewRecord {
                    partition: sluice_log::partition_for_key(key.as_bytes(), n),
                    bytes: sluice_log::RecordParts {
                        timestamp,
                        key: Some(key),
                        headers: &[],
                        kind: sluice_log::ValueKind::Json,
                        value: &bytes,
                    }
                    .encode(),
                }
            })
            .collect();
        Ok(vec![sluice_log::AppendRequest {
            topic: topic.name().to_string(),
            topic_id: topic.id(),
            units: vec![sluice_log::AppendUnit {
                dedupe_key: None,
                records,
            }],
        }])
    }

    /// Moves the applied offsets up to `offsets` where they are behind (they
    /// never go back: reports of batches may arrive after newer ones applied).
    fn advance(&self, offsets: &[u64]) {
        let mut applied = self.applied.lock().expect("applied lock");
        if applied.len() < offsets.len() {
            applied.resize(offsets.len(), 0);
        }
        for (a, o) in applied.iter_mut().zip(offsets) {
            *a = (*a).max(*o);
        }
    }

    fn partitions(&self) -> u32 {
        self.topic.as_ref().map_or(0, |t| t.partition_count())
    }

    /// The key under which `shard` keeps its part of row `key`.
    fn stored_key(&self, key: String, shard: u32) -> String {
        if self.shards > 1 {
            sluice_log::shard_key(&key, shard)
        } else {
            key
        }
    }

    /// The row key of a stored key (a part's key in a store of several shards).
    fn row_key<'a>(&self, stored: &'a str) -> Option<&'a str> {
        if self.shards == 1 {
            return Some(stored);
        }
        sluice_log::split_shard_key(stored).map(|(k, _)| k)
    }

    /// The row keys of stored keys, each once.
    fn row_keys(&self, stored: &[String]) -> Vec<String> {
        if self.shards == 1 {
            return stored.to_vec();
        }
        let mut keys: Vec<String> = stored
            .iter()
            .filter_map(|k| self.row_key(k).map(str::to_string))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Forgets the writers of every shard: the next round opens them again.
    fn drop_writers(&self) {
        self.writers.lock().expect("writers lock").clear();
    }

    /// Backfilling ends once every source partition is applied up to where it
    /// ended when the table started.
    fn note_caught_up(&self, applied: &[u64]) {
        if self.topic.is_none() {
            return;
        }
        let caught_up = applied
            .iter()
            .zip(&self.backfill_to)
            .all(|(a, end)| a >= end);
        let mut st = self.state.lock().expect("state lock");
        if caught_up && st.0 == State::Backfilling {
            *st = (State::Live, None);
        }
    }
}

/// The table of a stored definition, at the offsets its store reflects; `None` if
/// the definition does not decode, or, when `wait_for_source`, its source topic
/// is not known here yet. A table whose source is gone is kept, failed, so that
/// it can be seen and deleted.
fn load(
    log: &dyn Backend,
    name: &str,
    bytes: &[u8],
    wait_for_source: bool,
) -> Result<Option<Table>> {
    let Ok(stored) = serde_json::from_slice::<StoredDef>(bytes) else {
        return Ok(None);
    };
    let Ok(compiled) = stored.def.compile() else {
        return Ok(None);
    };
    let topic = log.topic(&stored.def.source);
    if topic.is_none() && wait_for_source {
        return Ok(None);
    }
    let topic = topic.filter(|t| t.id() == stored.topic_id);
    let state = match &topic {
        Some(_) => (State::Backfilling, None),
        None => {
            tracing::warn!(table = %name, "source topic is gone");
            (State::Failed, Some(gone(&stored.def.source)))
        }
    };
    let partitions = topic.as_ref().map_or(0, |t| t.partition_count());
    let applied = log.read_state(name, &[], partitions)?.offsets;
    Ok(Some(Table::new(compiled, topic, &stored, applied, state)))
}

/// The engine applied a batch of `store`, written here or by another gateway:
/// the table now reflects what its store does.
fn applied_elsewhere(shared: &Shared, store: &str, keys: &[String]) {
    if !is_table_store(store) {
        return;
    }
    let table = shared
        .tables
        .read()
        .expect("tables lock")
        .get(store)
        .cloned();
    let Some(t) = table else {
        shared.reload.store(true, Ordering::Release);
        shared.notify();
        return;
    };
    if keys.is_empty() {
        // A definition may have changed (or the batch changed no row).
        shared.reload.store(true, Ordering::Release);
    }
    if let Err(e) = follow_store(shared, store, &t) {
        tracing::warn!(table = %store, error = %e, "reading a table's progress");
    }
    t.version.fetch_add(1, Ordering::AcqRel);
    if let Some(hook) = &shared.on_change {
        hook(store, &t.row_keys(keys));
    }
}

/// Takes the table's progress from its store.
fn follow_store(shared: &Shared, name: &str, t: &Table) -> Result<()> {
    let applied = shared.log.read_state(name, &[], t.partitions())?.offsets;
    t.advance(&applied);
    t.note_caught_up(&t.applied.lock().expect("applied lock"));
    Ok(())
}

/// Whether a store keeps a table (not a sink, processor or source).
fn is_table_store(store: &str) -> bool {
    ![
        sluice_log::SINK_STORES,
        sluice_log::PROCESSOR_STORES,
        sluice_log::SOURCE_STORES,
    ]
    .iter()
    .any(|p| store.starts_with(p))
}

/// The engine's stores that keep tables (not sinks or processors).
fn table_stores(log: &dyn Backend) -> Result<Vec<(String, Vec<u8>)>> {
    let mut stores = log.stores()?;
    stores.retain(|(n, _)| is_table_store(n));
    Ok(stores)
}

/// Brings the tables in line with the stores the engine has (made or dropped
/// through other gateways).
fn reload(shared: &Shared) -> Result<()> {
    let stores = table_stores(&*shared.log)?;
    let missing: Vec<&(String, Vec<u8>)> = {
        let tables = shared.tables.read().expect("tables lock");
        stores
            .iter()
            .filter(|(n, _)| !tables.contains_key(n))
            .collect()
    };
    let mut loaded = Vec::new();
    for (name, v) in missing {
        if let Some(t) = load(&*shared.log, name, v, true)? {
            loaded.push((name.clone(), Arc::new(t)));
        }
    }
    let mut tables = shared.tables.write().expect("tables lock");
    tables.retain(|n, _| stores.iter().any(|(s, _)| s == n));
    for (name, t) in loaded {
        tables.entry(name).or_insert(t);
    }
    Ok(())
}

/// Wakes a worker thread that otherwise sleeps up to a timeout: a flag set by
/// `notify` and taken by `wait`.
#[derive(Default)]
pub(crate) struct Wake {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Wakes the waiting thread (or the next wait returns at once).
    pub(crate) fn notify(&self) {
        let mut woken = self.woken.lock().expect("wake lock");
        if !*woken {
            *woken = true;
            self.cv.notify_one();
        }
    }

    /// Sleeps until woken or `timeout` passed.
    pub(crate) fn wait(&self, timeout: Duration) {
        let guard = self.woken.lock().expect("wake lock");
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .expect("wake lock");
        *guard = false;
    }
}

/// Called after each applied batch with the table's name and the keys it changed.
pub type ChangeHook = Arc<dyn Fn(&str, &[String]) + Send + Sync>;

struct Shared {
    log: Arc<dyn Backend>,
    tables: RwLock<HashMap<String, Arc<Table>>>,
    wake: Wake,
    stop: AtomicBool,
    on_change: Option<ChangeHook>,
    /// Whether the engine reports every batch its stores apply, whoever wrote
    /// it (a cluster engine, where other gateways write some tables): then those
    /// reports, not this engine's commits, move `applied` and call `on_change`.
    remote: AtomicBool,
    /// The set of stores may have changed elsewhere: reload it.
    reload: AtomicBool,
}

/// The table engine. The last handle dropped stops the materializer.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// Wakes the materializer.
    fn notify(&self) {
        self.wake.notify();
    }

    /// A topic grew: wakes the materializer if a table reads that topic.
    fn topic_grew(&self, topic_id: u64) {
        let read = self
            .tables
            .read()
            .expect("tables lock")
            .values()
            .any(|t| t.topic.as_ref().is_some_and(|t| t.id() == topic_id));
        if read {
            self.notify();
        }
    }
}

fn table_of(shared: &Shared, name: &str) -> Result<Arc<Table>> {
    shared
        .tables
        .read()
        .expect("tables lock")
        .get(name)
        .cloned()
        .ok_or_else(|| Error::NotFound(name.to_string()))
}

impl Engine {
    /// Loads the table definitions kept in the log's file and starts following
    /// their topics.
    pub fn open(log: Arc<dyn Backend>, on_change: Option<ChangeHook>) -> Result<Engine> {
        let mut tables = HashMap::new();
        for (name, v) in table_stores(&*log)? {
            if let Some(t) = load(&*log, &name, &v, false)? {
                tables.insert(name, Arc::new(t));
            }
        }
        let shared = Arc::new(Shared {
            log,
            tables: RwLock::new(tables),
            wake: Wake::default(),
            stop: AtomicBool::new(false),
            on_change,
            remote: AtomicBool::new(false),
            reload: AtomicBool::new(false),
        });
        // Woken by appends to the topics tables read, through the seam.
        let weak = Arc::downgrade(&shared);
        shared.log.subscribe(Arc::new(move |topic_id, _, _| {
            if let Some(s) = weak.upgrade() {
                s.topic_grew(topic_id);
            }
        }));
        let weak = Arc::downgrade(&shared);
        let remote = shared.log.subscribe_state(Arc::new(move |store, keys| {
            if let Some(s) = weak.upgrade() {
                applied_elsewhere(&s, store, keys);
            }
        }));
        shared.remote.store(remote, Ordering::Release);
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-tables".into())
            .spawn(move || materialize(&s))
            .map_err(sluice_log::Error::Io)?;
        Ok(Engine {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Wakes the materializer.
    fn notify(&self) {
        self.shared.notify();
    }

    /// Stops the materializer once its batch in progress is committed (or
    /// refused); tables are served as they are from here on. Dropping the last
    /// handle does the same.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.notify();
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }

    /// Creates a table; it fills from its topic's start in the background.
    pub fn create(&self, def: TableDef, sql: Option<String>) -> Result<Status> {
        let compiled = def.compile()?;
        let topic = self
            .shared
            .log
            .topic(&def.source)
            .ok_or_else(|| Error::NoSource(def.source.clone()))?;
        if self
            .shared
            .tables
            .read()
            .expect("tables lock")
            .contains_key(&def.name)
        {
            return Err(Error::Exists(def.name));
        }
        let log = &self.shared.log;
        // Aggregates combine from parts, so a state table's work can be split by
        // source partition; a projection's rows are folded by one writer.
        // A changelog is written in order by one writer.
        let shards = match compiled.kind {
            Kind::State { .. } if def.changelog.is_none() => log.shards(topic.partition_count()),
            _ => 1,
        };
        let changelog = match &def.changelog {
            Some(c) => {
                if log.find_topic(c).is_some() {
                    return Err(Error::Invalid(format!(
                        "topic '{c}' exists: a table makes its changelog topic, so name one that does not"
                    )));
                }
                let config = sluice_log::TopicConfig {
                    partitions: topic.partition_count(),
                    ..Default::default()
                };
                Some(wait(|r| log.create_topic(c, config, r))?)
            }
            None => None,
        };
        let stored = StoredDef {
            def: def.clone(),
            topic_id: topic.id(),
            created_ms: sluice_log::now_ms(),
            sql,
            shards,
            changelog_id: changelog.as_ref().map(|t| t.id()),
        };
        // Start at each partition's first retained record.
        let applied: Vec<u64> = topic.partitions().iter().map(|p| p.start_offset).collect();
        let json = serde_json::to_vec(&stored).expect("definition serializes");
        let made =
            wait(|r| log.create_store(&def.name, json, applied.clone(), shards, r)).map_err(|e| {
                match e {
                    sluice_log::Error::StoreExists(_) => Error::Exists(def.name.clone()),
                    e => e.into(),
                }
            });
        if let Err(e) = made {
            if let Some(c) = &changelog {
                let _ = wait(|r| log.delete_topic(c.name(), r));
            }
            return Err(e);
        }
        let table = Table::new(
            compiled,
            Some(topic),
            &stored,
            applied,
            (State::Backfilling, None),
        );
        self.shared
            .tables
            .write()
            .expect("tables lock")
            .entry(def.name.clone())
            .or_insert_with(|| Arc::new(table));
        self.notify();
        self.status(&def.name)
    }

    /// Deletes a table and its rows.
    pub fn delete(&self, name: &str) -> Result<()> {
        let removed = self
            .shared
            .tables
            .write()
            .expect("tables lock")
            .remove(name);
        if removed.is_none() {
            return Err(Error::NotFound(name.to_string()));
        }
        let log = &self.shared.log;
        wait(|r| log.drop_store(name, r))?;
        Ok(())
    }

    /// Names of all tables, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .tables
            .read()
            .expect("tables lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// A table's definition, state, size and progress.
    pub fn status(&self, name: &str) -> Result<Status> {
        let t = table_of(&self.shared, name)?;
        let sluice_log::StoreStats { rows, skipped } = self.shared.log.state_stats(name)?;
        let applied = t.applied.lock().expect("applied lock").clone();
        let (state, reason) = t.state.lock().expect("state lock").clone();
        Ok(Status {
            def: t.compiled.def.clone(),
            sql: t.sql.clone(),
            state,
            reason,
            rows,
            skipped,
            created_ms: t.created_ms,
            partitions: applied
                .iter()
                .enumerate()
                .map(|(p, a)| {
                    (
                        p as u32,
                        *a,
                        t.topic
                            .as_ref()
                            .and_then(|t| t.partition(p as u32))
                            .map_or(*a, |i| i.end_offset),
                    )
                })
                .collect(),
            written_here: self.shared.log.writes_store(name).map(|shards| {
                (0..t.partitions())
                    .filter(|p| shards.contains(&(p % t.shards)))
                    .collect()
            }),
        })
    }

    /// The applied source offsets (next offset to apply, per partition) and the
    /// change version of a table.
    pub fn progress(&self, name: &str) -> Result<(Vec<u64>, u64)> {
        let t = table_of(&self.shared, name)?;
        let applied = t.applied.lock().expect("applied lock").clone();
        Ok((applied, t.version.load(Ordering::Acquire)))
    }

    /// The table whose changelog `topic` is, if one's is: clients do not
    /// produce to it.
    pub fn changelog_of(&self, topic: &Topic) -> Option<String> {
        self.shared
            .tables
            .read()
            .expect("tables lock")
            .iter()
            .find(|(_, t)| {
                t.changelog
                    .as_ref()
                    .is_some_and(|(n, id)| n == topic.name() && *id == topic.id())
            })
            .map(|(n, _)| n.clone())
    }

    /// The source topic a table folds (`None` when it is gone).
    pub fn source(&self, name: &str) -> Result<Option<Arc<Topic>>> {
        Ok(table_of(&self.shared, name)?.topic.clone())
    }

    /// The keys of the rows a source record changes (none when the table's
    /// filter passes it over or it does not fit the definition).
    pub fn rows_of(&self, name: &str, record: &sluice_log::RecordView<'_>) -> Result<Vec<String>> {
        let t = table_of(&self.shared, name)?;
        let mut folded = Folded::default();
        folded.add(&t.compiled, record);
        Ok(folded.changes.into_keys().collect())
    }

    /// One row, with the source offsets it reflects.
    pub fn get(&self, name: &str, key: &str) -> Result<Option<(Value, Vec<u64>)>> {
        let t = table_of(&self.shared, name)?;
        let partitions = t.partitions();
        if t.shards == 1 {
            let mut read = self.shared.log.read_state(name, &[key], partitions)?;
            let row = read.rows.pop().flatten().map(|v| render(&t.compiled, &v));
            return Ok(row.map(|r| (r, read.offsets)));
        }
        // The offsets first: the parts read after them reflect at least those.
        let offsets = self.shared.log.read_state(name, &[], partitions)?.offsets;
        let prefix = format!("{key}{}", sluice_log::SHARD_SEP);
        let mut parts = Vec::new();
        self.shared
            .log
            .scan_state(name, &prefix, &mut |stored, v| {
                if !stored.starts_with(&prefix) {
                    return false;
                }
                if t.row_key(stored) == Some(key) {
                    parts.push(v.to_vec());
                }
                true
            })?;
        Ok(merge_parts(&t.compiled, &parts).map(|row| (row, offsets)))
    }

    /// Rows by key, from one consistent view of a table of one shard (and
    /// key by key from a table of several).
    pub fn get_many(&self, name: &str, keys: &[&str]) -> Result<Vec<Option<Value>>> {
        let t = table_of(&self.shared, name)?;
        if t.shards == 1 {
            let read = self.shared.log.read_state(name, keys, 0)?;
            return Ok(read
                .rows
                .into_iter()
                .map(|r| r.map(|v| render(&t.compiled, &v)))
                .collect());
        }
        keys.iter()
            .map(|k| Ok(self.get(name, k)?.map(|(row, _)| row)))
            .collect()
    }

    /// A table's definition.
    pub fn definition(&self, name: &str) -> Result<TableDef> {
        Ok(table_of(&self.shared, name)?.compiled.def.clone())
    }

    /// Rows whose keys start with `prefix`, after `after`, at most `limit`; and
    /// whether more follow.
    pub fn scan(
        &self,
        name: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, Value)>, bool)> {
        let t = table_of(&self.shared, name)?;
        // A row's parts are next to each other: `key` NUL `shard` sorts after
        // `key` and before every longer key (`\u{1}` is above the separator). In
        // a store of one shard a row is one part, under its own key.
        let start = match after {
            None => prefix.to_string(),
            Some(a) if t.shards == 1 => a.to_string(),
            Some(a) => format!("{a}\u{1}"),
        };
        let mut out = Vec::new();
        let mut more = false;
        let mut row: Option<(String, Vec<Vec<u8>>)> = None;
        self.shared.log.scan_state(name, &start, &mut |stored, v| {
            let Some(key) = t.row_key(stored) else {
                return true;
            };
            if Some(key) == after {
                return true;
            }
            if !key.starts_with(prefix) {
                return false;
            }
            match &mut row {
                Some((k, parts)) if k == key => parts.push(v.to_vec()),
                _ => {
                    if let Some((k, parts)) = row.take()
                        && let Some(r) = merge_parts(&t.compiled, &parts)
                    {
                        out.push((k, r));
                    }
                    if out.len() == limit {
                        more = true;
                        return false;
                    }
                    row = Some((key.to_string(), vec![v.to_vec()]));
                }
            }
            true
        })?;
        if let Some((k, parts)) = row
            && let Some(r) = merge_parts(&t.compiled, &parts)
        {
            out.push((k, r));
        }
        Ok((out, more))
    }
}

/// One row from the parts several shards keep of it.
fn merge_parts(c: &Compiled, parts: &[Vec<u8>]) -> Option<Value> {
    if let [one] = parts {
        return Some(render(c, one));
    }
    match c.kind {
        Kind::Projection { .. } => parts.last().map(|v| render(c, v)),
        Kind::State { .. } => StateRow::merge_parts(
            parts
                .iter()
                .filter_map(|v| serde_json::from_slice::<StateRow>(v).ok())
                .collect(),
        )
        .map(|r| r.render(c)),
    }
}

fn render(c: &Compiled, bytes: &[u8]) -> Value {
    match c.kind {
        Kind::Projection { .. } => serde_json::from_slice(bytes).unwrap_or(Value::Null),
        Kind::State { .. } => serde_json::from_slice::<StateRow>(bytes)
            .map(|r| r.render(c))
            .unwrap_or(Value::Null),
    }
}

/// The materializer: for every table, folds a batch from each partition behind its
/// topic's end and commits rows and offsets together; sleeps when all are caught up.
fn materialize(shared: &Shared) {
    let mut last_expiry = std::time::Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let tables: Vec<(String, Arc<Table>)> = shared
            .tables
            .read()
            .expect("tables lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut busy = false;
        let expire = last_expiry.elapsed() >= WINDOW_SWEEP;
        if expire {
            last_expiry = std::time::Instant::now();
        }
        let remote = shared.remote.load(Ordering::Acquire);
        if remote
            && (expire || shared.reload.swap(false, Ordering::AcqRel))
            && let Err(e) = reload(shared)
        {
            tracing::warn!(error = %e, "reloading the tables");
        }
        for (name, t) in tables {
            if expire && let Err(e) = expire_windows(shared, &name, &t) {
                t.drop_writers();
                tracing::warn!(table = %name, error = %e, "window retention failed");
            }
            match step(shared, &name, &t) {
                Ok(did) => busy |= did,
                Err(e) if passing(&e) => {
                    // Whether the failed batch reached the store or not, the next
                    // round opens a writer again and goes on from what the store
                    // holds, so it is applied once either way.
                    t.drop_writers();
                    tracing::warn!(table = %name, error = %e, "table paused");
                }
                Err(e) => {
                    tracing::error!(table = %name, error = %e, "table stopped");
                    *t.state.lock().expect("state lock") = (State::Failed, Some(e.to_string()));
                }
            }
        }
        if !busy {
            shared.wake.wait(Duration::from_millis(500));
        }
    }
}

/// Why a table whose source topic is gone stopped.
fn gone(source: &str) -> String {
    format!("source topic '{source}' was deleted")
}

/// Whether an error leaves a table or processor able to go on (once the
/// cluster is back, the disk has room, the log is reopened, or this gateway
/// writes it again).
pub(crate) fn passing(e: &Error) -> bool {
    matches!(
        e,
        Error::Log(
            sluice_log::Error::Fenced { .. }
                | sluice_log::Error::Unavailable(_)
                | sluice_log::Error::InsufficientStorage { .. }
                | sluice_log::Error::CommitFailed(_)
        )
    )
}

/// Applies one batch of each shard of a table this engine writes, the shards
/// side by side; returns whether there was anything to apply.
fn step(shared: &Shared, name: &str, t: &Table) -> Result<bool> {
    if t.state.lock().expect("state lock").0 == State::Failed {
        return Ok(false);
    }
    let topic = match (&t.topic, shared.log.topic(&t.compiled.def.source)) {
        (Some(ours), Some(now)) if ours.id() == now.id() => ours,
        _ => {
            *t.state.lock().expect("state lock") =
                (State::Failed, Some(gone(&t.compiled.def.source)));
            return Ok(false);
        }
    };
    let mut shards = Vec::new();
    for shard in 0..t.shards {
        if shared.log.may_write(name, shard)? {
            shards.push(shard);
        } else {
            // Another gateway writes it; this one serves its copy.
            t.writers.lock().expect("writers lock").remove(&shard);
        }
    }
    if shards.len() < t.shards as usize {
        follow_store(shared, name, t)?;
    }
    match shards.as_slice() {
        [] => Ok(false),
        [shard] => step_shard(shared, name, t, topic, *shard),
        _ => std::thread::scope(|scope| {
            let running: Vec<_> = shards
                .iter()
                .map(|shard| scope.spawn(move || step_shard(shared, name, t, topic, *shard)))
                .collect();
            let mut did = false;
            let mut failed = None;
            for r in running {
                match r.join().expect("a shard's step does not panic") {
                    Ok(d) => did |= d,
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            failed.map_or(Ok(did), Err)
        }),
    }
}

/// Applies one batch of a table's shard: folds what its partitions hold past
/// its offsets and commits rows and offsets together.
fn step_shard(shared: &Shared, name: &str, t: &Table, topic: &Topic, shard: u32) -> Result<bool> {
    let epoch = writer(shared, name, t, shard)?;
    let batch = if t.shards > 1 { SHARD_BATCH } else { BATCH };
    let applied = t.applied.lock().expect("applied lock").clone();
    let mut folded = Folded::default();
    let mut next = applied.clone();
    for (p, from) in applied.iter().enumerate() {
        if p as u32 % t.shards != shard {
            continue;
        }
        let info = topic.partition(p as u32).expect("partition in range");
        let from = (*from).max(info.start_offset);
        if from >= info.end_offset {
            next[p] = from;
            continue;
        }
        let outcome = shared
            .log
            .read(topic, p as u32, from, batch, usize::MAX, &mut |_, r| {
                folded.add(&t.compiled, &r);
            })?;
        next[p] = outcome.next_offset;
    }
    if next == applied {
        t.note_caught_up(&next);
        return Ok(false);
    }
    if t.shards > 1 {
        // A key holding the separator would not tell its parts apart.
        let before = folded.changes.len();
        folded
            .changes
            .retain(|k, _| !k.contains(sluice_log::SHARD_SEP));
        folded.skipped += (before - folded.changes.len()) as u64;
    }
    let changed: Vec<String> = folded.changes.keys().cloned().collect();
    let newest = folded.newest;
    // The rows merges start from: this engine is the shard's one writer, so
    // they cannot change before its batch commits.
    let merged: Vec<String> = folded
        .changes
        .iter()
        .filter(|(_, c)| matches!(c, Change::Merge(_)))
        .map(|(k, _)| t.stored_key(k.clone(), shard))
        .collect();
    let merged: Vec<&str> = merged.iter().map(String::as_str).collect();
    let mut old = shared
        .log
        .read_state(name, &merged, 0)?
        .rows
        .into_iter()
        .map(|v| v.and_then(|v| serde_json::from_slice::<StateRow>(&v).ok()));
    let mut rows = Vec::with_capacity(folded.changes.len());
    for (key, change) in folded.changes {
        let value = match change {
            Change::Put(v) => Some(serde_json::to_vec(&v).expect("row serializes")),
            Change::Delete => None,
            Change::Merge(partial) => {
                let mut row = old
                    .next()
                    .flatten()
                    .unwrap_or_else(|| empty_state(&t.compiled, &partial));
                row.merge(&partial);
                Some(serde_json::to_vec(&row).expect("row serializes"))
            }
        };
        rows.push((t.stored_key(key, shard), value));
    }
    let appends = t.changelog(&*shared.log, &rows, newest)?;
    let batch = StateBatch {
        rows,
        offsets: Some(next.clone()),
        skipped: folded.skipped,
        appends,
    };
    commit(shared, name, shard, epoch, batch)?;
    t.stream_time.fetch_max(newest, Ordering::AcqRel);
    t.advance(&next);
    t.note_caught_up(&t.applied.lock().expect("applied lock").clone());
    if !shared.remote.load(Ordering::Acquire) {
        t.version.fetch_add(1, Ordering::AcqRel);
        if let Some(hook) = &shared.on_change {
            hook(name, &changed);
        }
    }
    Ok(true)
}

/// Deletes the windows of a windowed table that closed more than its retention
/// before the newest record it has seen (its stream time). Runs now and then, not on
/// every batch, because it reads all of the table's keys.
fn expire_windows(shared: &Shared, name: &str, t: &Table) -> Result<()> {
    let Some(Window {
        retention_ms: Some(keep),
        ..
    }) = t.compiled.def.window
    else {
        return Ok(());
    };
    // Each shard's writer deletes its own parts.
    let writers = t.writers.lock().expect("writers lock").clone();
    if writers.is_empty() {
        return Ok(());
    }
    let now = t.stream_time.load(Ordering::Acquire);
    let cutoff = now.saturating_sub(keep);
    let mut doomed: HashMap<u32, Vec<String>> = HashMap::new();
    shared.log.scan_state(name, "", &mut |key, v| {
        let shard = if t.shards > 1 {
            sluice_log::split_shard_key(key).map(|(_, s)| s)
        } else {
            Some(0)
        };
        let old = serde_json::from_slice::<StateRow>(v)
            .ok()
            .and_then(|r| r.window)
            .is_some_and(|(_, end)| end <= cutoff);
        if old && let Some(shard) = shard.filter(|s| writers.contains_key(s)) {
            doomed.entry(shard).or_default().push(key.to_string());
        }
        true
    })?;
    for (shard, keys) in doomed {
        let rows: Vec<(String, Option<Vec<u8>>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        let appends = t.changelog(&*shared.log, &rows, now)?;
        let batch = StateBatch {
            rows,
            offsets: None,
            skipped: 0,
            appends,
        };
        commit(shared, name, shard, writers[&shard], batch)?;
        if !shared.remote.load(Ordering::Acquire)
            && let Some(hook) = &shared.on_change
        {
            hook(name, &t.row_keys(&keys));
        }
    }
    Ok(())
}

/// This engine's writer of a shard of the table's store, opened (which fences
/// any other writer of it, here or on another gateway) if it is not yet; a new
/// writer goes on from the offsets the store reflects.
fn writer(shared: &Shared, name: &str, t: &Table, shard: u32) -> Result<u64> {
    if let Some(epoch) = t.writers.lock().expect("writers lock").get(&shard) {
        return Ok(*epoch);
    }
    let epoch = shared.log.open_writer(name, shard)?;
    let applied = shared.log.read_state(name, &[], t.partitions())?.offsets;
    t.advance(&applied);
    t.writers.lock().expect("writers lock").insert(shard, epoch);
    Ok(epoch)
}

/// Commits a batch of a shard of the table's store as writer `epoch`.
fn commit(shared: &Shared, name: &str, shard: u32, epoch: u64, batch: StateBatch) -> Result<()> {
    wait(|r| shared.log.commit_state(name, shard, epoch, batch, r))?;
    Ok(())
}
