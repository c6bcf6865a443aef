//! Response and request bodies of the topics, produce and fetch endpoints.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An RFC 9457 problem: the body of every error response
/// (`Content-Type: application/problem+json`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"type": "/problems#topic_not_found",
    "title": "Not Found", "status": 404, "detail": "topic 'orders' does not exist",
    "code": "topic_not_found"}))]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems#<code>`, the anchor of
    /// the code on the page the server serves at `/problems`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// A stable machine-readable code, e.g. `topic_not_found`, `offset_out_of_range`,
    /// `invalid_record`, `payload_too_large`.
    pub code: String,
    /// With `offset_out_of_range`: the first retained offset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_offset: Option<u64>,
    /// With `offset_out_of_range`: the next offset to be written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end_offset: Option<u64>,
}

/// `POST /v1/topics` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "orders", "partitions": 3, "retention_ms": 604800000}))]
pub struct CreateTopic {
    /// Topic name: `[A-Za-z0-9._-]{1,249}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$", min_length = 1, max_length = 249)]
    pub name: String,
    /// Number of partitions (1 to 4096), fixed for the topic's life. Default 1.
    #[serde(default = "one", deserialize_with = "crate::num::u32")]
    #[schema(minimum = 1, maximum = 4096)]
    pub partitions: u32,
    /// Delete records older than this many milliseconds.
    #[serde(default, deserialize_with = "crate::num::opt_u64")]
    #[schema(minimum = 1)]
    pub retention_ms: Option<u64>,
    /// Delete the oldest records while a partition holds more than this many bytes.
    #[serde(default, deserialize_with = "crate::num::opt_u64")]
    #[schema(minimum = 1)]
    pub retention_bytes: Option<u64>,
    /// `delete` (the default) keeps every record until retention deletes it;
    /// `compact` keeps only the latest record of each key (every record then needs
    /// a key). Retention applies to both.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// Compacted topics: how long a tombstone (a keyed record with a null value)
    /// stays readable before compaction removes it, in milliseconds. Default a day.
    #[serde(default, deserialize_with = "crate::num::opt_u64")]
    #[schema(minimum = 0)]
    pub tombstone_retention_ms: Option<u64>,
}

/// A topic's cleanup policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Keep every record until retention deletes it.
    #[default]
    Delete,
    /// Keep the latest record of each key; offsets never change.
    Compact,
}

fn one() -> u32 {
    1
}

/// One partition's offsets and size.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
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

/// A topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partition_count: u32,
    /// Retention by age, if set.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, if set.
    pub retention_bytes: Option<u64>,
    /// Cleanup policy.
    pub cleanup: Cleanup,
    /// Compacted topics: how long tombstones stay readable, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone_retention_ms: Option<u64>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Retained records over all partitions.
    pub records: u64,
    /// Stored bytes over all partitions.
    pub bytes: u64,
    /// The data directory's epoch; it changes when the store is wiped or replaced.
    pub log_epoch: String,
    /// Per-partition offsets.
    pub partitions: Vec<PartitionInfo>,
}

/// `GET /v1/topics` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    /// All topics, sorted by name.
    pub topics: Vec<Topic>,
}

/// Where one produced record was written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RecordOffset {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// Produce answer: one entry per record, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"offsets": [{"partition": 0, "offset": 41}]}))]
pub struct ProduceResponse {
    /// Offsets in request order.
    pub offsets: Vec<RecordOffset>,
}

/// A record as fetched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FetchedRecord {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch: append time unless the producer set one.
    pub timestamp: u64,
    /// Key, if the record has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Headers, if the record has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// The JSON value (`null` for a tombstone); absent for a binary value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<serde_json::Value>,
    /// A binary value, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

/// One Server-Sent Event of `GET /v1/topics/{topic}/events`, as an SSE parser
/// reads it: the event name, the id, and the record as JSON text in `data`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordEvent {
    /// Always `record`.
    #[schema(pattern = "^record$")]
    pub event: String,
    /// `partition:offset` of the record; send it back as `Last-Event-ID` to resume.
    #[schema(pattern = "^[0-9]+:[0-9]+$")]
    pub id: String,
    /// The record (a `FetchedRecord`) as JSON text.
    pub data: String,
}

/// `GET /v1/topics/{topic}/partitions/{p}/records` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FetchResponse {
    /// Records from the requested offset, in offset order.
    pub records: Vec<FetchedRecord>,
    /// The offset to ask for next.
    pub next_offset: u64,
    /// The partition's end offset: the next offset to be written.
    pub high_watermark: u64,
    /// The partition's first retained offset.
    pub start_offset: u64,
    /// The data directory's epoch.
    pub log_epoch: String,
}

/// A CloudEvent 1.0 in structured mode (`application/cloudevents+json`). Extension
/// attributes (lowercase letters and digits, at most 20) become `ce_<name>` headers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"specversion": "1.0", "id": "e-1", "source": "/shop",
    "type": "order.created", "subject": "c-42", "data": {"amount": 9}}))]
pub struct CloudEvent {
    /// Must be `1.0`.
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    /// Event id; with `source`, the dedupe key.
    #[schema(min_length = 1)]
    pub id: String,
    /// Event source.
    #[schema(min_length = 1)]
    pub source: String,
    /// Event type.
    #[serde(rename = "type")]
    #[schema(min_length = 1)]
    pub type_: String,
    /// The record key; the `id` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Event time (kept as the `ce_time` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Media type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The payload, stored as the record's JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<serde_json::Value>,
    /// A binary payload, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub data_base64: Option<String>,
}

/// `GET /readyz` body while the server takes writes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// Bytes free on the data directory's disk.
    pub disk_free_bytes: u64,
    /// The floor below which appends are refused (`--min-free-disk-mb`).
    pub min_free_disk_bytes: u64,
}
