//! Processor bodies: streams derived from topics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A processor defined in JSON: the stream it writes (its output topic, made
/// with it), the topic it reads, and what it derives from each record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "big_orders", "source": "orders",
    "select": {"id": "id", "customer_id": "customer_id", "cents": "amount * 100"},
    "filter": "amount > 1000", "key": "customer_id"}))]
pub struct ProcessorDefinition {
    /// The processor's name and its output topic's: `[A-Za-z0-9._-]{1,249}`; the
    /// topic must not exist yet.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    pub name: String,
    /// The topic it reads.
    pub source: String,
    /// Output field to SQL expression (`amount * 100`, `'order ' || id`,
    /// `customer.name`); a field `*` keeps the whole input value; a dotted name
    /// builds nested objects. Absent: the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<BTreeMap<String, String>>,
    /// A SQL boolean expression: only records it holds for are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The output key, a SQL expression (`PARTITION BY`); absent: the input key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Partitions of the output topic; absent: as many as the source has.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub partitions: Option<u32>,
    /// A record it cannot derive from (a value that is not JSON):
    /// `dead_letter` (default: to `<name>.dead-letters`, the reason in the
    /// header `sluice-error`), `skip` (counted) or `stop` (the processor fails
    /// before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(dead_letter|skip|stop)$")]
    pub on_error: Option<String>,
    /// A table each record is joined with (looked up by key in its committed
    /// state; no co-partitioning needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<ProcessorJoin>,
    /// Replace the definition of the processor of this name if there is one
    /// (as `CREATE OR REPLACE STREAM`): it goes on from its committed offsets,
    /// and a processor `on_error: stop` stopped resumes. Its source, key and
    /// partitions cannot change that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
}

/// A stream–table join. Expressions of the processor then see the record's
/// fields (also as `<source_as>.field`) and the row as `<as>` (`c.name`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"table": "customers", "as": "c", "on": "customer_id", "type": "left", "wait_ms": 2000}))]
pub struct ProcessorJoin {
    /// The table.
    pub table: String,
    /// The row's name in expressions; default: the table's name.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The record's name in expressions; default: the source topic's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_as: Option<String>,
    /// A SQL expression over the record: the key of the row to join.
    pub on: String,
    /// The table column `on` was compared with in SQL (it must key the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// `left` (default: a record without a row joins null) or `inner` (it is
    /// passed over).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(left|inner)$")]
    pub kind: Option<String>,
    /// Before joining, wait up to this long (at most 60000) until the table has
    /// applied everything its source held when the records were read, so a
    /// row written before the record is found.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub wait_ms: Option<u64>,
}

/// A processor defined in SQL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "CREATE STREAM big_orders AS SELECT id, customer_id, amount * 100 AS cents FROM orders WHERE amount > 1000 PARTITION BY customer_id"}))]
pub struct ProcessorSql {
    /// `CREATE [OR REPLACE] STREAM <name> AS SELECT ... FROM <topic> [<alias>] [[LEFT] JOIN
    /// <table> [<alias>] ON <expr> = <alias>.<key>] [WHERE ...] [PARTITION BY <expr>]`.
    pub sql: String,
    /// As in the JSON definition.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u32"
    )]
    pub partitions: Option<u32>,
    /// As in the JSON definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(dead_letter|skip|stop)$")]
    pub on_error: Option<String>,
    /// For a join: as the JSON definition's `join.wait_ms`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub wait_ms: Option<u64>,
}

/// One source partition's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessorPartition {
    /// Source partition.
    pub partition: u32,
    /// Next source offset to process.
    pub processed_offset: u64,
    /// The partition's end offset.
    pub end_offset: u64,
    /// Records not processed yet.
    pub lag: u64,
    /// Over a Kafka cluster: whether this gateway processes this partition now.
    /// Absent on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_here: Option<bool>,
}

/// What a processor has done, committed with its offsets (so exact across
/// crashes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ProcessorCounts {
    /// Input records read.
    pub read: u64,
    /// Records written to the output topic.
    pub written: u64,
    /// Records the filter passed over.
    pub filtered: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records passed over by `on_error: skip`.
    pub skipped: u64,
}

/// A processor's definition and status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessorInfo {
    /// Processor name, and the name of the topic it writes.
    pub name: String,
    /// The definition (SQL definitions are shown compiled).
    pub definition: ProcessorDefinition,
    /// The SQL it was defined with, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `running` or `failed`.
    #[schema(pattern = "^(running|failed)$")]
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Records not processed yet, over all partitions.
    pub lag: u64,
    /// Counters.
    pub counts: ProcessorCounts,
    /// Progress per source partition.
    pub partitions: Vec<ProcessorPartition>,
}

/// Processors.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessorList {
    pub processors: Vec<ProcessorInfo>,
}
