//! The topic catalog: `_sluice.topics`, a compacted topic of one partition whose
//! records map a topic's name to the id, creation time and settings (retention,
//! compaction) Sluice gave it (a tombstone when it was deleted). Every gateway reads it from the start when it
//! opens and follows it after, so all of them give a topic the same id, and a topic
//! deleted and made again under its name gets a new one. A topic made by another
//! client, without a catalog record, gets an id derived from its name.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_log::{Error, Result};

/// The catalog topic's name (after the gateway's topic prefix).
pub(crate) const TOPIC: &str = "_sluice.topics";

/// What the catalog says of one topic.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: u64,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<sluice_log::Compaction>,
}

impl Entry {
    /// The entry of a topic the catalog does not name.
    pub(crate) fn foreign(name: &str) -> Entry {
        Entry {
            id: foreign_id(name),
            created_ms: 0,
            retention_ms: None,
            retention_bytes: None,
            compaction: None,
        }
    }

    /// The topic's settings, with its partition count from the cluster.
    pub(crate) fn config(&self, partitions: u32) -> sluice_log::TopicConfig {
        sluice_log::TopicConfig {
            partitions,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            compaction: self.compaction,
        }
    }
}

/// The id of a topic the catalog does not name: a hash of its name, with the top
/// bit set so it never meets an id Sluice gave.
fn foreign_id(name: &str) -> u64 {
    let mut h = crate::engine::Fnv::new();
    h.write(name.as_bytes());
    h.0 | (1 << 63)
}

/// Applies one catalog record.
pub(crate) fn apply(entries: &mut HashMap<String, Entry>, key: &[u8], value: Option<&[u8]>) {
    let name = String::from_utf8_lossy(key).into_owned();
    match value.map(serde_json::from_slice::<Entry>) {
        Some(Ok(e)) => {
            entries.insert(name, e);
        }
        Some(Err(_)) => {}
        None => {
            entries.remove(&name);
        }
    }
}

/// Reads the whole catalog (Kafka topic `topic`) as it stands; returns it with
/// the offset to follow it from.
pub(crate) fn load(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<(HashMap<String, Entry>, i64)> {
    let mut entries = HashMap::new();
    let next = read_all(consumer, topic, timeout, &mut |key, value| {
        apply(&mut entries, key, value)
    })?;
    Ok((entries, next))
}

/// Called with each record's key and value (none for a tombstone).
pub(crate) type Visit<'a> = dyn FnMut(&[u8], Option<&[u8]>) + 'a;

/// Reads partition 0 of `topic` from its start to its end as it stands now,
/// handing each keyed record to `visit`; returns the offset to follow it from.
pub(crate) fn read_all(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
    visit: &mut Visit<'_>,
) -> Result<i64> {
    let deadline = std::time::Instant::now() + timeout;
    let (low, high) = crate::engine::patiently(timeout, || {
        consumer
            .fetch_watermarks(topic, 0, timeout)
            .map_err(crate::engine::unavailable)
    })?;
    if high <= low {
        return Ok(high);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(crate::engine::unavailable)?;
    consumer.assign(&tpl).map_err(crate::engine::unavailable)?;
    let mut next = low;
    while next < high {
        if std::time::Instant::now() >= deadline {
            return Err(Error::Storage(format!(
                "reading {topic} stopped at offset {next} of {high}"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(key) = m.key() {
                    visit(key, m.payload());
                }
                next = m.offset() + 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(crate::engine::unavailable(e)),
            None => {}
        }
    }
    let _ = consumer.unassign();
    Ok(next)
}
