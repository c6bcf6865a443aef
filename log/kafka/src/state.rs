//! State stores over Kafka (the tables of every gateway).
//!
//! **Where a store lives.** Its definition is a record of `_sluice.tables`, a
//! compacted topic of one partition (key: the store's name; a tombstone when it was
//! dropped), so a table made through one gateway exists on all of them. A store
//! is split into **shards** (one per source partition of a state table, see
//! `Backend::shards`), and its rows live in its **changelog**, a compacted topic
//! made for it (`_sluice.table.<name>.<created>`) with one partition per shard:
//! shard `s` writes partition `s`; key = row key, value = row, tombstone =
//! deleted row. Every batch ends with a **mark** (key `0xFF`, which no row key can
//! be, since row keys are UTF-8): the source offsets the batch reached (of the
//! shard's partitions) and the shard's skipped-record count.
//!
//! **Writing, exactly once.** A shard's writer is a transactional producer whose
//! `transactional.id` is the shard's; a batch (its rows and its mark) is one
//! Kafka transaction. Opening a writer (`init_transactions`) fences every earlier
//! one, on any gateway, and ends its open transaction; the new writer then writes
//! a fence record (key `0xFE`) and waits until the local copy has read it, so the
//! offsets it resumes from are the ones the last committed batch reached. Only
//! the holder of the shard's lease writes, so gateways do not take a shard from
//! each other while both are alive. The leases are one consumer group,
//! `_sluice.table-leases`, whose members are the gateways, each subscribed to
//! every changelog (see `KafkaGroups::leases`): a gateway holds the shards whose
//! changelog partitions the group assigns it, so the cluster's assignor spreads
//! the work of every table over the gateways, and moves it when one comes or goes.
//!
//! **Reading.** Every gateway keeps a local copy of every store in
//! `kafka-tables.redb` in its data directory, read from the changelogs with
//! `read_committed` by one thread, which stores each changelog's next offset in the
//! same redb transaction as the rows; a restarted gateway goes on from there, and
//! only a gateway new to the cluster reads changelogs from their start. A commit is
//! answered once the local copy holds it, so the writer reads its own writes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sluice_log::{Error, KEY_END, Result, StateBatch, StateHook, StateRead, StoreStats};

use crate::engine::unavailable;

/// Records a batch appends to a topic in its transaction: the topic's Kafka
/// name and the records, their partitions chosen.
pub(crate) type Output = (String, Vec<sluice_log::NewRecord>);

/// Where a batch's appends to one topic went: per partition, the offset after
/// its last record.
pub(crate) type Written = Vec<(u32, u64)>;

/// The definitions topic's name (after the gateway's topic prefix).
pub(crate) const DEFS: &str = "_sluice.tables";

/// Before a store's name: its changelog topic (after the topic prefix).
pub(crate) const CHANGELOGS: &str = "_sluice.table.";

/// The consumer group of the stores' leases (after the topic prefix).
pub(crate) const LEASE_GROUP: &str = "_sluice.table-leases";

/// How often a gateway renews its leases, at most: as often, a gateway learns of
/// a store given to it.
const LEASE_ASK: Duration = Duration::from_secs(1);

/// The key of a batch's last record: the offsets it reached.
const MARK: &[u8] = &[0xFF];
/// The key of the record a new writer writes first.
const FENCE: &[u8] = &[0xFE];

/// Rows: (store, key) → row.
const ROWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rows");
/// Where each store's copy stands: store → [`Copy`] (JSON).
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
/// `cluster` → the engine epoch the copies are of; `format` → [`FORMAT`].
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// The layout of the local copies; copies of another layout are read again.
const FORMAT: &str = "2";

/// Records applied to the local copy in one redb transaction, at most.
const APPLY_BATCH: usize = 5_000;

/// A store's definition record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Def {
    /// The Kafka topic of its rows.
    changelog: String,
    /// The table engine's definition, opaque here.
    definition: Vec<u8>,
    /// The source offsets it starts from.
    offsets: Vec<u64>,
    /// Its shards: partitions of its changelog.
    #[serde(default = "one")]
    shards: u32,
}

fn one() -> u32 {
    1
}

