//! State stores: derived state (a table's rows) kept in the log's file together
//! with the source offsets it reflects, written exactly once.
//!
//! A store has a name, an opaque definition (the table engine's JSON), one row per
//! key, the next source offset to apply per partition, and two counters (rows, and
//! skipped records). Every [`StateBatch`] commits its rows, its offsets and its
//! counters in one commit round of the log, so a crash never leaves rows that run
//! ahead of, or behind, the offsets they reflect; and because a backup snapshots the
//! whole file, rows and the records they came from are always copied together.
//!
//! **Writers are fenced**: [`Log::open_writer`] durably moves the store's writer
//! epoch forward and returns it; a batch that names an older epoch is refused with
//! [`Error::Fenced`] and writes nothing. Two engines over one store can therefore
//! never both apply the same records.
//!
//! The redb tables keep the names they had when the table engine wrote them
//! directly (`table_defs`, `table_rows`, `table_offsets`, `table_stats`), so data
//! directories from before the seam open unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::Reply;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::schema::META;

/// Definitions: store name → definition bytes.
const DEFS: TableDefinition<&str, &[u8]> = TableDefinition::new("table_defs");
/// Rows: (store, key) → row bytes.
const ROWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("table_rows");
/// Applied source offsets: (store, partition) → next offset to apply.
const OFFSETS: TableDefinition<(&str, u32), u64> = TableDefinition::new("table_offsets");
/// Counters: store → (rows, skipped records).
const STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("table_stats");

/// The end of a store's key range: above every key made of valid characters.
pub const KEY_END: &str = "\u{10FFFF}\u{10FFFF}";

/// A store's rows from key `from` on, in key order, until `visit` says stop, from
/// a redb table of `(store, key)` → row: the embedded file's, or an engine's
/// local copy of its stores.
pub fn scan_rows(
    rows: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    store: &str,
    from: &str,
    visit: &mut dyn FnMut(&str, &[u8]) -> bool,
) -> Result<()> {
    for item in rows.range((store, from)..(store, KEY_END))? {
        let (k, v) = item?;
        if !visit(k.value().1, v.value()) {
            break;
        }
    }
    Ok(())
}

/// Before the name of every store that keeps a sink (`sluice-sinks`); the
/// table engine passes such stores over, and no table is named so.
pub const SINK_STORES: &str = "_sink.";

/// Before the name of every store that keeps a processor (the derived streams
/// of `sluice-tables`); the table engine passes such stores over.
pub const PROCESSOR_STORES: &str = "_proc.";

/// Before the name of every store that keeps an event source's definition (the
/// gateway's webhook sources); the table engine passes such stores over.
pub const SOURCE_STORES: &str = "_source.";

/// Between a row's key and its shard in the row keys of a store of several
/// shards. A row such a store holds is kept once per shard that wrote it, as
/// `key` NUL `shard`, and its readers merge the parts; keys holding a NUL are
/// not kept in such a store. A store of one shard keeps its keys as they are.
pub const SHARD_SEP: char = '\0';

/// The row key under which `shard` keeps its part of row `key`.
pub fn shard_key(key: &str, shard: u32) -> String {
    format!("{key}{SHARD_SEP}{shard}")
}

/// The row key and shard of a part's key (see [`shard_key`]).
pub fn split_shard_key(stored: &str) -> Option<(&str, u32)> {
    let (key, shard) = stored.rsplit_once(SHARD_SEP)?;
    Some((key, shard.parse().ok()?))
}

/// The `meta` key naming the topic (by id) whose retention a store's offsets
/// hold back.
fn hold_key(store: &str) -> String {
    format!("hold/{store}")
}

/// Whether `epoch` is `store`'s writer now (a refusal says why not).
pub(crate) fn check_writer(txn: &WriteTransaction, store: &str, epoch: u64) -> Result<Result<()>> {
    let current = read_epoch(txn, store)?;
    if current != epoch {
        return Ok(Err(Error::Fenced {
            store: store.to_string(),
            epoch,
            current,
        }));
    }
    if txn.open_table(STATS)?.get(store)?.is_none() {
        return Ok(Err(Error::StoreNotFound(store.to_string())));
    }
    Ok(Ok(()))
}

