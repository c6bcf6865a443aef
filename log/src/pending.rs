//! Records made durable by the write-ahead log and not yet written to redb.
//!
//! These are the *pending batches*: a commit round that goes through the
//! write-ahead log writes its record batches and partition rows only there. They
//! are kept here, where reads find them, until about a megabyte of them has
//! gathered (or a durable commit comes first); then the next round writes them all
//! to redb in its transaction. One B-tree update for many rounds costs far less
//! than one per round: with 8 partitions, each small round would copy the leaf and
//! branch pages of 8 B-tree paths to add a few hundred bytes to each.
//!
//! Readers take what they need from here before they open a redb read transaction.
//! The writer forgets batches only after the redb commit that holds them, so a
//! move to redb between the two steps hides nothing: what a reader did not find
//! here is in the transaction it opens next.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use redb::WriteTransaction;

use crate::error::Result;
use crate::schema::{record_key, split_record_key};
use crate::wal::Put;

/// A stored batch: its first offset and its bytes.
pub(crate) type PendingBatch = (u64, Arc<Vec<u8>>);

#[derive(Default)]
pub(crate) struct PendingBatches {
    held: RwLock<ByPartition>,
}

#[derive(Default)]
struct ByPartition {
    /// By partition key, in key order.
    parts: BTreeMap<u64, PartitionBatches>,
    /// Bytes of all the batches.
    bytes: usize,
}

#[derive(Default)]
struct PartitionBatches {
    /// Batches in offset order.
    batches: VecDeque<PendingBatch>,
    /// The partition's row as of the newest put.
    state: Option<(u64, u64, u64)>,
}

impl PendingBatches {
    /// Keeps the record batches and partition rows of an entry just made durable.
    pub(crate) fn add(&self, puts: &[Put]) {
        let mut held = self.held.write().expect("pending lock");
        for p in puts {
            match p {
                Put::Record { key, value } => {
                    let (pk, first) = split_record_key(*key);
                    held.bytes += value.len();
                    held.parts
                        .entry(pk)
                        .or_default()
                        .batches
                        .push_back((first, value.clone()));
                }
                Put::Partition { key, state } => {
                    held.parts.entry(*key).or_default().state = Some(*state);
                }
                _ => {}
            }
        }
    }

    /// Bytes of the batches held.
    pub(crate) fn bytes(&self) -> usize {
        self.held.read().expect("pending lock").bytes
    }

    /// Writes everything held into `txn`, in key order. It stays held until
    /// [`PendingBatches::clear`], once `txn` is committed.
    pub(crate) fn write_into(&self, txn: &WriteTransaction) -> Result<()> {
        let puts: Vec<Put> = {
            let held = self.held.read().expect("pending lock");
            held.parts
                .iter()
                .flat_map(|(&pk, p)| {
                    let records = p.batches.iter().map(move |(first, value)| Put::Record {
                        key: record_key(pk, *first),
                        value: value.clone(),
                    });
                    let row = p.state.map(|state| Put::Partition { key: pk, state });
                    records.chain(row)
                })
                .collect()
        };
        crate::wal::replay(txn, &puts)
    }

    /// Forgets everything: a redb commit now holds it.
    pub(crate) fn clear(&self) {
        *self.held.write().expect("pending lock") = ByPartition::default();
    }

    /// For a read of partition `pk` from offset `from`: the first offset held here
    /// (the records below it are in redb) and the held batches that may hold the
    /// next `max_records` records at or after `from`.
    pub(crate) fn batches_from(
        &self,
        pk: u64,
        from: u64,
        max_records: usize,
    ) -> Option<(u64, Vec<PendingBatch>)> {
        let held = self.held.read().expect("pending lock");
        let batches = &held.parts.get(&pk)?.batches;
        let first = batches.front()?.0;
        // The batch holding `from`: the last one starting at or below it.
        let at = batches
            .partition_point(|(b, _)| *b <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        let mut records = 0usize;
        for (base, bytes) in batches.range(at..) {
            out.push((*base, bytes.clone()));
            let len = crate::batch::count(bytes) as u64;
            records += (base + len).saturating_sub(from.max(*base)) as usize;
            if records >= max_records {
                break;
            }
        }
        Some((first, out))
    }
}