/// Where the local copy of one store stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Copy {
    changelog: String,
    /// Per shard, the next offset of its changelog partition to apply.
    next: Vec<i64>,
    /// The source offsets of the newest marks applied, each partition's from its
    /// shard's.
    offsets: Vec<u64>,
    rows: u64,
    /// Per shard, the records it skipped.
    skipped: Vec<u64>,
}

impl Copy {
    fn new(def: &Def) -> Copy {
        Copy {
            changelog: def.changelog.clone(),
            next: vec![0; def.shards as usize],
            offsets: def.offsets.clone(),
            rows: 0,
            skipped: vec![0; def.shards as usize],
        }
    }

    fn shards(&self) -> u32 {
        self.next.len() as u32
    }
}

/// A batch's mark.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    offsets: Vec<u64>,
    skipped: u64,
}

struct Writer {
    epoch: u64,
    changelog: String,
    shard: u32,
    producer: FutureProducer,
}

/// What the follower has applied: the next offset of the definitions topic, and
/// of each store's changelog partitions.
#[derive(Default)]
struct Seen {
    defs: i64,
    stores: HashMap<String, Vec<i64>>,
}

/// A store's shard.
type Shard = (String, u32);

/// The shards whose lease this gateway holds, as of its last renewal.
#[derive(Default)]
struct Leases {
    /// The changelogs it was subscribed to then.
    subscribed: Vec<String>,
    /// The shards it holds.
    held: HashSet<Shard>,
    /// When to renew.
    until: Option<Instant>,
}

pub(crate) struct States {
    db: Database,
    defs_topic: String,
    /// Put before a store's name to make its `transactional.id`.
    txn_prefix: String,
    client: ClientConfig,
    timeout: Duration,
    /// Writes definitions.
    plain: FutureProducer,
    defs: Mutex<HashMap<String, Def>>,
    seen: (Mutex<Seen>, Condvar),
    writers: Mutex<HashMap<Shard, Arc<Writer>>>,
    epochs: AtomicU64,
    leases: Mutex<Leases>,
    hooks: RwLock<Vec<StateHook>>,
    stop: AtomicBool,
}

impl Drop for States {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializes")
}

fn read_copy(v: Option<redb::AccessGuard<'_, &[u8]>>) -> Option<Copy> {
    v.and_then(|v| serde_json::from_slice(v.value()).ok())
}

