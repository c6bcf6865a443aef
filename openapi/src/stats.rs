//! The server's summary for dashboards: `GET /v1/stats`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/stats` body: what the server holds and how busy it is. Counters are
/// cumulative since start-up; a client derives rates from two readings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerStats {
    /// The server's version.
    pub version: String,
    /// Start-up time, ms since the Unix epoch.
    pub started_ms: u64,
    /// Milliseconds since start-up.
    pub uptime_ms: u64,
    /// When this reading was taken, ms since the Unix epoch.
    pub now_ms: u64,
    /// Bytes the data directory takes on disk.
    pub data_bytes: u64,
    /// Bytes free on the data directory's disk.
    pub disk_free_bytes: u64,
    /// The floor below which appends are refused (`--min-free-disk-mb`).
    pub min_free_disk_bytes: u64,
    /// Open WebSocket connections.
    pub websocket_connections: u64,
    /// Topics the token may produce to or read, sorted by name.
    pub topics: Vec<TopicStats>,
    /// Consumer groups the token may use, sorted by name.
    pub groups: Vec<GroupStats>,
    /// Tables the token may query, sorted by name.
    pub tables: Vec<TableStats>,
}

/// One topic's size and traffic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicStats {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Records retained.
    pub records: u64,
    /// Bytes retained.
    pub bytes: u64,
    /// Records ever written: the sum of the partitions' end offsets.
    pub produced_total: u64,
    /// Records handed to readers since start-up (fetches, group polls, WebSocket and
    /// SSE deliveries).
    pub delivered_total: u64,
}

/// One consumer group's size and lag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupStats {
    /// Group name.
    pub group: String,
    /// Live members.
    pub members: usize,
    /// Records not consumed yet, over all its topics and partitions.
    pub lag: u64,
}

/// One table's state and lag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableStats {
    /// Table name.
    pub name: String,
    /// `backfilling`, `live` or `failed`.
    pub state: String,
    /// Rows.
    pub rows: u64,
    /// Source records not applied yet.
    pub lag: u64,
}

/// `GET /v1/backup` body: the database file, as of the last commit.
#[derive(Debug, Clone, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BackupFile(pub Vec<u8>);
