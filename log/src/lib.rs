//! The storage engine of Sluice: a durable partitioned log in a redb file, with a
//! write-ahead log in front of it.
//!
//! It owns topics and their partitions, dense per-partition offsets, the stored
//! record format, Kafka's murmur2 key placement, group commit (one transaction and
//! one fsync for everything queued while the previous commit ran; appends are made
//! durable in the write-ahead log and reach redb in bulk, read from memory until
//! then), idempotent appends, retention, compaction, the purge of deleted topics,
//! consistent snapshots of the file for backups (and restoring one), the data
//! directory's disk (a free-space floor for appends and a reserve for a full disk),
//! the durable counter behind consumer-group fencing tokens, state stores for
//! derived state (rows and the source offsets they reflect, one fenced writer per
//! store), and the embedded consumer-group coordinator ([`groups`]: membership,
//! sticky assignment, generations, positions).
//!
//! It also owns the storage seam, [`Backend`]: the operations every engine offers
//! (topics, records, the consumer-group store, state stores, epoch and health). The
//! redb log implements it here; other engines nest under `log/` and implement the
//! same trait. Above the seam nothing names redb.
//!
//! It must not depend on HTTP, async runtimes or auth: it is a synchronous library
//! with a callback-style write API, so any front end (the gateway, the table engine,
//! tests) drives it the same way.

mod backend;
mod backup;
mod batch;
mod compaction;
mod disk;
mod error;
pub mod groups;
mod log;
mod maintenance;
mod murmur2;
mod pending;
mod record;
mod schema;
mod state;
mod topic;
mod wal;
mod writer;

pub use crate::backend::{Backend, ClusterGroups, Health, Share, SharedMember, StateHook, wait};
pub use crate::backup::{Summary, inspect, restore};
pub use crate::disk::{DiskStatus, RESERVE_FILE};
pub use crate::error::{Error, Result};
pub use crate::log::{
    AppendHook, AppendRequest, AppendUnit, CommitHook, CommitStats, Log, LogOptions, NewRecord,
    ReadOutcome, now_ms, valid_name,
};
pub use crate::murmur2::{murmur2, partition_for_key};
pub use crate::record::{RecordParts, RecordView, ValueKind};
pub use crate::schema::MAX_PARTITIONS;
pub use crate::state::{
    KEY_END, PROCESSOR_STORES, SHARD_SEP, SINK_STORES, SOURCE_STORES, StateBatch, StateRead,
    StoreStats, scan_rows, shard_key, split_shard_key,
};
pub use crate::topic::{Compaction, PartitionInfo, Topic, TopicConfig};

/// Answers a write once its commit is known; see [`Log::append`].
pub type Reply<T> = Box<dyn FnOnce(Result<T>) + Send>;