impl States {
    /// Opens the local copies in `dir` (emptied if they are of another cluster),
    /// reads the definitions topic to its end and starts following it and every
    /// store's changelog. `client` is the cluster's settings (for the writers),
    /// `producer` the engine's idempotent producer's (for definitions).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        dir: &Path,
        client: ClientConfig,
        producer: &ClientConfig,
        consumer: &ClientConfig,
        defs_topic: String,
        txn_prefix: String,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Arc<States>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("kafka-tables.redb"))?;
        {
            let txn = db.begin_write()?;
            let same = {
                let meta = txn.open_table(META)?;
                meta.get("cluster")?.is_some_and(|v| v.value() == cluster)
                    && meta.get("format")?.is_some_and(|v| v.value() == FORMAT)
            };
            if !same {
                txn.delete_table(ROWS)?;
                txn.delete_table(COPIES)?;
                let mut meta = txn.open_table(META)?;
                meta.insert("cluster", cluster)?;
                meta.insert("format", FORMAT)?;
            }
            txn.open_table(ROWS)?;
            txn.open_table(COPIES)?;
            txn.commit()?;
        }
        let plain: FutureProducer = producer.create().map_err(unavailable)?;
        let follower: BaseConsumer = consumer.create().map_err(unavailable)?;
        let (_, defs_end) = crate::engine::patiently(timeout, || {
            follower
                .fetch_watermarks(&defs_topic, 0, timeout)
                .map_err(unavailable)
        })?;
        let states = Arc::new(States {
            db,
            defs_topic,
            txn_prefix,
            client,
            timeout,
            plain,
            defs: Mutex::default(),
            seen: (Mutex::default(), Condvar::new()),
            writers: Mutex::default(),
            epochs: AtomicU64::new(0),
            leases: Mutex::default(),
            hooks: RwLock::default(),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&states);
        std::thread::Builder::new()
            .name("sluice-kafka-tables".into())
            .spawn(move || follow(weak, follower))
            .map_err(Error::Io)?;
        states.wait_defs(defs_end)?;
        states.forget_dropped()?;
        states.report_replay();
        Ok(states)
    }

    /// Logs how much of the changelogs the local copies have yet to read, next
    /// to what reading them from their start would be.
    fn report_replay(&self) {
        let defs = self.defs.lock().expect("defs lock").clone();
        let (mut replay, mut full) = (0i64, 0i64);
        for (name, def) in &defs {
            let copy = self.copy(name).ok().flatten();
            for shard in 0..def.shards {
                let Ok((low, high)) = self.plain.client().fetch_watermarks(
                    &def.changelog,
                    shard as i32,
                    self.timeout,
                ) else {
                    continue;
                };
                let next = copy
                    .as_ref()
                    .and_then(|c| c.next.get(shard as usize).copied())
                    .unwrap_or(low);
                replay += (high - next.max(low)).max(0);
                full += (high - low).max(0);
            }
        }
        tracing::info!(
            tables = defs.len(),
            replay,
            full,
            "table copies resume: {replay} changelog records to read of {full}"
        );
    }

    /// Waits until the follower read the definitions topic up to `offset`.
    fn wait_defs(&self, offset: i64) -> Result<()> {
        self.wait_seen(|s| s.defs >= offset, "the table definitions")
    }

    /// Waits until the local copy of `store` applied its shard's changelog
    /// partition up to `offset` (or the store is gone).
    fn wait_store(&self, store: &str, shard: u32, offset: i64) -> Result<()> {
        let gone = || !self.defs.lock().expect("defs lock").contains_key(store);
        self.wait_seen(
            |s| {
                s.stores
                    .get(store)
                    .and_then(|n| n.get(shard as usize))
                    .is_some_and(|n| *n >= offset)
                    || gone()
            },
            store,
        )
    }

    fn wait_seen(&self, done: impl Fn(&Seen) -> bool, what: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let (lock, cv) = &self.seen;
        let mut seen = lock.lock().expect("seen lock");
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::Acquire) {
                return Err(Error::Unavailable(format!(
                    "the local copy of {what} did not catch up within {:?}",
                    self.timeout
                )));
            }
            seen = cv.wait_timeout(seen, left).expect("seen lock").0;
        }
        Ok(())
    }

    /// Drops the copies of stores dropped while this gateway was away.
    fn forget_dropped(&self) -> Result<()> {
        let defs = self.defs.lock().expect("defs lock").clone();
        let txn = self.db.begin_write()?;
        {
            let mut copies = txn.open_table(COPIES)?;
            let mut rows = txn.open_table(ROWS)?;
            let mut gone = Vec::new();
            for item in copies.iter()? {
                let (k, v) = item?;
                let changelog = serde_json::from_slice::<Copy>(v.value()).map(|c| c.changelog);
                if defs.get(k.value()).map(|d| &d.changelog) != changelog.as_ref().ok() {
                    gone.push(k.value().to_string());
                }
            }
            for name in gone {
                copies.remove(name.as_str())?;
                let n = name.as_str();
                rows.retain_in((n, "")..(n, KEY_END), |_, _| false)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes a store; refused with [`Error::StoreExists`] if one of that name exists.
    pub(crate) fn create(
        &self,
        name: &str,
        changelog: String,
        definition: Vec<u8>,
        offsets: Vec<u64>,
        shards: u32,
    ) -> Result<()> {
        self.catch_up_defs()?;
        if self.defs.lock().expect("defs lock").contains_key(name) {
            return Err(Error::StoreExists(name.to_string()));
        }
        let def = Def {
            changelog,
            definition,
            offsets,
            shards,
        };
        let at = self.write_def(name, Some(&json(&def)))?;
        self.wait_defs(at + 1)
    }

    /// Replaces a store's definition; its changelog, rows and offsets stay.
    pub(crate) fn update(&self, name: &str, definition: Vec<u8>) -> Result<()> {
        self.catch_up_defs()?;
        let Some(mut def) = self.defs.lock().expect("defs lock").get(name).cloned() else {
            return Err(Error::StoreNotFound(name.to_string()));
        };
        def.definition = definition;
        let at = self.write_def(name, Some(&json(&def)))?;
        self.wait_defs(at + 1)
    }

    /// Drops a store; answers its changelog topic, for the caller to delete.
    pub(crate) fn drop_store(&self, name: &str) -> Result<String> {
        self.catch_up_defs()?;
        let Some(def) = self.defs.lock().expect("defs lock").get(name).cloned() else {
            return Err(Error::StoreNotFound(name.to_string()));
        };
        let at = self.write_def(name, None)?;
        self.writers
            .lock()
            .expect("writers lock")
            .retain(|(store, _), _| store != name);
        self.wait_defs(at + 1)?;
        Ok(def.changelog)
    }

    /// Waits until the follower read every definition written so far.
    fn catch_up_defs(&self) -> Result<()> {
        let (_, end) = self
            .plain
            .client()
            .fetch_watermarks(&self.defs_topic, 0, self.timeout)
            .map_err(unavailable)?;
        self.wait_defs(end)
    }

    fn write_def(&self, name: &str, value: Option<&[u8]>) -> Result<i64> {
        let mut record = FutureRecord::to(&self.defs_topic)
            .partition(0)
            .key(name.as_bytes());
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivery = futures_executor::block_on(self.plain.send(record, self.timeout))
            .map_err(|(e, _)| unavailable(e))?;
        Ok(delivery.offset)
    }

    /// Every store with its definition.
    pub(crate) fn stores(&self) -> Vec<(String, Vec<u8>)> {
        self.defs
            .lock()
            .expect("defs lock")
            .iter()
            .map(|(k, d)| (k.clone(), d.definition.clone()))
            .collect()
    }

    /// Whether this gateway holds the lease of `store`'s `shard`. `renew`
    /// renews this gateway's membership of the lease group, subscribed to the
    /// changelogs given, and answers the changelog partitions it holds and how
    /// soon to renew; it is called when the last renewal is due, or did not know
    /// of `store` yet.
    pub(crate) fn may_write(
        &self,
        store: &str,
        shard: u32,
        renew: impl FnOnce(&[String]) -> Result<(crate::members::Partitions, Duration)>,
    ) -> Result<bool> {
        let changelog = self.def(store)?.changelog;
        let this = (store.to_string(), shard);
        let mut leases = self.leases.lock().expect("leases lock");
        if leases.until.is_some_and(|t| Instant::now() < t)
            && leases.subscribed.binary_search(&changelog).is_ok()
        {
            return Ok(leases.held.contains(&this));
        }
        let defs = self.defs.lock().expect("defs lock").clone();
        let mut subscribed: Vec<String> = defs.values().map(|d| d.changelog.clone()).collect();
        subscribed.sort_unstable();
        let (given, every) = renew(&subscribed)?;
        let by_changelog: HashMap<&str, &str> = defs
            .iter()
            .map(|(name, d)| (d.changelog.as_str(), name.as_str()))
            .collect();
        let held: HashSet<Shard> = given
            .iter()
            .filter_map(|(topic, ps)| by_changelog.get(topic.as_str()).map(|name| (name, ps)))
            .flat_map(|(name, ps)| ps.iter().map(|p| (name.to_string(), *p as u32)))
            .filter(|(name, shard)| defs.get(name).is_some_and(|d| *shard < d.shards))
            .collect();
        self.writers
            .lock()
            .expect("writers lock")
            .retain(|shard, _| held.contains(shard));
        for (name, shard) in held.difference(&leases.held) {
            tracing::info!(table = %name, shard, "this gateway holds the table's lease");
        }
        for (name, shard) in leases.held.difference(&held) {
            tracing::info!(table = %name, shard, "the table's lease went to another gateway");
        }
        *leases = Leases {
            subscribed,
            until: Some(Instant::now() + every.min(LEASE_ASK)),
            held,
        };
        Ok(leases.held.contains(&this))
    }

    /// The shards of `store` whose leases this gateway held at its last renewal.
    pub(crate) fn holds_lease(&self, store: &str) -> Vec<u32> {
        let mut shards: Vec<u32> = self
            .leases
            .lock()
            .expect("leases lock")
            .held
            .iter()
            .filter(|(name, _)| name == store)
            .map(|(_, shard)| *shard)
            .collect();
        shards.sort_unstable();
        shards
    }

    /// The stores of which this gateway holds shards' leases, forgetting that it
    /// holds them and dropping their writers: it writes none of them from here on.
    pub(crate) fn release_leases(&self) -> Vec<String> {
        let mut leases = self.leases.lock().expect("leases lock");
        let mut held: Vec<String> = leases.held.drain().map(|(name, _)| name).collect();
        held.sort_unstable();
        held.dedup();
        leases.until = None;
        self.writers.lock().expect("writers lock").clear();
        held
    }

    fn def(&self, store: &str) -> Result<Def> {
        self.defs
            .lock()
            .expect("defs lock")
            .get(store)
            .cloned()
            .ok_or_else(|| Error::StoreNotFound(store.to_string()))
    }

    /// Becomes the writer of `store`'s `shard`, fencing every earlier one on any
    /// gateway.
    pub(crate) fn open_writer(&self, store: &str, shard: u32) -> Result<u64> {
        let def = self.def(store)?;
        if shard >= def.shards {
            return Err(Error::Invalid(format!(
                "table '{store}' has {} shards, not {}",
                def.shards,
                shard + 1
            )));
        }
        // Shard 0 keeps the id a store of one shard always had. Names hold no
        // `#`, so no other store's shard has the same id.
        let id = match shard {
            0 => format!("{}{store}", self.txn_prefix),
            s => format!("{}{store}#{s}", self.txn_prefix),
        };
        let mut config = self.client.clone();
        config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .set("transaction.timeout.ms", "60000");
        let producer: FutureProducer = config.create().map_err(unavailable)?;
        producer
            .init_transactions(self.timeout)
            .map_err(unavailable)?;
        let writer = Arc::new(Writer {
            epoch: self.epochs.fetch_add(1, Ordering::AcqRel) + 1,
            changelog: def.changelog,
            shard,
            producer,
        });
        // Whatever the writers before it committed is in the local copy before
        // this one reads where to go on from.
        self.transact(store, &writer, Vec::new(), &[], FENCE, Vec::new())
            .map(drop)?;
        self.writers
            .lock()
            .expect("writers lock")
            .insert((store.to_string(), shard), writer.clone());
        tracing::info!(table = %store, shard, epoch = writer.epoch, "this gateway writes the table");
        Ok(writer.epoch)
    }

    /// Commits a batch of `shard` as writer `epoch`: its rows and its mark, one
    /// transaction.
    pub(crate) fn commit(
        &self,
        store: &str,
        shard: u32,
        epoch: u64,
        batch: StateBatch,
        outputs: &[Output],
    ) -> Result<Vec<Written>> {
        let writer = self
            .writers
            .lock()
            .expect("writers lock")
            .get(&(store.to_string(), shard))
            .cloned();
        let writer = match writer {
            Some(w) if w.epoch == epoch => w,
            other => {
                return Err(Error::Fenced {
                    store: store.to_string(),
                    epoch,
                    current: other.map_or(0, |w| w.epoch),
                });
            }
        };
        let copy = self
            .copy(store)?
            .ok_or_else(|| Error::StoreNotFound(store.to_string()))?;
        let mark = Mark {
            offsets: batch.offsets.unwrap_or(copy.offsets),
            skipped: copy.skipped.get(shard as usize).copied().unwrap_or(0) + batch.skipped,
        };
        self.transact(store, &writer, batch.rows, outputs, MARK, json(&mark))
    }

    /// One transaction of `rows`, the records of `outputs` and a last record
    /// (`key`, `value`); answers once the local copy applied it, with where
    /// the outputs' records went.
    fn transact(
        &self,
        store: &str,
        writer: &Writer,
        rows: Vec<(String, Option<Vec<u8>>)>,
        outputs: &[Output],
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<Vec<Written>> {
        let p = &writer.producer;
        p.begin_transaction()
            .map_err(|e| self.failed(store, writer, e))?;
        let mut delivered = Vec::new();
        for (index, (topic, records)) in outputs.iter().enumerate() {
            for r in records {
                let view = sluice_log::RecordView::decode(&r.bytes)
                    .ok_or_else(|| Error::Invalid("a record does not decode".into()))?;
                let out = crate::record::outgoing(&view);
                let mut record = FutureRecord::to(topic)
                    .partition(r.partition as i32)
                    .timestamp(out.timestamp);
                if let Some(k) = out.key {
                    record = record.key(k.as_bytes());
                }
                if let Some(v) = out.value {
                    record = record.payload(v);
                }
                if let Some(h) = out.headers {
                    record = record.headers(h);
                }
                delivered.push((index, self.enqueue(store, writer, record)?));
            }
        }
        for (k, v) in &rows {
            let mut record = FutureRecord::to(&writer.changelog)
                .partition(writer.shard as i32)
                .key(k.as_bytes());
            if let Some(v) = v {
                record = record.payload(v.as_slice());
            }
            self.enqueue(store, writer, record)?;
        }
        let record = FutureRecord::to(&writer.changelog)
            .partition(writer.shard as i32)
            .key(key)
            .payload(value.as_slice());
        let last = self.enqueue(store, writer, record)?;
        // Every record of the batch is on one partition, so once the last is
        // acknowledged all are. The commit's own flush would wait for the
        // delivery reports in 100 ms polls of a queue another thread serves:
        // it gets nothing left to flush.
        let offset = match futures_executor::block_on(last) {
            Ok(Ok(d)) => d.offset,
            Ok(Err((e, _))) => return Err(self.failed(store, writer, e)),
            Err(_) => {
                let _ = writer.producer.abort_transaction(self.timeout);
                return Err(Error::Unavailable("a delivery report was lost".into()));
            }
        };
        let mut written: Vec<Written> = vec![Vec::new(); outputs.len()];
        for (index, d) in delivered {
            match futures_executor::block_on(d) {
                Ok(Ok(d)) => {
                    let ends = &mut written[index];
                    let end = (d.partition as u32, d.offset as u64 + 1);
                    match ends.iter_mut().find(|(p, _)| *p == end.0) {
                        Some(e) => e.1 = e.1.max(end.1),
                        None => ends.push(end),
                    }
                }
                Ok(Err((e, _))) => return Err(self.failed(store, writer, e)),
                Err(_) => {
                    let _ = writer.producer.abort_transaction(self.timeout);
                    return Err(Error::Unavailable("a delivery report was lost".into()));
                }
            }
        }
        let flushed = Instant::now() + self.timeout;
        while p.in_flight_count() > 0 && Instant::now() < flushed {
            std::thread::sleep(Duration::from_micros(200));
        }
        p.commit_transaction(self.timeout)
            .map_err(|e| self.failed(store, writer, e))?;
        self.wait_store(store, writer.shard, offset + 1)?;
        Ok(written)
    }

    fn enqueue<'a>(
        &self,
        store: &str,
        writer: &Writer,
        mut record: FutureRecord<'a, [u8], [u8]>,
    ) -> Result<rdkafka::producer::DeliveryFuture> {
        loop {
            match writer.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(self.failed(store, writer, e)),
            }
        }
    }

    /// What a failed transaction means: fenced (another writer opened; this one
    /// is done) or not written (aborted; the caller may try again).
    fn failed(&self, store: &str, writer: &Writer, e: KafkaError) -> Error {
        let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal())
            || matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
            );
        if fatal {
            let mut writers = self.writers.lock().expect("writers lock");
            let shard = (store.to_string(), writer.shard);
            if writers.get(&shard).is_some_and(|w| w.epoch == writer.epoch) {
                writers.remove(&shard);
            }
            return Error::Fenced {
                store: store.to_string(),
                epoch: writer.epoch,
                current: writer.epoch + 1,
            };
        }
        let _ = writer.producer.abort_transaction(self.timeout);
        unavailable(e)
    }

    fn copy(&self, store: &str) -> Result<Option<Copy>> {
        let txn = self.db.begin_read()?;
        let copies = txn.open_table(COPIES)?;
        Ok(read_copy(copies.get(store)?))
    }

    pub(crate) fn read(&self, store: &str, keys: &[&str], partitions: u32) -> Result<StateRead> {
        let txn = self.db.begin_read()?;
        let rows = txn.open_table(ROWS)?;
        let mut out = StateRead::default();
        for k in keys {
            out.rows
                .push(rows.get((store, *k))?.map(|v| v.value().to_vec()));
        }
        let offsets = read_copy(txn.open_table(COPIES)?.get(store)?)
            .map(|c| c.offsets)
            .unwrap_or_default();
        out.offsets = (0..partitions as usize)
            .map(|p| offsets.get(p).copied().unwrap_or(0))
            .collect();
        Ok(out)
    }

    pub(crate) fn scan(
        &self,
        store: &str,
        from: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read()?;
        sluice_log::scan_rows(&txn.open_table(ROWS)?, store, from, visit)
    }

    pub(crate) fn stats(&self, store: &str) -> Result<StoreStats> {
        Ok(self
            .copy(store)?
            .map_or_else(StoreStats::default, |c| StoreStats {
                rows: c.rows,
                skipped: c.skipped.iter().sum(),
            }))
    }

    pub(crate) fn subscribe(&self, hook: StateHook) {
        self.hooks.write().expect("hooks lock").push(hook);
    }

    /// Applies one round of records to the local copy, in one redb transaction.
    fn apply(
        &self,
        messages: &[OwnedMessage],
        assigned: &mut HashMap<String, String>,
    ) -> Result<bool> {
        let mut changed: HashMap<String, Vec<String>> = HashMap::new();
        let mut reassign = false;
        let mut defs_next = None;
        let mut copies_seen: HashMap<String, Option<Copy>> = HashMap::new();
        let txn = self.db.begin_write()?;
        {
            let mut rows = txn.open_table(ROWS)?;
            let mut copies = txn.open_table(COPIES)?;
            let mut defs = self.defs.lock().expect("defs lock");
            for m in messages {
                if m.topic() == self.defs_topic {
                    defs_next = Some(m.offset() + 1);
                    let Some(name) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    let def = match m.payload().map(serde_json::from_slice::<Def>) {
                        Some(Ok(d)) => Some(d),
                        Some(Err(_)) => continue,
                        None => None,
                    };
                    let old = match copies_seen.remove(name) {
                        Some(c) => c,
                        None => read_copy(copies.get(name)?),
                    };
                    let copy = match &def {
                        Some(d) if old.as_ref().is_some_and(|c| c.changelog == d.changelog) => old,
                        Some(d) => {
                            rows.retain_in((name, "")..(name, KEY_END), |_, _| false)?;
                            Some(Copy::new(d))
                        }
                        None => {
                            rows.retain_in((name, "")..(name, KEY_END), |_, _| false)?;
                            None
                        }
                    };
                    if let Some(old) = defs.remove(name) {
                        assigned.remove(&old.changelog);
                    }
                    if let Some(d) = def {
                        assigned.insert(d.changelog.clone(), name.to_string());
                        defs.insert(name.to_string(), d);
                    }
                    changed.entry(name.to_string()).or_default();
                    copies_seen.insert(name.to_string(), copy);
                    reassign = true;
                } else if let Some(store) = assigned.get(m.topic()) {
                    let entry = match copies_seen.get_mut(store.as_str()) {
                        Some(c) => c,
                        None => {
                            let c = read_copy(copies.get(store.as_str())?);
                            copies_seen.entry(store.clone()).or_insert(c)
                        }
                    };
                    let Some(copy) = entry.as_mut() else {
                        continue;
                    };
                    let shard = m.partition() as usize;
                    let shards = copy.shards() as usize;
                    if copy.changelog != m.topic()
                        || copy.next.get(shard).is_none_or(|next| m.offset() < *next)
                    {
                        continue;
                    }
                    copy.next[shard] = m.offset() + 1;
                    match m.key() {
                        Some(MARK) => {
                            if let Some(Ok(mark)) = m.payload().map(serde_json::from_slice::<Mark>)
                            {
                                if copy.offsets.len() < mark.offsets.len() {
                                    copy.offsets.resize(mark.offsets.len(), 0);
                                }
                                for (p, o) in mark.offsets.iter().enumerate() {
                                    if p % shards == shard {
                                        copy.offsets[p] = *o;
                                    }
                                }
                                copy.skipped[shard] = mark.skipped;
                            }
                        }
                        Some(FENCE) | None => {}
                        Some(k) => {
                            let Ok(key) = std::str::from_utf8(k) else {
                                continue;
                            };
                            let s = store.as_str();
                            // A row of several shards counts once, whichever
                            // shards hold a part of it.
                            let parts = |rows: &redb::Table<(&str, &str), &[u8]>| {
                                if shards > 1 {
                                    other_parts(rows, s, key)
                                } else {
                                    Ok(false)
                                }
                            };
                            match m.payload() {
                                Some(v) => {
                                    if rows.insert((s, key), v)?.is_none() && !parts(&rows)? {
                                        copy.rows += 1;
                                    }
                                }
                                None => {
                                    if rows.remove((s, key))?.is_some() && !parts(&rows)? {
                                        copy.rows = copy.rows.saturating_sub(1);
                                    }
                                }
                            }
                            changed
                                .entry(store.clone())
                                .or_default()
                                .push(key.to_string());
                        }
                    }
                }
            }
            for (name, copy) in &copies_seen {
                match copy {
                    Some(c) => {
                        copies.insert(name.as_str(), json(c).as_slice())?;
                    }
                    None => {
                        copies.remove(name.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        {
            let mut seen = self.seen.0.lock().expect("seen lock");
            if let Some(n) = defs_next {
                seen.defs = n;
            }
            for (name, copy) in &copies_seen {
                match copy {
                    Some(c) => seen.stores.insert(name.clone(), c.next.clone()),
                    None => seen.stores.remove(name),
                };
            }
            self.seen.1.notify_all();
        }
        let hooks = self.hooks.read().expect("hooks lock").clone();
        for (name, keys) in &changed {
            for hook in &hooks {
                hook(name, keys);
            }
        }
        Ok(reassign)
    }

    /// Where the follower reads from: the definitions topic and every changelog,
    /// each from the next offset the local copy has not applied.
    fn assignment(
        &self,
        defs_next: i64,
        assigned: &HashMap<String, String>,
    ) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.defs_topic, 0, Offset::Offset(defs_next))
            .map_err(unavailable)?;
        for (changelog, store) in assigned {
            let copy = self.copy(store)?;
            let shards = self.def(store).map_or(1, |d| d.shards);
            for shard in 0..shards {
                let next = copy
                    .as_ref()
                    .and_then(|c| c.next.get(shard as usize).copied())
                    .unwrap_or(0);
                tpl.add_partition_offset(changelog, shard as i32, Offset::Offset(next))
                    .map_err(unavailable)?;
            }
        }
        Ok(tpl)
    }
}

/// Whether `store` holds a part of row `key`'s row other than `key` itself
/// (see [`sluice_log::shard_key`]).
fn other_parts(rows: &redb::Table<(&str, &str), &[u8]>, store: &str, key: &str) -> Result<bool> {
    let Some((base, _)) = sluice_log::split_shard_key(key) else {
        return Ok(false);
    };
    let from = format!("{base}{}", sluice_log::SHARD_SEP);
    let to = format!("{from}{KEY_END}");
    for item in rows.range((store, from.as_str())..(store, to.as_str()))? {
        let (k, _) = item?;
        let k = k.value().1;
        if k != key && sluice_log::split_shard_key(k).is_some_and(|(b, _)| b == base) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The follower: reads definitions and changelogs into the local copy until the
/// engine is gone.
fn follow(weak: Weak<States>, consumer: BaseConsumer) {
    let mut assigned: HashMap<String, String> = HashMap::new();
    let mut reassign = true;
    loop {
        let Some(states) = weak.upgrade() else {
            return;
        };
        if states.stop.load(Ordering::Acquire) {
            return;
        }
        if reassign {
            let defs_next = states.seen.0.lock().expect("seen lock").defs;
            match states.assignment(defs_next, &assigned) {
                Ok(tpl) => match consumer.assign(&tpl) {
                    Ok(()) => reassign = false,
                    Err(e) => tracing::warn!(error = %e, "following table changelogs"),
                },
                Err(e) => tracing::warn!(error = %e, "following table changelogs"),
            }
        }
        let mut messages = Vec::new();
        let mut wait = Duration::from_millis(100);
        while messages.len() < APPLY_BATCH {
            match consumer.poll(wait) {
                Some(Ok(m)) => messages.push(m.detach()),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "following table changelogs");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        if messages.is_empty() {
            continue;
        }
        match states.apply(&messages, &mut assigned) {
            Ok(changed) => reassign |= changed,
            Err(e) => {
                // Not applied: read the same records again.
                tracing::warn!(error = %e, "applying table changelogs");
                reassign = true;
                drop(states);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
