//! The redb tables that make up a data directory's `sluice.redb` file.
//!
//! | table           | key                                   | value                                  |
//! |-----------------|---------------------------------------|----------------------------------------|
//! | `meta`          | name (`epoch`, `next_topic_id`, `format`) | bytes                              |
//! | `topics`        | topic name                            | JSON [`TopicMeta`]                     |
//! | `partitions`    | partition key (`topic_id << 16 \| p`) | `(start_offset, end_offset, bytes)`    |
//! | `records`       | `partition_key << 64 \| first offset` | a batch of records, see [`crate::batch`] |
//! | `dedupe`        | topic id (8 bytes BE) + dedupe key    | created ms (8) + `(partition u32, offset u64)` per record |
//! | `dedupe_expiry` | `(created ms, dedupe row key)`        | `()`                                   |
//! | `purge`         | partition key of a deleted topic      | `()`                                   |
//! | `group_offsets` | `(group, topic id, partition)`        | committed offset: the next to read     |
//!
//! One `u128` key per batch keeps a partition's records contiguous and ordered by
//! offset, so a fetch is one range scan from the requested offset, never a rescan.
//! The `partitions` row is rewritten in every commit that touches the partition, so
//! opening the log reads one row per partition, not one per record.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
pub(crate) const PARTITIONS: TableDefinition<u64, (u64, u64, u64)> =
    TableDefinition::new("partitions");
pub(crate) const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("records");
pub(crate) const DEDUPE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dedupe");
pub(crate) const DEDUPE_EXPIRY: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new("dedupe_expiry");
pub(crate) const PURGE: TableDefinition<u64, ()> = TableDefinition::new("purge");
pub(crate) const GROUP_OFFSETS: TableDefinition<(&str, u64, u32), u64> =
    TableDefinition::new("group_offsets");

/// The `meta` key of the first consumer-group fencing token not yet reserved.
pub(crate) const FENCING_FLOOR: &str = "fencing_floor";

/// How many fencing tokens one reservation covers.
pub(crate) const FENCING_BLOCK: u64 = 1 << 16;

/// Version of the on-disk format written into `meta`.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// The most partitions a topic may have; the partition number fits the low 16 bits
/// of a partition key.
pub const MAX_PARTITIONS: u32 = 4096;

/// A topic's row in the `topics` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub id: u64,
    pub partitions: u32,
    #[serde(default)]
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<crate::topic::Compaction>,
}

pub(crate) fn pkey(topic_id: u64, partition: u32) -> u64 {
    (topic_id << 16) | u64::from(partition)
}

pub(crate) fn record_key(pkey: u64, offset: u64) -> u128 {
    (u128::from(pkey) << 64) | u128::from(offset)
}

/// The partition key and first offset a [`record_key`] was made of.
pub(crate) fn split_record_key(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

pub(crate) fn dedupe_key(topic_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&topic_id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

pub(crate) fn encode_dedupe(created_ms: u64, offsets: &[(u32, u64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + offsets.len() * 12);
    v.extend_from_slice(&created_ms.to_le_bytes());
    for (p, o) in offsets {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&o.to_le_bytes());
    }
    v
}

pub(crate) fn decode_dedupe(v: &[u8]) -> Option<Vec<(u32, u64)>> {
    let rest = v.get(8..)?;
    if rest.len() % 12 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(12)
            .map(|c| {
                let p = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let mut o = [0u8; 8];
                o.copy_from_slice(&c[4..12]);
                (p, u64::from_le_bytes(o))
            })
            .collect(),
    )
}
