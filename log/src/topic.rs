//! A topic's in-memory state: its configuration and, per partition, the offsets and
//! size that the last durable commit left. Readers take these without a transaction;
//! only the writer thread changes them, and only after the commit that made them true.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::murmur2::partition_for_key;
use crate::schema::TopicMeta;

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions, fixed at creation.
    pub partitions: u32,
    /// Records older than this many milliseconds are deleted in the background.
    pub retention_ms: Option<u64>,
    /// Oldest records are deleted while a partition holds more than this many bytes.
    pub retention_bytes: Option<u64>,
    /// Compaction: keep only the latest record of each key. `None` keeps every record
    /// (until retention deletes it).
    pub compaction: Option<Compaction>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            compaction: None,
        }
    }
}

/// How a compacted topic is cleaned: in the background, every record that a later
/// record of the same key supersedes is removed, and a tombstone (a keyed record with
/// a null value) is removed once it is older than `tombstone_retention_ms`, so that
/// readers have that long to see the delete. Offsets never change; a compacted
/// partition simply has offsets with no record. Every record needs a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compaction {
    /// How long a tombstone stays readable, in milliseconds.
    pub tombstone_retention_ms: u64,
}

impl Default for Compaction {
    /// A day, as Kafka's `delete.retention.ms`.
    fn default() -> Self {
        Compaction {
            tombstone_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// One partition's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// Next offset to be written.
    pub end_offset: u64,
    /// Stored bytes of the retained records.
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    pub start: AtomicU64,
    pub end: AtomicU64,
    pub bytes: AtomicU64,
}

impl PartitionState {
    pub(crate) fn load(&self) -> (u64, u64, u64) {
        (
            self.start.load(Ordering::Acquire),
            self.end.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
    pub(crate) fn store(&self, (start, end, bytes): (u64, u64, u64)) {
        self.start.store(start, Ordering::Release);
        self.bytes.store(bytes, Ordering::Release);
        self.end.store(end, Ordering::Release);
    }
}

/// A topic. Handles stay valid after the topic is deleted, but the log refuses
/// appends to a deleted topic (a re-created topic of the same name has a new id).
#[derive(Debug)]
pub struct Topic {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) config: TopicConfig,
    pub(crate) created_ms: u64,
    pub(crate) parts: Box<[PartitionState]>,
    round_robin: AtomicU32,
}

impl Topic {
    pub(crate) fn new(name: String, meta: &TopicMeta) -> Topic {
        Topic {
            id: meta.id,
            name,
            config: TopicConfig {
                partitions: meta.partitions,
                retention_ms: meta.retention_ms,
                retention_bytes: meta.retention_bytes,
                compaction: meta.compaction,
            },
            created_ms: meta.created_ms,
            parts: (0..meta.partitions)
                .map(|_| PartitionState::default())
                .collect(),
            round_robin: AtomicU32::new(0),
        }
    }

    /// A topic as another engine describes it: its partitions start empty until
    /// [`Topic::publish`] says where they stand.
    pub fn describe(id: u64, name: &str, config: TopicConfig, created_ms: u64) -> Topic {
        Topic {
            id,
            name: name.to_string(),
            parts: (0..config.partitions)
                .map(|_| PartitionState::default())
                .collect(),
            config,
            created_ms,
            round_robin: AtomicU32::new(0),
        }
    }

    /// For engines: records where a partition stands now. The end and start only
    /// move forward (an older answer arriving late changes nothing); `bytes`, when
    /// given, is taken as it is.
    pub fn publish(&self, partition: u32, start: u64, end: u64, bytes: Option<u64>) {
        if let Some(s) = self.parts.get(partition as usize) {
            s.start.fetch_max(start, Ordering::AcqRel);
            if let Some(b) = bytes {
                s.bytes.store(b, Ordering::Release);
            }
            s.end.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// The topic's unique id; never reused, even after deletion.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's settings.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Creation time in milliseconds since the Unix epoch.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    /// Where a record goes: Kafka's murmur2 placement for a key, round-robin without.
    pub fn pick_partition(&self, key: Option<&str>) -> u32 {
        let n = self.config.partitions;
        match key {
            Some(k) => partition_for_key(k.as_bytes(), n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// One partition's committed state, if the partition exists.
    pub fn partition(&self, partition: u32) -> Option<PartitionInfo> {
        let (start, end, bytes) = self.parts.get(partition as usize)?.load();
        Some(PartitionInfo {
            partition,
            start_offset: start,
            end_offset: end,
            bytes,
        })
    }

    /// One partition's committed state, or `PartitionNotFound`.
    pub fn partition_checked(&self, partition: u32) -> crate::Result<PartitionInfo> {
        self.partition(partition)
            .ok_or_else(|| crate::Error::PartitionNotFound {
                topic: self.name.clone(),
                partition,
                partitions: self.partition_count(),
            })
    }

    pub(crate) fn state(&self, partition: u32) -> crate::Result<&PartitionState> {
        self.partition_checked(partition)?;
        Ok(&self.parts[partition as usize])
    }

    /// Every partition's committed state.
    pub fn partitions(&self) -> Vec<PartitionInfo> {
        (0..self.config.partitions)
            .filter_map(|p| self.partition(p))
            .collect()
    }
}
