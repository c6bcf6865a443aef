//! Sink bodies: the definition of a sink (a topic pushed to an HTTP endpoint), its
//! status, and its recent delivery attempts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A sink: a topic's records pushed to an HTTP endpoint, at least once, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "orders-to-erp", "source": {"topic": "orders"},
    "url": "https://erp.example.com/hooks/orders", "ordering": "key", "format": "record"}))]
pub struct SinkDefinition {
    /// Sink name: `[A-Za-z0-9._-]{1,200}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,200}$")]
    pub name: String,
    /// What is pushed: the records of a topic (`{"topic": ...}`) or the row
    /// changes of a table (`{"table": ...}`).
    pub source: SinkSource,
    /// The endpoint: `http://` or `https://`. Its address must be allowed by the
    /// gateway's `--sink-allow-nets` when it is loopback, private or link-local.
    pub url: String,
    /// A SQL boolean expression over the record's JSON value (as for tables):
    /// records that do not match are passed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `key` (default): a key's records in offset order, different keys in
    /// parallel; `partition`: one request at a time per partition; `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<SinkOrdering>,
    /// The body: `record` (default; a JSON envelope with topic, partition,
    /// offset, key, value, headers, timestamp), `value` (the record's value as
    /// it was produced), `cloudevents` (structured mode) or `cloudevents-binary`.
    /// A batch of several records is NDJSON (`record`, `value`) or a JSON array
    /// (`cloudevents`, as `application/cloudevents-batch+json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SinkFormat>,
    /// Records per request; one by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<SinkBatch>,
    /// `{"scheme": "standard-webhooks"}` (default) signs each request;
    /// `{"scheme": "none"}` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SinkSigning>,
    /// Headers added to every request (for example an API key of the receiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// How long to wait for an answer, in milliseconds (default 10000, at most
    /// 120000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub timeout_ms: Option<u64>,
    /// Limits on the requests made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<SinkRate>,
    /// How failures are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<SinkRetry>,
    /// Where delivery starts: `latest` (default), `earliest`, `{"offset": n}` (in
    /// every partition) or `{"timestamp": ms}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<SinkStart>,
}

/// What a sink pushes: one of `topic` and `table`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkSource {
    /// The topic whose records are pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The table whose row changes are pushed: for each record of its source
    /// topic that changes a row, once the table applied it, the value
    /// `{"table", "key", "row"}` (`row` null when deleted), keyed and ordered
    /// by the row's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// How a sink orders its requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkOrdering {
    Key,
    Partition,
    None,
}

/// A sink's request body.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SinkFormat {
    Record,
    Value,
    Cloudevents,
    CloudeventsBinary,
}

/// Records per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkBatch {
    /// Records per request, at most (default 1, at most 10000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub max_records: Option<u32>,
    /// Bytes of records per request, about (default 1 MiB, at most 16 MiB).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub max_bytes: Option<u64>,
    /// How long a request that is not full waits for more records, in
    /// milliseconds (default 0).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub linger_ms: Option<u64>,
}

/// How requests are signed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkSigning {
    /// `standard-webhooks` or `none`.
    pub scheme: String,
}

/// Limits on a sink's requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkRate {
    /// Requests per second, at most (default: no limit).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub max_rps: Option<u32>,
    /// Requests in flight at once, at most (default 8, at most 256).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub max_in_flight: Option<u32>,
}

/// How a sink retries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkRetry {
    /// Attempts of a record the receiver refuses (400, 413, 415, 422) before it
    /// goes to the dead-letter topic (default 3).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub record_attempts: Option<u32>,
    /// The first wait after a failure, in milliseconds (default 1000); it doubles
    /// with each failure in a row, with ±20% jitter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub initial_ms: Option<u64>,
    /// The longest wait, in milliseconds (default 600000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub max_ms: Option<u64>,
    /// A record still undelivered this long after its first failure goes to the
    /// dead-letter topic, in milliseconds (default 259200000: 72 hours).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub max_age_ms: Option<u64>,
}

/// Where a sink starts, or is replayed from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum SinkStart {
    /// `earliest` or `latest`.
    Named(SinkStartName),
    /// `{"offset": n}`: from offset `n` of every partition (or its start).
    Offset {
        #[serde(deserialize_with = "crate::num::u64")]
        offset: u64,
    },
    /// `{"timestamp": ms}`: from the first record at or after that time.
    Timestamp {
        #[serde(deserialize_with = "crate::num::u64")]
        timestamp: u64,
    },
}

/// `earliest` or `latest`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkStartName {
    Earliest,
    Latest,
}

/// Where a replay starts: `{"start": "earliest" | {"offset": n} | {"timestamp": ms}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkReset {
    pub start: SinkStart,
}

/// A sink's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// Delivering.
    Running,
    /// Paused by an operator.
    Paused,
    /// The endpoint failed; waiting before the next attempt.
    BackingOff,
    /// The endpoint has failed for a while (five times in a row or more).
    Failing,
    /// The endpoint answered 410 Gone: nothing is sent until `resume`.
    Disabled,
}

/// One source partition of a sink.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkPartition {
    pub partition: u32,
    /// The lowest offset not yet delivered (or dead-lettered).
    pub cursor: u64,
    /// The partition's end offset.
    pub end_offset: u64,
    /// Records from the cursor to the end.
    pub lag_records: u64,
    /// Age of the record at the cursor, in seconds (0 when caught up); known on
    /// the gateway delivering the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Over a Kafka cluster: whether this gateway delivers this partition now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_here: Option<bool>,
}

/// The last failure of a sink.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkError {
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// The HTTP status, when the endpoint answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
}

/// A sink's definition and status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkInfo {
    pub name: String,
    pub definition: SinkDefinition,
    pub state: SinkState,
    /// Why it is disabled, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Where records the endpoint refuses go.
    pub dead_letter_topic: String,
    pub created_ms: u64,
    pub lag_records: u64,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Records that retention deleted before the sink delivered them.
    pub skipped_by_retention: u64,
    pub partitions: Vec<SinkPartition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SinkError>,
    /// When the next attempt is due, in milliseconds since the epoch, while the
    /// sink backs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
    /// The signing secret (`whsec_...`): only in the answers of the create and
    /// rotate calls, never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Every sink.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkList {
    pub sinks: Vec<SinkInfo>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkAttempt {
    /// When it started, in milliseconds since the epoch.
    pub at_ms: u64,
    /// The `webhook-id` sent.
    pub id: String,
    pub partition: u32,
    /// The first and last offset it carried.
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u32,
    /// Which attempt of its records this was (1 for the first).
    pub attempt: u32,
    /// The HTTP status, when the endpoint answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: f64,
    /// The first bytes of the answer.
    pub answer: String,
}

/// A sink's recent attempts on this gateway, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkAttempts {
    pub attempts: Vec<SinkAttempt>,
}

/// The result of a test request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkTestResult {
    /// Whether the endpoint acknowledged it (2xx).
    pub ok: bool,
    pub attempt: SinkAttempt,
}
