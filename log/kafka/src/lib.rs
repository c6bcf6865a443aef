//! Sluice's Apache Kafka engine: the storage seam ([`sluice_log::Backend`]) over a
//! replicated Kafka cluster, for users who outgrow one machine.
//!
//! It owns the mapping of Sluice's topics, records and offsets onto Kafka's: topics
//! are Kafka topics (partitions, replication factor, `min.insync.replicas`,
//! retention and compaction as topic configs), a record is a Kafka record (key,
//! value, timestamp, headers; a binary value is marked by the `sluice-binary`
//! header, a null value is a tombstone), offsets are Kafka's. Appends go through one
//! idempotent producer with `acks=all` and are answered once Kafka acknowledged
//! every record; the partition is the one Sluice chose above the seam (murmur2), so
//! placement is the same as on the embedded engine and for Java clients. Reads use
//! a small pool of `read_committed` consumers that keep their position, so a reader
//! that comes back for the next offset costs no seek. A tail consumer follows every
//! partition's end and tells the seam's subscribers, also of records other gateways
//! wrote. Topic ids (which tell a re-created topic from the old one) and settings
//! live in a compacted catalog topic, `_sluice.topics`, that every gateway reads;
//! dedupe keys in another, `_sluice.dedupe`, so a retry through any gateway is
//! answered with the first offsets (see `dedupe`). A topic prefix, when set, goes
//! before every Kafka topic name, those two included. Requests librdkafka does not
//! offer (partition sizes) are spoken directly with the `kafka-protocol` crate
//! (see `wire`).
//!
//! Consumer groups are Kafka's (KIP-848): each Sluice consumer is a member whose
//! epoch and partitions the group's coordinator keeps, spoken to directly (see
//! `members` and `groups`), so any gateway serves any member's next poll and
//! Kafka's own consumers of a group share it with Sluice's.
//!
//! State stores (the tables) live in compacted changelog topics written in Kafka
//! transactions, and every gateway keeps a local redb copy of each to serve
//! queries from (see `state`). Not offered over Kafka (the seam answers
//! `Unsupported`): snapshots, which are Kafka's own.
//!
//! It depends on `sluice-log` (the seam's types), rdkafka and kafka-protocol, never
//! on HTTP or an async runtime.

mod catalog;
mod dedupe;
mod engine;
mod groups;
pub mod members;
mod read;
mod record;
mod state;
pub mod wire;

pub use crate::engine::{Kafka, KafkaOptions, UNKNOWN_OFFSET};