/// Writes a batch's rows, offsets and counters into `txn` (its writer
/// checked with [`check_writer`]).
pub(crate) fn apply_batch(txn: &WriteTransaction, store: &str, batch: &StateBatch) -> Result<()> {
    let mut stats = txn.open_table(STATS)?;
    let (mut count, mut skipped) = stats
        .get(store)?
        .map(|v| v.value())
        .ok_or_else(|| Error::StoreNotFound(store.to_string()))?;
    skipped += batch.skipped;
    let mut rows = txn.open_table(ROWS)?;
    for (key, value) in &batch.rows {
        match value {
            Some(v) => {
                if rows.insert((store, key.as_str()), v.as_slice())?.is_none() {
                    count += 1;
                }
            }
            None => {
                if rows.remove((store, key.as_str()))?.is_some() {
                    count -= 1;
                }
            }
        }
    }
    if let Some(offsets) = &batch.offsets {
        let mut o = txn.open_table(OFFSETS)?;
        for (p, a) in offsets.iter().enumerate() {
            o.insert((store, p as u32), *a)?;
        }
    }
    stats.insert(store, (count, skipped))?;
    Ok(())
}

/// The `meta` key holding a store's writer epoch.
fn writer_key(store: &str) -> String {
    format!("writer/{store}")
}

/// One batch of derived state: rows changed, the source offsets reached, and how
/// many records were skipped on the way.
#[derive(Debug, Clone, Default)]
pub struct StateBatch {
    /// Rows to write (`Some`) or delete (`None`), by key.
    pub rows: Vec<(String, Option<Vec<u8>>)>,
    /// The next source offset to apply, per partition, after this batch; `None`
    /// leaves the offsets as they are.
    pub offsets: Option<Vec<u64>>,
    /// Records skipped by this batch, added to the store's counter.
    pub skipped: u64,
    /// Records appended in the same commit (a processor's outputs): readable
    /// once the batch is durable, and never without it. Their dedupe keys are
    /// not used.
    pub appends: Vec<crate::AppendRequest>,
}

/// A store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Rows held.
    pub rows: u64,
    /// Source records skipped so far.
    pub skipped: u64,
}

/// Rows of one store read in one consistent view, with the offsets they reflect.
#[derive(Debug, Clone, Default)]
pub struct StateRead {
    /// The rows asked for, in the order asked (`None`: no such row).
    pub rows: Vec<Option<Vec<u8>>>,
    /// The next source offset to apply, per partition, as of the same view.
    pub offsets: Vec<u64>,
}

/// Creates the store tables if the file has none yet.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(DEFS)?;
    txn.open_table(ROWS)?;
    txn.open_table(OFFSETS)?;
    txn.open_table(STATS)?;
    Ok(())
}

fn read_epoch(txn: &WriteTransaction, store: &str) -> Result<u64> {
    let meta = txn.open_table(META)?;
    let v = meta.get(writer_key(store).as_str())?;
    Ok(
        v.map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
            .unwrap_or(0),
    )
}

impl Log {
    /// Creates a store with its definition and starting offsets; refused with
    /// [`Error::StoreExists`] if one of that name exists.
    pub fn create_store(
        &self,
        name: &str,
        definition: Vec<u8>,
        offsets: Vec<u64>,
        reply: Reply<()>,
    ) {
        let name = name.to_string();
        self.write(
            Box::new(move |txn| {
                let n = name.as_str();
                let mut defs = txn.open_table(DEFS)?;
                if defs.get(n)?.is_some() {
                    return Ok(Err(Error::StoreExists(name.clone())));
                }
                defs.insert(n, definition.as_slice())?;
                let mut o = txn.open_table(OFFSETS)?;
                for (p, a) in offsets.iter().enumerate() {
                    o.insert((n, p as u32), *a)?;
                }
                txn.open_table(STATS)?.insert(n, (0, 0))?;
                Ok(Ok(()))
            }),
            reply,
        );
    }

    /// Replaces a store's definition, keeping its rows, offsets and counters.
    pub fn update_store(&self, name: &str, definition: Vec<u8>, reply: Reply<()>) {
        let name = name.to_string();
        self.write(
            Box::new(move |txn| {
                let n = name.as_str();
                let mut defs = txn.open_table(DEFS)?;
                if defs.get(n)?.is_none() {
                    return Ok(Err(Error::StoreNotFound(name.clone())));
                }
                defs.insert(n, definition.as_slice())?;
                Ok(Ok(()))
            }),
            reply,
        );
    }

    /// Makes `store`'s offsets hold back time-based retention of the topic of
    /// id `topic` (`None`: no longer): records at or above a partition's
    /// offset in the store are not deleted for their age (a size limit still
    /// deletes them). Durable, so the hold is there from the first moment a
    /// restarted log runs retention.
    pub fn hold_retention(&self, store: &str, topic: Option<u64>, reply: Reply<()>) {
        let key = hold_key(store);
        self.write(
            Box::new(move |txn| {
                let mut meta = txn.open_table(META)?;
                match topic {
                    Some(id) => {
                        meta.insert(key.as_str(), id.to_le_bytes().as_slice())?;
                    }
                    None => {
                        meta.remove(key.as_str())?;
                    }
                }
                Ok(Ok(()))
            }),
            reply,
        );
    }

