//! Processors: the streams of `stream` kept, exactly once, as topics.
//!
//! A processor reads its source topic and appends what its stream derives from
//! each record to its output topic (named like the stream). Its progress is a
//! state store, `_proc.<name>` ([`sluice_log::PROCESSOR_STORES`]): the next
//! source offset per partition, and per shard a row of counters. One step of a
//! shard reads its partitions from those offsets, derives the outputs, and
//! commits them as one [`StateBatch`] whose appends are the outputs (and the
//! dead letters): the records, the offsets and the counters are written
//! together or not at all, so a crash neither loses nor repeats an output, and
//! an output becomes readable only once its commit is durable.
//!
//! Placement is deterministic, so a processor made again from the start writes
//! the same records per input partition in the same order: an output keeps its
//! input's partition when the key and the partition count are unchanged, and
//! otherwise goes where Sluice's murmur2 puts its key (a record without a key:
//! its input partition, modulo the output's count). Every output carries its
//! lineage in the headers `sluice-source-topic`, `sluice-source-partition` and
//! `sluice-source-offset`, and its input's timestamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_log::{
    AppendRequest, AppendUnit, Backend, NewRecord, PROCESSOR_STORES, RecordParts, RecordView,
    StateBatch, Topic, TopicConfig, ValueKind, wait,
};

use crate::stream::{CompiledStream, OnError, StreamDef};
use crate::{Error, Result};

/// Input records of each of a shard's partitions one step reads, at most.
const BATCH: usize = 5_000;

/// How often the set of processors is read again (made or deleted through
/// another gateway), and failed ones looked at.
const RELOAD: Duration = Duration::from_secs(1);

/// After the name of a processor: its dead-letter topic.
pub const DEAD_LETTERS: &str = ".dead-letters";

/// The header naming the topic an output was derived from.
pub const SOURCE_TOPIC: &str = "sluice-source-topic";
/// The header naming the partition an output was derived from.
pub const SOURCE_PARTITION: &str = "sluice-source-partition";
/// The header naming the offset an output was derived from.
pub const SOURCE_OFFSET: &str = "sluice-source-offset";
/// The header of a dead letter that says why.
pub const ERROR_HEADER: &str = "sluice-error";

/// The store of processor `name`.
fn store_of(name: &str) -> String {
    format!("{PROCESSOR_STORES}{name}")
}

/// The processor of a store, if it keeps one.
fn name_of(store: &str) -> Option<&str> {
    store.strip_prefix(PROCESSOR_STORES)
}

/// A processor's dead-letter topic.
pub fn dead_letter_topic(name: &str) -> String {
    format!("{name}{DEAD_LETTERS}")
}

/// A processor as kept in its store's definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    def: StreamDef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    /// Ids of the source and output topics when it was made: a topic made
    /// again under the same name is another topic.
    source_id: u64,
    output_id: u64,
    created_ms: u64,
    shards: u32,
}

/// A shard's counters, kept with its offsets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Input records read.
    pub read: u64,
    /// Records written to the output.
    pub written: u64,
    /// Records the filter passed over.
    pub filtered: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records passed over by `on_error: skip`.
    pub skipped: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.written += o.written;
        self.filtered += o.filtered;
        self.dead_lettered += o.dead_lettered;
        self.skipped += o.skipped;
    }
}

/// The row key of a shard's counters.
fn counts_key(shard: u32) -> String {
    format!("counts.{shard}")
}

/// Where a processor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorState {
    /// Deriving records as its source grows.
    Running,
    /// Stopped: its source or output is gone, or `on_error: stop` met a record.
    Failed,
}

/// A processor's status.
#[derive(Debug, Clone)]
pub struct ProcessorStatus {
    pub def: StreamDef,
    pub sql: Option<String>,
    pub state: ProcessorState,
    pub reason: Option<String>,
    pub created_ms: u64,
    pub counts: Counts,
    /// Per source partition: (partition, next offset to process, end offset).
    pub partitions: Vec<(u32, u64, u64)>,
    /// Over a cluster, the source partitions this gateway processes now;
    /// `None` on one machine.
    pub processed_here: Option<Vec<u32>>,
}

