//! Records made durable by the write-ahead log and not yet written to redb.
//!
//! A group that goes through the write-ahead log writes its record batches and
//! partition rows only there. They are kept here, where reads find them, until
//! about a megabyte of them has gathered (or a durable commit comes first); then
//! the next group writes them all to redb in its transaction. One B-tree update for
//! many groups costs far less than one per group: with 8 partitions, each small
//! group would copy the leaf and branch pages of 8 B-tree paths to add a few
//! hundred bytes to each.
//!
//! Readers take what they need from here before they open a redb read transaction.
//! The writer forgets batches only after the redb commit that holds them, so a
//! move to redb between the two steps hides nothing: what a reader did not find
//! here is in the transaction it opens next.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use crate::wal::Put;

/// A stored batch: its first offset and its bytes.
pub(crate) type HeldBatch = (u64, Arc<Vec<u8>>);

#[derive(Default)]
pub(crate) struct Recent {
    parts: RwLock<HashMap<u64, Pending>>,
}

#[derive(Default)]
struct Pending {
    /// Batches in offset order.
    batches: VecDeque<HeldBatch>,
    /// The partition's row as of the newest put.
    state: Option<(u64, u64, u64)>,
}

impl Recent {
    /// Keeps the record batches and partition rows of an entry just made durable.
    pub(crate) fn add(&self, puts: &[Put]) {
        let mut parts = self.parts.write().expect("recent lock");
        for p in puts {
            match p {
                Put::Record { key, value } => parts
                    .entry((key >> 64) as u64)
                    .or_default()
                    .batches
                    .push_back((*key as u64, value.clone())),
                Put::Partition { key, state } => {
                    parts.entry(*key).or_default().state = Some(*state);
                }
                _ => {}
            }
        }
    }

    /// Everything held, as puts for a durable commit to write, in key order.
    pub(crate) fn puts(&self) -> Vec<Put> {
        let parts = self.parts.read().expect("recent lock");
        let mut keys: Vec<u64> = parts.keys().copied().collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for (pk, p) in keys.into_iter().filter_map(|k| Some((k, parts.get(&k)?))) {
            out.extend(p.batches.iter().map(|(first, value)| Put::Record {
                key: crate::schema::record_key(pk, *first),
                value: value.clone(),
            }));
            if let Some(state) = p.state {
                out.push(Put::Partition { key: pk, state });
            }
        }
        out
    }

    /// Forgets everything: a redb commit now holds it.
    pub(crate) fn clear(&self) {
        self.parts.write().expect("recent lock").clear();
    }

    /// For a read of partition `pk` from offset `from`: the first offset held here
    /// (the records below it are in redb) and the held batches that may hold the
    /// next `max_records` records at or after `from`.
    pub(crate) fn tail(
        &self,
        pk: u64,
        from: u64,
        max_records: usize,
    ) -> Option<(u64, Vec<HeldBatch>)> {
        let parts = self.parts.read().expect("recent lock");
        let batches = &parts.get(&pk)?.batches;
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