    /// Per partition, the lowest offset a store holding back `topic`'s
    /// retention has not passed; `None` when no store holds it.
    pub(crate) fn retention_floor(&self, topic: u64, partitions: u32) -> Result<Option<Vec<u64>>> {
        let txn = self.read_txn()?;
        let meta = txn.open_table(META)?;
        let offsets = txn.open_table(OFFSETS)?;
        let mut floor: Option<Vec<u64>> = None;
        for item in meta.range("hold/".."hold0")? {
            let (k, v) = item?;
            let held = <[u8; 8]>::try_from(v.value()).ok().map(u64::from_le_bytes);
            if held != Some(topic) {
                continue;
            }
            let store = &k.value()["hold/".len()..];
            let f = floor.get_or_insert_with(|| vec![u64::MAX; partitions as usize]);
            for (p, lowest) in f.iter_mut().enumerate() {
                let at = offsets.get((store, p as u32))?.map_or(0, |v| v.value());
                *lowest = (*lowest).min(at);
            }
        }
        Ok(floor)
    }

    /// Deletes a store: its definition, rows, offsets and counters. Its writer
    /// epoch stays, so a writer of a store re-created under the name stays fenced.
    pub fn drop_store(&self, name: &str, reply: Reply<()>) {
        let name = name.to_string();
        self.write(
            Box::new(move |txn| {
                let n = name.as_str();
                txn.open_table(DEFS)?.remove(n)?;
                txn.open_table(STATS)?.remove(n)?;
                txn.open_table(META)?.remove(hold_key(n).as_str())?;
                txn.open_table(ROWS)?
                    .retain_in((n, "")..(n, KEY_END), |_, _| false)?;
                txn.open_table(OFFSETS)?
                    .retain_in((n, 0u32)..=(n, u32::MAX), |_, _| false)?;
                Ok(Ok(()))
            }),
            reply,
        );
    }

    /// Every store with its definition, by name.
    pub fn stores(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.read_txn()?;
        let defs = match txn.open_table(DEFS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in defs.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Becomes the one writer of `store`: durably moves its writer epoch past every
    /// earlier one and returns it. Batches of older epochs are refused from then on.
    pub fn open_writer(&self, store: &str) -> Result<u64> {
        let store = store.to_string();
        let epoch = Arc::new(AtomicU64::new(0));
        let seen = epoch.clone();
        crate::log::blocking(|r| {
            self.write(
                Box::new(move |txn| {
                    let next = read_epoch(txn, &store)? + 1;
                    txn.open_table(META)?
                        .insert(writer_key(&store).as_str(), next.to_le_bytes().as_slice())?;
                    seen.store(next, Ordering::Release);
                    Ok(Ok(()))
                }),
                r,
            )
        })?;
        Ok(epoch.load(Ordering::Acquire))
    }

    /// Commits one batch of `store` as its writer `epoch`, atomically and durably;
    /// refused with [`Error::Fenced`] if a newer writer was opened, and with
    /// [`Error::StoreNotFound`] if the store is gone.
    pub fn commit_state(&self, store: &str, epoch: u64, batch: StateBatch, reply: Reply<()>) {
        self.send(crate::writer::Command::CommitState {
            store: store.to_string(),
            epoch,
            batch,
            reply,
        });
    }

    /// Rows of `store` by key, and its offsets (for `partitions` partitions), from
    /// one consistent view.
    pub fn read_state(&self, store: &str, keys: &[&str], partitions: u32) -> Result<StateRead> {
        let txn = self.read_txn()?;
        let rows = txn.open_table(ROWS)?;
        let mut out = StateRead::default();
        for k in keys {
            out.rows
                .push(rows.get((store, *k))?.map(|v| v.value().to_vec()));
        }
        let offsets = txn.open_table(OFFSETS)?;
        for p in 0..partitions {
            out.offsets
                .push(offsets.get((store, p))?.map(|v| v.value()).unwrap_or(0));
        }
        Ok(out)
    }

    /// Visits the rows of `store` from key `from` (inclusive) in key order until
    /// `visit` says stop.
    pub fn scan_state(
        &self,
        store: &str,
        from: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<()> {
        let txn = self.read_txn()?;
        scan_rows(&txn.open_table(ROWS)?, store, from, visit)
    }

    /// A store's counters.
    pub fn state_stats(&self, store: &str) -> Result<StoreStats> {
        let txn = self.read_txn()?;
        let stats = txn.open_table(STATS)?;
        let (rows, skipped) = stats.get(store)?.map(|v| v.value()).unwrap_or((0, 0));
        Ok(StoreStats { rows, skipped })
    }
}
