//! The log's one error type. Callers match on the variant; the gateway maps each to an HTTP status.

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No topic of that name exists.
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    /// A topic of that name already exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The partition is not one of the topic's.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// The offset is outside the retained range `[start, end]`.
    #[error("offset {offset} is outside the retained range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First retained offset.
        start: u64,
        /// Next offset to be written.
        end: u64,
    },
    /// A record without a key for a compacted topic, which keeps one record per key.
    #[error("topic '{0}' is compacted: every record needs a key")]
    KeyRequired(String),
    /// A request argument the log cannot accept (bad name, zero partitions, ...).
    #[error("{0}")]
    Invalid(String),
    /// The data directory's disk has less free space than the floor: appends are
    /// refused until space is freed (deletes, retention and compaction go on).
    #[error(
        "the disk has {free_bytes} bytes free, below the floor of {min_free_bytes}: appends \
         are refused until space is freed"
    )]
    InsufficientStorage {
        /// Bytes free.
        free_bytes: u64,
        /// The floor.
        min_free_bytes: u64,
    },
    /// An earlier durable commit failed; the log refuses writes until it is reopened,
    /// because what reached the disk is no longer known.
    #[error("the log refuses writes after a failed commit; restart to recover")]
    Poisoned,
    /// The durable commit that carried this write failed; the write is not stored.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The writer has shut down.
    #[error("the log is shut down")]
    Closed,
    /// Stored bytes do not decode.
    #[error("corrupted record in partition key {pkey} at offset {offset}")]
    Corrupted {
        /// Internal partition key.
        pkey: u64,
        /// Offset of the record.
        offset: u64,
    },
    /// No state store of that name exists.
    #[error("state store '{0}' does not exist")]
    StoreNotFound(String),
    /// A state store of that name already exists.
    #[error("state store '{0}' already exists")]
    StoreExists(String),
    /// A newer writer of the state store was opened; this one may write no more.
    #[error("writer {epoch} of state store '{store}' is fenced by writer {current}")]
    Fenced {
        /// The store.
        store: String,
        /// The writer epoch the batch named.
        epoch: u64,
        /// The store's current writer epoch.
        current: u64,
    },
    /// A consumer-group commit named an epoch that is not the member's current
    /// one (its partitions may have moved since); nothing was committed.
    #[error("{0}")]
    StaleGeneration(String),
    /// The engine does not offer this operation.
    #[error("{0}")]
    Unsupported(String),
    /// The engine's cluster could not take the request now (no leader, no broker
    /// reachable); nothing was written, and trying again later may succeed.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// The storage engine failed; the text says how.
    #[error("storage: {0}")]
    Storage(String),
    /// The file system failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CursorError,
    redb::SetDurabilityError
);

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