struct Processor {
    /// The stored definition as the store keeps it (a change elsewhere shows).
    raw: Vec<u8>,
    stored: Stored,
    compiled: CompiledStream,
    source: Option<Arc<Topic>>,
    output: Option<Arc<Topic>>,
    state: Mutex<(ProcessorState, Option<String>)>,
    /// This engine's writer epoch per shard it writes, once opened.
    writers: Mutex<HashMap<u32, u64>>,
}

impl Processor {
    fn fail(&self, reason: String) {
        tracing::warn!(processor = %self.stored.def.name, %reason, "processor stopped");
        *self.state.lock().expect("state lock") = (ProcessorState::Failed, Some(reason));
    }

    fn failed(&self) -> bool {
        self.state.lock().expect("state lock").0 == ProcessorState::Failed
    }
}

struct Shared {
    log: Arc<dyn Backend>,
    /// The tables joins look rows up in.
    tables: Arc<crate::Engine>,
    procs: RwLock<HashMap<String, Arc<Processor>>>,
    wake: crate::Wake,
    stop: AtomicBool,
}

impl Shared {
    fn notify(&self) {
        self.wake.notify();
    }

    fn get(&self, name: &str) -> Result<Arc<Processor>> {
        self.procs
            .read()
            .expect("processors lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }
}

/// The processor engine. The last handle dropped stops it.
pub struct Processors {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Processors {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A processor of a stored definition (`None` if it does not decode), with the
/// topics it had when made, where they are still those.
fn load(log: &dyn Backend, bytes: &[u8]) -> Option<Processor> {
    let stored: Stored = serde_json::from_slice(bytes).ok()?;
    let compiled = stored.def.compile().ok()?;
    let find = |name: &str, id: u64| log.find_topic(name).filter(|t| t.id() == id);
    let source = find(&stored.def.source, stored.source_id);
    let output = find(&stored.def.name, stored.output_id);
    let state = match (&source, &output) {
        (Some(_), Some(_)) => (ProcessorState::Running, None),
        (None, _) => (
            ProcessorState::Failed,
            Some(format!("source topic '{}' was deleted", stored.def.source)),
        ),
        (_, None) => (
            ProcessorState::Failed,
            Some(format!("output topic '{}' was deleted", stored.def.name)),
        ),
    };
    Some(Processor {
        raw: bytes.to_vec(),
        stored,
        compiled,
        source,
        output,
        state: Mutex::new(state),
        writers: Mutex::default(),
    })
}

impl Processors {
    /// Loads the processors the log keeps and starts running them; joins
    /// read the tables of `tables`.
    pub fn open(log: Arc<dyn Backend>, tables: Arc<crate::Engine>) -> Result<Processors> {
        let shared = Arc::new(Shared {
            log,
            tables,
            procs: RwLock::default(),
            wake: crate::Wake::default(),
            stop: AtomicBool::new(false),
        });
        reload(&shared)?;
        let weak = Arc::downgrade(&shared);
        shared.log.subscribe(Arc::new(move |topic_id, _, _| {
            if let Some(s) = weak.upgrade() {
                let reads = s
                    .procs
                    .read()
                    .expect("processors lock")
                    .values()
                    .any(|p| p.stored.source_id == topic_id);
                if reads {
                    s.notify();
                }
            }
        }));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-processors".into())
            .spawn(move || run(&s))
            .map_err(sluice_log::Error::Io)?;
        Ok(Processors {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops processing once the step in progress is committed (or refused).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.notify();
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }

    /// Makes a processor: its output topic (which must not exist yet), its
    /// dead-letter topic when it dead-letters (kept if it exists), and its
    /// store; it starts from its source's first retained record.
    pub fn create(&self, def: StreamDef, sql: Option<String>) -> Result<ProcessorStatus> {
        let compiled = def.compile()?;
        let name = def.name.clone();
        if self
            .shared
            .procs
            .read()
            .expect("processors lock")
            .contains_key(&name)
        {
            return Err(Error::Exists(name));
        }
        self.make(def, compiled, sql)
    }

    /// Makes a processor, or replaces the definition of the one of that name
    /// (`CREATE OR REPLACE`), which goes on from its committed offsets: only
    /// what it derives from each record may change, not its source, its output
    /// key or its output's partitions (those need it made again, from the
    /// start). Answers whether it was replaced.
    pub fn create_or_replace(
        &self,
        def: StreamDef,
        sql: Option<String>,
    ) -> Result<(ProcessorStatus, bool)> {
        let compiled = def.compile()?;
        let name = def.name.clone();
        let Ok(old) = self.shared.get(&name) else {
            return Ok((self.make(def, compiled, sql)?, false));
        };
        let was = &old.stored.def;
        for (same, what) in [
            (was.source == def.source, "source"),
            (was.key == def.key, "output key (PARTITION BY)"),
            (was.partitions == def.partitions, "output partitions"),
        ] {
            if !same {
                return Err(Error::Invalid(format!(
                    "replacing '{name}' would change its {what}: that needs it made again from \
                     the start (delete the processor and its output topic, then make it)"
                )));
            }
        }
        self.check_join(&def)?;
        let log = &self.shared.log;
        if def.on_error == OnError::DeadLetter
            && let Some(source) = &old.source
        {
            dead_letters(log.as_ref(), &name, source)?;
        }
        let stored = Stored {
            def,
            sql,
            ..old.stored.clone()
        };
        let json = serde_json::to_vec(&stored).expect("a processor serializes");
        wait(|r| log.update_store(&store_of(&name), json.clone(), r))?;
        // The new one opens its writers afresh, which fences a step of the old
        // one that may be under way.
        let new = Processor {
            raw: json,
            stored,
            compiled,
            source: old.source.clone(),
            output: old.output.clone(),
            // A processor `on_error: stop` stopped goes on under its new
            // definition; one whose topics are gone stays failed.
            state: Mutex::new(match (&old.source, &old.output) {
                (Some(_), Some(_)) => (ProcessorState::Running, None),
                _ => old.state.lock().expect("state lock").clone(),
            }),
            writers: Mutex::default(),
        };
        self.shared
            .procs
            .write()
            .expect("processors lock")
            .insert(name.clone(), Arc::new(new));
        self.shared.notify();
        Ok((self.status(&name)?, true))
    }

    fn make(
        &self,
        def: StreamDef,
        compiled: CompiledStream,
        sql: Option<String>,
    ) -> Result<ProcessorStatus> {
        let log = &self.shared.log;
        let name = def.name.clone();
        let source = log
            .find_topic(&def.source)
            .ok_or_else(|| Error::NoSource(def.source.clone()))?;
        self.refuse_cycle(&def)?;
        self.check_join(&def)?;
        if log.find_topic(&name).is_some() {
            return Err(Error::Invalid(format!(
                "topic '{name}' exists: a processor makes its output topic, so name one that does not"
            )));
        }
        let partitions = def.partitions.unwrap_or(source.partition_count());
        let config = TopicConfig {
            partitions,
            ..Default::default()
        };
        let output = wait(|r| log.create_topic(&name, config, r))?;
        let made = (|| -> Result<()> {
            if def.on_error == OnError::DeadLetter {
                dead_letters(log.as_ref(), &name, &source)?;
            }
            let shards = log.shards(source.partition_count());
            let stored = Stored {
                def: def.clone(),
                sql: sql.clone(),
                source_id: source.id(),
                output_id: output.id(),
                created_ms: sluice_log::now_ms(),
                shards,
            };
            let offsets: Vec<u64> = source.partitions().iter().map(|p| p.start_offset).collect();
            let json = serde_json::to_vec(&stored).expect("a processor serializes");
            let store = store_of(&name);
            wait(|r| log.create_store(&store, json.clone(), offsets, shards, r)).map_err(|e| {
                match e {
                    sluice_log::Error::StoreExists(_) => Error::Exists(name.clone()),
                    e => e.into(),
                }
            })?;
            // What the processor has not read stays until it has (where the
            // engine runs retention itself).
            let _ = wait(|r| log.hold_retention(&store, Some(&source), r));
            self.shared
                .procs
                .write()
                .expect("processors lock")
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Processor {
                        raw: json,
                        stored,
                        compiled,
                        source: Some(source.clone()),
                        output: Some(output.clone()),
                        state: Mutex::new((ProcessorState::Running, None)),
                        writers: Mutex::default(),
                    })
                });
            Ok(())
        })();
        if let Err(e) = made {
            let _ = wait(|r| log.delete_topic(&name, r));
            return Err(e);
        }
        self.shared.notify();
        self.status(&name)
    }

    /// Refuses a join whose table does not exist or cannot be looked up by the
    /// key the definition compares.
    fn check_join(&self, def: &StreamDef) -> Result<()> {
        let Some(j) = &def.join else {
            return Ok(());
        };
        let table = self
            .shared
            .tables
            .definition(&j.table)
            .map_err(|_| Error::NoTable(j.table.clone()))?;
        check_join_key(j, &table)
    }

    /// Refuses a definition whose source is derived, directly or through other
    /// processors, from its own output.
    fn refuse_cycle(&self, def: &StreamDef) -> Result<()> {
        let procs = self.shared.procs.read().expect("processors lock");
        let mut at = def.source.clone();
        for _ in 0..=procs.len() {
            if at == def.name {
                return Err(Error::Invalid(format!(
                    "'{}' would read its own output (through '{}')",
                    def.name, def.source
                )));
            }
            match procs.get(&at) {
                Some(p) => at = p.stored.def.source.clone(),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Deletes a processor and its progress; its output and dead-letter
    /// topics stay, as ordinary topics.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.shared.get(name)?;
        let log = &self.shared.log;
        wait(|r| log.drop_store(&store_of(name), r)).map_err(|e| match e {
            sluice_log::Error::StoreNotFound(_) => Error::NotFound(name.to_string()),
            e => e.into(),
        })?;
        self.shared
            .procs
            .write()
            .expect("processors lock")
            .remove(name);
        Ok(())
    }

    /// Names of all processors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .procs
            .read()
            .expect("processors lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The processor that writes `topic`, if one does: clients do not produce
    /// to it.
    pub fn writer_of(&self, topic: &Topic) -> Option<String> {
        let procs = self.shared.procs.read().expect("processors lock");
        procs
            .get(topic.name())
            .filter(|p| p.stored.output_id == topic.id())
            .map(|p| p.stored.def.name.clone())
    }

    /// A processor's definition, state, counters and progress.
    pub fn status(&self, name: &str) -> Result<ProcessorStatus> {
        let p = self.shared.get(name)?;
        let log = &self.shared.log;
        let store = store_of(name);
        let partitions = p.source.as_ref().map_or(0, |t| t.partition_count());
        let keys: Vec<String> = (0..p.stored.shards).map(counts_key).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let read = log.read_state(&store, &keys, partitions)?;
        let mut counts = Counts::default();
        for row in read.rows.iter().flatten() {
            if let Ok(c) = serde_json::from_slice::<Counts>(row) {
                counts.add(&c);
            }
        }
        let (state, reason) = p.state.lock().expect("state lock").clone();
        Ok(ProcessorStatus {
            def: p.stored.def.clone(),
            sql: p.stored.sql.clone(),
            state,
            reason,
            created_ms: p.stored.created_ms,
            counts,
            partitions: read
                .offsets
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let end = p
                        .source
                        .as_ref()
                        .and_then(|t| t.partition(i as u32))
                        .map_or(*a, |i| i.end_offset);
                    (i as u32, *a, end.max(*a))
                })
                .collect(),
            processed_here: log.writes_store(&store).map(|shards| {
                (0..partitions)
                    .filter(|q| shards.contains(&(q % p.stored.shards)))
                    .collect()
            }),
        })
    }
}

/// A processor's dead-letter topic, made (with its source's partition count)
/// if it is not there.
fn dead_letters(log: &dyn Backend, name: &str, source: &Topic) -> Result<Arc<Topic>> {
    let dlq = dead_letter_topic(name);
    if let Some(t) = log.topic(&dlq).or_else(|| log.find_topic(&dlq)) {
        return Ok(t);
    }
    let config = TopicConfig {
        partitions: source.partition_count(),
        ..Default::default()
    };
    match wait(|r| log.create_topic(&dlq, config, r)) {
        Ok(t) => Ok(t),
        Err(sluice_log::Error::TopicExists(_)) => log
            .find_topic(&dlq)
            .ok_or_else(|| Error::Invalid(format!("topic '{dlq}' is being made elsewhere"))),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a join on a windowed table (its rows are keyed by window too), and
/// one whose SQL compares with a column that does not key the table.
fn check_join_key(j: &crate::Join, table: &crate::TableDef) -> Result<()> {
    if table.window.is_some() {
        return Err(Error::Invalid(format!(
            "table '{}' is windowed: a join looks rows up by key alone",
            j.table
        )));
    }
    let keyed_by = table
        .key
        .as_deref()
        .or(table.group_by.as_deref())
        .unwrap_or("key");
    let Some(column) = &j.key_column else {
        return Ok(());
    };
    let field = keyed_by.strip_prefix("$.").unwrap_or(keyed_by);
    if keyed_by != "key" && column != field {
        return Err(Error::Invalid(format!(
            "table '{}' is keyed by {keyed_by}: join ON {}.{field}, not {column}",
            j.table,
            j.row_alias()
        )));
    }
    Ok(())
}

/// Brings the processors in line with the stores the engine has (made or
/// dropped through other gateways).
fn reload(shared: &Shared) -> Result<()> {
    let stores = shared.log.stores()?;
    let ours: Vec<(&str, &[u8])> = stores
        .iter()
        .filter_map(|(n, v)| name_of(n).map(|n| (n, v.as_slice())))
        .collect();
    // Those made elsewhere, and those whose definition changed elsewhere.
    let missing: Vec<(&str, &[u8])> = {
        let procs = shared.procs.read().expect("processors lock");
        ours.iter()
            .filter(|(n, v)| procs.get(*n).is_none_or(|p| p.raw != *v))
            .copied()
            .collect()
    };
    let loaded: Vec<(String, Processor)> = missing
        .into_iter()
        .filter_map(|(n, v)| load(&*shared.log, v).map(|p| (n.to_string(), p)))
        .collect();
    let mut procs = shared.procs.write().expect("processors lock");
    procs.retain(|n, _| ours.iter().any(|(o, _)| o == n));
    for (n, p) in loaded {
        procs.insert(n, Arc::new(p));
    }
    Ok(())
}

fn run(shared: &Shared) {
    let mut reloaded = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        if reloaded.elapsed() >= RELOAD {
            reloaded = Instant::now();
            if let Err(e) = reload(shared) {
                tracing::warn!(error = %e, "reading the processors");
            }
        }
        let procs: Vec<Arc<Processor>> = shared
            .procs
            .read()
            .expect("processors lock")
            .values()
            .cloned()
            .collect();
        let mut busy = false;
        for p in procs {
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            match step(shared, &p) {
                Ok(did) => busy |= did,
                Err(e) if crate::passing(&e) => {
                    // Whatever reached the store, the next round opens the
                    // writer again and goes on from what the store holds.
                    p.writers.lock().expect("writers lock").clear();
                    tracing::warn!(processor = %p.stored.def.name, error = %e, "processor paused");
                }
                Err(e) => p.fail(e.to_string()),
            }
        }
        if !busy {
            shared.wake.wait(Duration::from_millis(250));
        }
    }
}

/// One step of each shard of a processor this engine writes; whether there
/// was anything to do.
fn step(shared: &Shared, p: &Processor) -> Result<bool> {
    if p.failed() {
        return Ok(false);
    }
    let log = &shared.log;
    let def = &p.stored.def;
    let (Some(source), Some(output)) = (&p.source, &p.output) else {
        return Ok(false);
    };
    for (topic, what) in [(source, "source"), (output, "output")] {
        if log.topic(topic.name()).is_none_or(|t| t.id() != topic.id()) {
            p.fail(format!("{what} topic '{}' was deleted", topic.name()));
            return Ok(false);
        }
    }
    let store = store_of(&def.name);
    let mut did = false;
    for shard in 0..p.stored.shards {
        if !log.may_write(&store, shard)? {
            p.writers.lock().expect("writers lock").remove(&shard);
            continue;
        }
        did |= step_shard(shared, p, source, output, &store, shard)?;
    }
    Ok(did)
}

/// What one input record came to.
enum Outcome {
    Written(NewRecord),
    Filtered,
    Failed(String),
}

/// An input record, read.
struct Input {
    partition: u32,
    offset: u64,
    timestamp: u64,
    key: Option<String>,
    headers: Vec<(String, String)>,
    kind: ValueKind,
    /// The value's bytes (JSON text, or the bytes of a binary value).
    bytes: Vec<u8>,
    /// The JSON value, parsed (`None` for a tombstone, a binary value or
    /// JSON that does not parse, which `bytes` then keeps).
    value: Option<Value>,
}

impl Input {
    fn read(partition: u32, offset: u64, r: &RecordView<'_>) -> Input {
        let value = match r.kind {
            ValueKind::Json => serde_json::from_slice(r.value).ok(),
            _ => None,
        };
        Input {
            partition,
            offset,
            timestamp: r.timestamp,
            key: r.key.map(str::to_string),
            headers: r
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            kind: r.kind,
            bytes: r.value.to_vec(),
            value,
        }
    }

    /// The record's headers without lineage, then its lineage.
    fn lineage(&self, source: &Topic) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| ![SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET].contains(&n.as_str()))
            .cloned()
            .collect();
        headers.push((SOURCE_TOPIC.into(), source.name().to_string()));
        headers.push((SOURCE_PARTITION.into(), self.partition.to_string()));
        headers.push((SOURCE_OFFSET.into(), self.offset.to_string()));
        headers
    }
}

fn step_shard(
    shared: &Shared,
    p: &Processor,
    source: &Topic,
    output: &Topic,
    store: &str,
    shard: u32,
) -> Result<bool> {
    let log = &shared.log;
    let epoch = {
        let cached = p.writers.lock().expect("writers lock").get(&shard).copied();
        match cached {
            Some(e) => e,
            None => {
                let e = log.open_writer(store, shard)?;
                p.writers.lock().expect("writers lock").insert(shard, e);
                e
            }
        }
    };
    let key = counts_key(shard);
    let read = log.read_state(store, &[&key], source.partition_count())?;
    let mut counts: Counts = read.rows[0]
        .as_deref()
        .and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or_default();
    let applied = read.offsets;
    let mut next = applied.clone();
    let mut inputs = Vec::new();
    let shards = p.stored.shards;
    for (part, from) in applied.iter().enumerate() {
        let part = part as u32;
        if part % shards != shard {
            continue;
        }
        let Some(info) = source.partition(part) else {
            continue;
        };
        let from = (*from).max(info.start_offset);
        next[part as usize] = from;
        if from >= info.end_offset {
            continue;
        }
        let outcome = log.read(source, part, from, BATCH, usize::MAX, &mut |offset, r| {
            inputs.push(Input::read(part, offset, &r));
        })?;
        next[part as usize] = outcome.next_offset;
    }
    if next == applied {
        return Ok(false);
    }
    let rows = join_rows(shared, p, &inputs)?;
    let mut outputs = Vec::new();
    let mut dead = Vec::new();
    let mut stop = None;
    // `on_error: stop`: a partition stops before its refused record; the
    // others go on to the end of what was read.
    let mut stopped: HashMap<u32, u64> = HashMap::new();
    for (input, row) in inputs.iter().zip(rows) {
        if stopped.contains_key(&input.partition) {
            continue;
        }
        match derive(p, output, source, input, row) {
            Outcome::Written(rec) => {
                counts.written += 1;
                outputs.push(rec);
            }
            Outcome::Filtered => counts.filtered += 1,
            Outcome::Failed(why) => match p.stored.def.on_error {
                OnError::DeadLetter => {
                    counts.dead_lettered += 1;
                    dead.push(dead_letter(source, input, &why));
                }
                OnError::Skip => counts.skipped += 1,
                OnError::Stop => {
                    stopped.insert(input.partition, input.offset);
                    next[input.partition as usize] = input.offset;
                    stop.get_or_insert(format!(
                        "record {} of partition {} of '{}': {why}",
                        input.offset,
                        input.partition,
                        source.name()
                    ));
                    continue;
                }
            },
        }
        counts.read += 1;
    }
    if next == applied {
        if let Some(why) = stop {
            p.fail(why);
        }
        return Ok(false);
    }
    let mut appends = Vec::new();
    if !outputs.is_empty() {
        appends.push(request(output, outputs));
    }
    if !dead.is_empty() {
        // Made again for the next dead letter if it was deleted.
        let dlq = dead_letters(log.as_ref(), &p.stored.def.name, source)?;
        let n = dlq.partition_count();
        for d in &mut dead {
            d.partition %= n;
        }
        appends.push(request(&dlq, dead));
    }
    let batch = StateBatch {
        rows: vec![(
            key,
            Some(serde_json::to_vec(&counts).expect("counts serialize")),
        )],
        offsets: Some(next),
        skipped: 0,
        appends,
    };
    wait(|r| log.commit_state(store, shard, epoch, batch, r))?;
    if let Some(why) = stop {
        p.fail(why);
    }
    Ok(true)
}

/// The rows the inputs join (all `None` without a join): looked up in the
/// table's committed state, after waiting (bounded, if the join asks) until
/// the table has applied what its source held once the inputs were read.
fn join_rows(shared: &Shared, p: &Processor, inputs: &[Input]) -> Result<Vec<Option<Value>>> {
    let Some(join) = &p.stored.def.join else {
        return Ok(vec![None; inputs.len()]);
    };
    let tables = &shared.tables;
    if let Some(wait_ms) = join.wait_ms.filter(|w| *w > 0)
        && let Some(topic) = tables.source(&join.table)?
    {
        let ends: Vec<u64> = (0..topic.partition_count())
            .map(|q| shared.log.end_offset(&topic, q))
            .collect();
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let (applied, _) = tables.progress(&join.table)?;
            if applied.iter().zip(&ends).all(|(a, e)| a >= e) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let keys: Vec<Option<String>> = inputs
        .iter()
        .map(|i| i.value.as_ref().and_then(|v| p.compiled.join_key(v)))
        .collect();
    let wanted: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
    let mut found = tables.get_many(&join.table, &wanted)?.into_iter();
    Ok(keys
        .iter()
        .map(|k| k.as_ref().and_then(|_| found.next().flatten()))
        .collect())
}

fn request(topic: &Topic, records: Vec<NewRecord>) -> AppendRequest {
    AppendRequest {
        topic: topic.name().to_string(),
        topic_id: topic.id(),
        units: vec![AppendUnit {
            dedupe_key: None,
            records,
        }],
    }
}

/// What the processor writes for one input record (`row`: the row it joins).
fn derive(
    p: &Processor,
    output: &Topic,
    source: &Topic,
    input: &Input,
    row: Option<Value>,
) -> Outcome {
    let stream = &p.compiled;
    let (key, kind, bytes) = match input.kind {
        ValueKind::Binary if stream.passes_values() => {
            (input.key.clone(), ValueKind::Binary, input.bytes.clone())
        }
        ValueKind::Binary => return Outcome::Failed("the value is not JSON".into()),
        ValueKind::Json if input.value.is_none() => {
            return Outcome::Failed("the value is not JSON".into());
        }
        ValueKind::Null | ValueKind::Json => {
            let joined;
            let value = match (&input.value, &stream.def.join) {
                (Some(v), Some(_)) => match stream.joined(v, row) {
                    Some(j) => {
                        joined = j;
                        Some(&joined)
                    }
                    None => return Outcome::Filtered,
                },
                (v, _) => v.as_ref(),
            };
            let Some(derived) = stream.apply(input.key.as_deref(), value) else {
                return Outcome::Filtered;
            };
            match derived.value {
                Some(v) => (
                    derived.key,
                    ValueKind::Json,
                    serde_json::to_vec(&v).expect("JSON serializes"),
                ),
                None => (derived.key, ValueKind::Null, Vec::new()),
            }
        }
    };
    if kind == ValueKind::Null && key.is_none() {
        // A tombstone without a key deletes nothing.
        return Outcome::Filtered;
    }
    let count = output.partition_count();
    let target = if stream.keeps_key() && count == source.partition_count() {
        input.partition
    } else {
        match &key {
            Some(k) => sluice_log::partition_for_key(k.as_bytes(), count),
            None => input.partition % count,
        }
    };
    let headers = input.lineage(source);
    let bytes = RecordParts {
        timestamp: input.timestamp,
        key: key.as_deref(),
        headers: &headers,
        kind,
        value: &bytes,
    }
    .encode();
    Outcome::Written(NewRecord {
        partition: target,
        bytes,
    })
}

/// The dead letter of an input record: the record as it was, with its lineage
/// and the reason; on its input's partition (modulo the topic's count).
fn dead_letter(source: &Topic, input: &Input, why: &str) -> NewRecord {
    let mut headers = input.lineage(source);
    headers.push((ERROR_HEADER.into(), why.to_string()));
    NewRecord {
        partition: input.partition,
        bytes: RecordParts {
            timestamp: input.timestamp,
            key: input.key.as_deref(),
            headers: &headers,
            kind: input.kind,
            value: &input.bytes,
        }
        .encode(),
    }
}
