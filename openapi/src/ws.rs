//! WebSocket frames (`GET /v1/ws`): what clients send and what the server answers.
//! The gateway parses and writes these types, and both the OpenAPI and the AsyncAPI
//! documents describe them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{FetchedRecord, MapOnly, ProduceRecord, RecordOffset, ResetNamed};

/// `{"op":"subscribe",...}`: follow a topic (from a position, or as a member of a
/// consumer group) or a table's row changes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"op": "subscribe", "id": "s1", "topic": "orders", "from": "earliest"}))]
pub struct SubscribeFrame {
    /// `subscribe`.
    pub op: String,
    /// The client's name for the subscription; frames about it carry it.
    pub id: String,
    /// The topic to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Or the table whose row changes to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// With `topic`: where to start (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<SubscribeFrom>,
    /// With `topic`: only these partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
    /// With `topic`: consume as a member of this group instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// With `group`: the member's consumer id (default: one is made up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// With `group`: where a group without commits starts (default `earliest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetNamed>,
    /// With `table`: only rows whose keys start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// Where a topic subscription starts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SubscribeFrom {
    /// `earliest` or `latest`.
    Named(ResetNamed),
    /// `{"offset": {"0": 10}}`: per partition (unnamed partitions start at the end).
    Offsets {
        /// Partition to offset.
        offset: BTreeMap<String, u64>,
    },
    /// `{"timestamp": ms}`: the first record at or after this time.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        timestamp: u64,
    },
}

/// `{"op":"unsubscribe","id"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeFrame {
    /// `unsubscribe`.
    pub op: String,
    /// The subscription.
    pub id: String,
}

/// `{"op":"commit","id","offsets":{"0":11}}`: commit a group subscription's offsets
/// (the next offset to read per partition) in its current generation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitFrame {
    /// `commit`.
    pub op: String,
    /// The group subscription.
    pub id: String,
    /// Partition to next offset.
    pub offsets: BTreeMap<String, u64>,
}

/// `{"op":"produce","ref","topic","records":[...]}`: durable like REST produce.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProduceFrame {
    /// `produce`.
    pub op: String,
    /// Echoed in the answer.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reference: Option<Value>,
    /// Topic.
    pub topic: String,
    /// Records, as in REST produce.
    #[schema(value_type = Vec<crate::ProduceRecordSchema>)]
    pub records: Vec<MapOnly<ProduceRecord>>,
}

/// What the server sends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// A subscription is open.
    Subscribed(SubscribedFrame),
    /// Records of one partition, in offset order.
    Records {
        /// Subscription id.
        id: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The offset after the last record.
        next_offset: u64,
        /// The records.
        records: Vec<FetchedRecord>,
    },
    /// A group subscription's new assignment.
    Assigned {
        /// Subscription id.
        id: String,
        /// Generation.
        generation: u64,
        /// Partitions owned.
        assignment: Vec<u32>,
    },
    /// A commit is durable.
    Committed {
        /// Subscription id.
        id: String,
        /// Generation it was made in.
        generation: u64,
        /// Partition to next offset.
        offsets: BTreeMap<String, u64>,
    },
    /// A produce is durable.
    Produced {
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        #[schema(value_type = Option<Object>)]
        reference: Option<Value>,
        /// Offsets in request order.
        offsets: Vec<RecordOffset>,
    },
    /// A subscription is closed.
    Unsubscribed {
        /// Subscription id.
        id: String,
    },
    /// A table row changed; `row` is null when it was deleted.
    Row {
        /// Subscription id.
        id: String,
        /// Table.
        table: String,
        /// Row key.
        key: String,
        /// The row, or null.
        #[schema(value_type = Option<Object>)]
        row: Option<Value>,
    },
    /// A request or subscription failed; other subscriptions go on.
    Error {
        /// The subscription concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The produce request concerned, if any.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        reference: Option<Value>,
        /// A stable code, as in problem+json.
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// The `subscribed` frame's fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SubscribedFrame {
    /// Subscription id.
    pub id: String,
    /// Its topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Its table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its consumer id in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Its key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// The data directory's epoch: when it changes, stored offsets are void.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_epoch: Option<String>,
    /// Topic subscriptions: where each partition starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<BTreeMap<String, u64>>,
    /// Group subscriptions: the generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Group subscriptions: the partitions owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Vec<u32>>,
}
