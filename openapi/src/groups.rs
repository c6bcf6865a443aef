//! Consumer-group bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FetchedRecord;

/// A group poll's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    /// This consumer's generation: a fencing token, new whenever its assignment
    /// changes; a commit must name the one from the consumer's latest poll.
    pub generation: u64,
    /// The partitions this consumer owns now, ascending.
    pub assignment: Vec<u32>,
    /// The group's session timeout in effect: a member that does not poll for this
    /// long loses its partitions.
    pub session_timeout_ms: u64,
    /// Records from the group's positions in the assigned partitions.
    pub records: Vec<FetchedRecord>,
}

/// One committed offset: the next offset the group will read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicOffset {
    /// Topic name.
    pub topic: String,
    /// Partition.
    #[serde(deserialize_with = "crate::num::u32")]
    pub partition: u32,
    /// The next offset to read (one past the last record processed).
    #[serde(deserialize_with = "crate::num::u63")]
    #[schema(minimum = 0, maximum = 9223372036854775807i64)]
    pub offset: u64,
}

/// `POST /v1/groups/{group}/offsets` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"consumer": "worker-1", "generation": 3,
    "offsets": [{"topic": "orders", "partition": 0, "offset": 42}]}))]
pub struct CommitRequest {
    /// The committing consumer's id.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    pub consumer: String,
    /// The generation the consumer's last poll returned.
    #[serde(deserialize_with = "crate::num::u63")]
    #[schema(minimum = 0, maximum = 9223372036854775807i64)]
    pub generation: u64,
    /// Offsets to commit, all or none.
    pub offsets: Vec<TopicOffset>,
}

/// Where to move a group's offsets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResetTo {
    /// `"earliest"` or `"latest"`.
    Named(ResetNamed),
    /// `{"offset": n}`: the same offset in every partition, clamped to what is retained.
    Offset {
        /// The offset.
        #[serde(deserialize_with = "crate::num::u63")]
        #[schema(minimum = 0, maximum = 9223372036854775807i64)]
        offset: u64,
    },
    /// `{"timestamp": ms}`: per partition, the first record at or after this time.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        #[serde(deserialize_with = "crate::num::u63")]
        #[schema(minimum = 0, maximum = 9223372036854775807i64)]
        timestamp: u64,
    },
}

/// The ends of a partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResetNamed {
    /// The first retained offset.
    Earliest,
    /// The end: only records produced from now on.
    Latest,
}

/// `POST /v1/groups/{group}/offsets/reset` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "orders", "to": "earliest"}))]
pub struct ResetRequest {
    /// The topic whose offsets move.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    pub topic: String,
    /// Where to.
    pub to: ResetTo,
}

/// The offsets a reset committed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetResponse {
    /// One per partition.
    pub offsets: Vec<TopicOffset>,
}

/// A group in the list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupSummary {
    /// Group name.
    pub group: String,
    /// Topics it has members on or committed offsets for.
    pub topics: Vec<String>,
    /// Live members (one per consumer id and topic).
    pub members: usize,
    /// The newest generation any of its consumers holds, when it has live state.
    pub generation: Option<u64>,
}

/// `GET /v1/groups` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// Groups, sorted by name.
    pub groups: Vec<GroupSummary>,
}

/// A live member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberDescription {
    /// Consumer id.
    pub consumer: String,
    /// Topic it polls.
    pub topic: String,
    /// Milliseconds since its last poll.
    pub last_seen_ms_ago: u64,
    /// Its session timeout.
    pub session_timeout_ms: u64,
    /// Partitions it owns.
    pub assignment: Vec<u32>,
}

/// One partition of a group's topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupPartition {
    /// Partition.
    pub partition: u32,
    /// Owning member, if any.
    pub owner: Option<String>,
    /// Committed offset, if any.
    pub committed: Option<u64>,
    /// The partition's end offset.
    pub end_offset: u64,
    /// `end_offset - committed` (from the start offset when nothing is committed).
    pub lag: u64,
}

/// A group's view of one topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupTopic {
    /// Topic.
    pub topic: String,
    /// Sum of the partitions' lag.
    pub lag: u64,
    /// Per partition.
    pub partitions: Vec<GroupPartition>,
}

/// `GET /v1/groups/{group}` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupDescription {
    /// Group name.
    pub group: String,
    /// The newest generation any of its consumers holds, when it has live state.
    pub generation: Option<u64>,
    /// Live members.
    pub members: Vec<MemberDescription>,
    /// Topics with members or committed offsets.
    pub topics: Vec<GroupTopic>,
}
