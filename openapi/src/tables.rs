//! Table bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A table defined in JSON: a projection (`key`, optional `columns`) or a state
/// table (`group_by`, `aggregates`, optional `window`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "payments_per_customer", "source": "payments",
    "group_by": "$.customer_id", "aggregates": {"n": {"count": {}}, "total": {"sum": "$.amount"}},
    "window": {"tumbling_ms": 60000}}))]
pub struct TableDefinition {
    /// Table name: `[A-Za-z0-9._-]{1,249}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    pub name: String,
    /// Source topic.
    pub source: String,
    /// Projection key: `key` (the record key) or a JSON path such as `$.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Projection columns: name to JSON path; absent keeps the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<BTreeMap<String, String>>,
    /// State table grouping: `key` or a JSON path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// State table aggregates: name to `{"count":{}}`, `{"sum":"$.x"}`, `{"min":..}`,
    /// `{"max":..}`, `{"avg":..}` or `{"latest":..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub aggregates: Option<serde_json::Map<String, serde_json::Value>>,
    /// Tumbling windows by record time: `{"tumbling_ms": 60000, "retention_ms"?: 3600000}`;
    /// rows are keyed `<group>@<window start, 13 digits>`, and closed windows are
    /// deleted `retention_ms` after they close (in record time) when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"tumbling_ms": 60000, "retention_ms": 3600000}))]
    pub window: Option<serde_json::Value>,
    /// A SQL boolean expression over the record's fields: `amount > 10 AND tier = 'gold'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A topic (which must not exist yet) the table makes and appends every row
    /// change to, in the commit that changes the row: `{"key", "op":
    /// "upsert"|"delete", "row"}`, keyed by the row key. Only the table writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
}

/// A table defined in SQL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "CREATE TABLE customers AS SELECT id, name, tier FROM customer_events"}))]
pub struct SqlDefinition {
    /// `CREATE TABLE <name> AS SELECT ... FROM <topic> [WHERE ...] [GROUP BY <col>]
    /// [WINDOW TUMBLING (SIZE <n> <unit>)]`.
    pub sql: String,
    /// As in the JSON definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
}

/// One source partition's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TablePartition {
    /// Partition.
    pub partition: u32,
    /// Next source offset to apply.
    pub applied_offset: u64,
    /// The partition's end offset.
    pub end_offset: u64,
    /// Records not applied yet.
    pub lag: u64,
    /// Over a Kafka cluster: whether this gateway folds this partition into the
    /// table now (it holds the lease of the partition's shard). Absent on one
    /// machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_here: Option<bool>,
}

/// A table's definition and status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableInfo {
    /// Table name.
    pub name: String,
    /// The definition (SQL definitions are shown compiled).
    pub definition: TableDefinition,
    /// The SQL it was defined with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `backfilling`, `live` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows.
    pub rows: u64,
    /// Records that did not fit the definition (missing field, wrong type) and were
    /// skipped.
    pub skipped: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Sum of the partitions' lag.
    pub lag: u64,
    /// Per source partition.
    pub partitions: Vec<TablePartition>,
    /// Over a Kafka cluster: whether this gateway folds any of the table's source
    /// partitions into it now (see `partitions[].folded_here`); the other
    /// gateways serve their copy. A state table's partitions are spread over the
    /// gateways; a projection is folded by one. Absent on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_here: Option<bool>,
}

/// `GET /v1/tables` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableList {
    /// Tables, sorted by name.
    pub tables: Vec<TableInfo>,
}

/// One row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Row {
    /// The row's key.
    pub key: String,
    /// The row.
    #[schema(value_type = Object)]
    pub row: serde_json::Value,
}

/// `GET /v1/tables/{table}/rows/{key}` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowResponse {
    /// The row's key.
    pub key: String,
    /// The row.
    #[schema(value_type = Object)]
    pub row: serde_json::Value,
    /// The source offsets the table reflects: partition to the next offset to apply.
    pub offsets: BTreeMap<String, u64>,
}

/// `GET /v1/tables/{table}/rows` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowPage {
    /// Rows in key order.
    pub rows: Vec<Row>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
