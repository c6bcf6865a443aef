//! The storage seam: every operation the gateway and the table engine need from a
//! storage engine, and nothing of how one engine keeps it.
//!
//! The embedded redb [`Log`] is one implementation; the Kafka engine is the other.
//! What crosses the seam is this crate's own types ([`Topic`], [`AppendRequest`],
//! [`RecordView`], [`StateBatch`], [`Error`], ...): no redb transaction, table or
//! error. Calls that write take a [`Reply`] and answer once the write is durable (on
//! whatever thread the engine finishes it), so a front end can wait for many
//! writes at once without a thread each; reads answer on the caller's thread and
//! may block, so async callers run them on a blocking pool.
//!
//! Placement is decided above the seam: an append names its partitions, chosen with
//! Sluice's murmur2 ([`crate::partition_for_key`]), so a key lands on the same
//! partition on every engine. Idempotency keys travel with the append
//! ([`crate::AppendUnit::dedupe_key`]).
//!
//! The seam's behaviour is specified by the conformance suite in
//! `log/tests/conformance.rs`, written against this trait only; every engine runs it.

use std::ops::Range;
use std::sync::Arc;

use crate::{
    AppendHook, AppendRequest, DiskStatus, Log, ReadOutcome, RecordView, Reply, Result, StateBatch,
    StateRead, StoreStats, Topic, TopicConfig,
};

/// Called with a store's name and the keys a batch changed, once the engine's
/// copy of the store applied it.
pub type StateHook = Arc<dyn Fn(&str, &[String]) + Send + Sync>;

/// A storage engine behind the seam.
pub trait Backend: Send + Sync + 'static {
    /// Identifies this store's data: it changes when the data is replaced (a new
    /// data directory, a restore), so clients that resume from offsets can tell.
    fn epoch(&self) -> &str;

    /// The epoch clients see with `topic`'s offsets: it changes when the offsets
    /// start over (the store replaced, or an engine whose topics carry their own
    /// identity recreating the topic). The store's epoch by default.
    fn topic_epoch(&self, topic: &Topic) -> std::borrow::Cow<'_, str> {
        let _ = topic;
        std::borrow::Cow::Borrowed(self.epoch())
    }

    /// Brings `topic`'s partition sizes up to date, for engines that learn them
    /// from elsewhere (and otherwise refresh them now and then); may block on
    /// the network. Nothing to do by default.
    fn refresh_sizes(&self, topic: &Topic) {
        let _ = topic;
    }

    /// Whether the engine takes writes, and the disk it writes to when it has one.
    fn health(&self) -> Health;

    // Topics.

    /// A topic by name.
    fn topic(&self, name: &str) -> Option<Arc<Topic>>;
    /// All topics, sorted by name.
    fn topics(&self) -> Vec<Arc<Topic>>;
    /// A partition's end as the engine's storage has it now, for when the
    /// topic's own figure may lag (records another gateway wrote a moment ago);
    /// may block briefly.
    fn end_offset(&self, topic: &Topic, partition: u32) -> u64 {
        topic.partition(partition).map_or(0, |p| p.end_offset)
    }
    /// A topic [`Backend::topic`] does not know, looked for where it may have
    /// just been made (another gateway of the same cluster); may block briefly.
    fn find_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topic(name)
    }
    /// Creates a topic; answers once it is durable.
    fn create_topic(&self, name: &str, config: TopicConfig, reply: Reply<Arc<Topic>>);
    /// Deletes a topic and (in the background) its records.
    fn delete_topic(&self, name: &str, reply: Reply<()>);

    // Records.

    /// Appends units of records to the partitions they name; answers one
    /// `(partition, offset)` per record, in request order, once all are durable. A
    /// unit whose dedupe key was seen within the dedupe window is not written again:
    /// its first offsets are answered instead.
    fn append(&self, request: AppendRequest, reply: Reply<Vec<(u32, u64)>>);
    /// Reads one partition from `from`: at most `max_records` records and about
    /// `max_bytes` (the first record always, so a reader makes progress). Offsets
    /// that hold no record (compacted away) are skipped.
    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        visit: &mut dyn FnMut(u64, RecordView<'_>),
    ) -> Result<ReadOutcome>;
    /// The first offset whose record's timestamp is at or after `timestamp_ms`, or
    /// the partition's end.
    fn offset_for_timestamp(&self, topic: &Topic, partition: u32, timestamp_ms: u64)
    -> Result<u64>;
    /// Calls `hook(topic id, partition, end offset)` whenever a partition's end moves
    /// (after the records are readable). Any number of subscribers; hooks run on the
    /// engine's thread and must not block.
    fn subscribe(&self, hook: AppendHook);

    // The consumer-group store: committed offsets and fencing tokens.

    /// Commits a group's offsets (the next offset to read per partition),
    /// atomically; answers once they are durable.
    fn commit_offsets(&self, group: &str, offsets: Vec<(Arc<Topic>, u32, u64)>, reply: Reply<()>);
    /// A group's committed offsets on one topic, per partition.
    fn committed_offsets(&self, group: &str, topic: &Topic) -> Result<Vec<Option<u64>>>;
    /// Every group with committed offsets, with the topics (that still exist) it has
    /// them on.
    fn committed_groups(&self) -> Result<Vec<(String, Vec<Arc<Topic>>)>>;
    /// Forgets a group's committed offsets; answers how many there were.
    fn delete_group(&self, group: &str, reply: Reply<usize>);
    /// Durably reserves a block of fencing tokens (consumer generations) that no
    /// earlier reservation of this store handed out.
    fn reserve_fencing_tokens(&self) -> Result<Range<u64>>;
    /// The engine's own keeper of group membership, for engines whose cluster
    /// keeps it (so every gateway serves every member); `None`: the gateway keeps
    /// membership itself ([`crate::groups::Coordinator`]) and commits through
    /// [`Backend::commit_offsets`].
    fn cluster_groups(&self) -> Option<Arc<dyn ClusterGroups>> {
        None
    }

    // State stores: derived state written exactly once (see `crate::state`).

    /// How many shards a store over a source of `partitions` partitions may be
    /// split into, each with its own writer (see [`crate::shard_key`]): one on one
    /// machine; over a cluster, one per partition, so the gateways share the work.
    fn shards(&self, partitions: u32) -> u32 {
        let _ = partitions;
        1
    }
    /// Creates a store with its definition, its starting source offsets and its
    /// number of shards (source partition `p` belongs to shard `p % shards`).
    fn create_store(
        &self,
        name: &str,
        definition: Vec<u8>,
        offsets: Vec<u64>,
        shards: u32,
        reply: Reply<()>,
    );
    /// Replaces a store's definition (a change of its settings), keeping its
    /// rows and offsets; every gateway's [`Backend::stores`] answers it soon.
    fn update_store(&self, name: &str, definition: Vec<u8>, reply: Reply<()>);
    /// Makes a store's source offsets hold back `topic`'s retention by time
    /// (`None`: no longer), where the engine runs retention itself: records a
    /// store has not passed are then deleted only for a size limit. Engines whose
    /// cluster deletes by itself (Kafka) ignore it; a reader then meets a gap.
    fn hold_retention(&self, store: &str, topic: Option<&Topic>, reply: Reply<()>) {
        let _ = (store, topic);
        reply(Ok(()))
    }
    /// Deletes a store and everything in it.
    fn drop_store(&self, name: &str, reply: Reply<()>);
    /// Every store with its definition.
    fn stores(&self) -> Result<Vec<(String, Vec<u8>)>>;
    /// Becomes the one writer of a store's shard, fencing every earlier one;
    /// returns the writer's epoch.
    fn open_writer(&self, store: &str, shard: u32) -> Result<u64>;
    /// Commits rows and the source offsets they reflect, atomically, as writer
    /// `epoch` of `shard`; refused with [`crate::Error::Fenced`] once a newer
    /// writer of the shard opened. Of the batch's offsets only the shard's
    /// partitions' are taken.
    fn commit_state(
        &self,
        store: &str,
        shard: u32,
        epoch: u64,
        batch: StateBatch,
        reply: Reply<()>,
    );
    /// Rows by key and the offsets they reflect, from one consistent view.
    fn read_state(&self, store: &str, keys: &[&str], partitions: u32) -> Result<StateRead>;
    /// Rows from key `from` on, in key order, until `visit` says stop.
    fn scan_state(
        &self,
        store: &str,
        from: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<()>;
    /// A store's counters.
    fn state_stats(&self, store: &str) -> Result<StoreStats>;
    /// Whether this engine should write a store's shard now. On one machine
    /// always; over a cluster one gateway at a time holds a shard's lease, and
    /// the others serve its local copy. A writer that loses the lease is fenced
    /// by the next one.
    fn may_write(&self, store: &str, shard: u32) -> Result<bool> {
        let _ = (store, shard);
        Ok(true)
    }
    /// Over a cluster, the shards of `store` this gateway writes now (it held
    /// their leases at its last renewal; asks nothing of the cluster). `None` on
    /// one machine, where the one process always does.
    fn writes_store(&self, store: &str) -> Option<Vec<u32>> {
        let _ = store;
        None
    }
    /// Hands the stores this engine writes to the cluster's other gateways, at a
    /// graceful shutdown once the table engine stopped: they take them over at
    /// once rather than after the lease's session timeout. Blocks on the cluster;
    /// nothing to do on one machine.
    fn release_stores(&self) {}
    /// Asks to hear of every batch a store's local copy applied, whichever
    /// gateway wrote it, with the keys it changed; answers whether the engine will
    /// call the hook (an engine whose stores only its own writer changes does not).
    fn subscribe_state(&self, hook: StateHook) -> bool {
        let _ = hook;
        false
    }

    // Operations.

    /// A consistent copy of all data for a backup: a file open at its start, and
    /// its length. [`crate::Error::Unsupported`] where the engine has its own means.
    fn snapshot(&self, reply: Reply<(std::fs::File, u64)>);
}

/// Consumer groups whose membership the engine's cluster keeps: a member is a
/// consumer id of a group on one topic, with an epoch (its fencing token) and the
/// partitions the cluster gave it; nothing of it lives in the gateway, so a
/// member's next call may reach any gateway. Calls block on the cluster.
pub trait ClusterGroups: Send + Sync + 'static {
    /// Joins or refreshes `consumer` of `group` on `topic`; answers its share.
    /// `session`, when given, becomes the group's session timeout.
    fn heartbeat(
        &self,
        group: &str,
        topic: &Topic,
        consumer: &str,
        session: Option<std::time::Duration>,
    ) -> Result<Share>;
    /// Commits `offsets` (partition, next offset to read) of `topic` as the member
    /// at `epoch`; [`crate::Error::StaleGeneration`] when that is not its epoch.
    fn commit(
        &self,
        group: &str,
        topic: &Topic,
        consumer: &str,
        epoch: u64,
        offsets: &[(u32, u64)],
    ) -> Result<()>;
    /// Takes the member out; its partitions go to the others at their next
    /// heartbeat. Answers whether it was a member.
    fn leave(&self, group: &str, topic: &Topic, consumer: &str) -> Result<bool>;
    /// The group's members and its epoch (`None`: no members).
    fn members(&self, group: &str) -> Result<(Option<u64>, Vec<SharedMember>)>;
    /// Takes every member of `group` out, whichever client it is.
    fn clear(&self, group: &str) -> Result<()>;
    /// The groups the cluster has members or offsets for.
    fn groups(&self) -> Result<Vec<String>>;
}

/// A member's share of a topic, as the cluster told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The member's epoch: what its commits must name.
    pub epoch: u64,
    /// Its partitions, ascending.
    pub partitions: Vec<u32>,
    /// How often the cluster wants to hear from the member.
    pub heartbeat_interval: std::time::Duration,
    /// The group's session timeout, as far as this gateway knows it.
    pub session_timeout: std::time::Duration,
}

/// One member of a cluster-kept group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMember {
    pub consumer: String,
    pub topic: String,
    pub epoch: u64,
    pub partitions: Vec<u32>,
    /// The group's session timeout.
    pub session_timeout: std::time::Duration,
}

/// Whether an engine takes writes.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// A failed durable commit stopped all writes until a restart.
    pub poisoned: bool,
    /// The engine can reach its storage (always, for a local one).
    pub available: bool,
    /// The local disk writes go to, for engines that have one.
    pub disk: Option<DiskStatus>,
    /// Size of the engine's local data file, for engines that have one.
    pub file_bytes: Option<u64>,
}

impl Backend for Log {
    fn epoch(&self) -> &str {
        Log::epoch(self)
    }
    fn health(&self) -> Health {
        Health {
            poisoned: self.is_poisoned(),
            available: true,
            disk: Some(self.disk()),
            file_bytes: std::fs::metadata(self.path()).ok().map(|m| m.len()),
        }
    }
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        Log::topic(self, name)
    }
    fn topics(&self) -> Vec<Arc<Topic>> {
        Log::topics(self)
    }
    fn create_topic(&self, name: &str, config: TopicConfig, reply: Reply<Arc<Topic>>) {
        Log::create_topic(self, name, config, reply)
    }
    fn delete_topic(&self, name: &str, reply: Reply<()>) {
        Log::delete_topic(self, name, reply)
    }
    fn append(&self, request: AppendRequest, reply: Reply<Vec<(u32, u64)>>) {
        Log::append(self, request, reply)
    }
    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        visit: &mut dyn FnMut(u64, RecordView<'_>),
    ) -> Result<ReadOutcome> {
        Log::read(self, topic, partition, from, max_records, max_bytes, visit)
    }
    fn offset_for_timestamp(
        &self,
        topic: &Topic,
        partition: u32,
        timestamp_ms: u64,
    ) -> Result<u64> {
        Log::offset_for_timestamp(self, topic, partition, timestamp_ms)
    }
    fn subscribe(&self, hook: AppendHook) {
        Log::subscribe(self, hook)
    }
    fn commit_offsets(&self, group: &str, offsets: Vec<(Arc<Topic>, u32, u64)>, reply: Reply<()>) {
        Log::commit_offsets(self, group, offsets, reply)
    }
    fn committed_offsets(&self, group: &str, topic: &Topic) -> Result<Vec<Option<u64>>> {
        Log::committed_offsets(self, group, topic)
    }
    fn committed_groups(&self) -> Result<Vec<(String, Vec<Arc<Topic>>)>> {
        Log::committed_groups(self)
    }
    fn delete_group(&self, group: &str, reply: Reply<usize>) {
        Log::delete_group(self, group, reply)
    }
    fn reserve_fencing_tokens(&self) -> Result<Range<u64>> {
        Log::reserve_fencing_tokens(self)
    }
    fn create_store(
        &self,
        name: &str,
        definition: Vec<u8>,
        offsets: Vec<u64>,
        shards: u32,
        reply: Reply<()>,
    ) {
        if shards != 1 {
            return reply(Err(crate::Error::Invalid(
                "a store on one machine has one shard".into(),
            )));
        }
        Log::create_store(self, name, definition, offsets, reply)
    }
    fn drop_store(&self, name: &str, reply: Reply<()>) {
        Log::drop_store(self, name, reply)
    }
    fn update_store(&self, name: &str, definition: Vec<u8>, reply: Reply<()>) {
        Log::update_store(self, name, definition, reply)
    }
    fn hold_retention(&self, store: &str, topic: Option<&Topic>, reply: Reply<()>) {
        Log::hold_retention(self, store, topic.map(Topic::id), reply)
    }
    fn stores(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Log::stores(self)
    }
    fn open_writer(&self, store: &str, shard: u32) -> Result<u64> {
        one_shard(shard)?;
        Log::open_writer(self, store)
    }
    fn commit_state(
        &self,
        store: &str,
        shard: u32,
        epoch: u64,
        batch: StateBatch,
        reply: Reply<()>,
    ) {
        if let Err(e) = one_shard(shard) {
            return reply(Err(e));
        }
        Log::commit_state(self, store, epoch, batch, reply)
    }
    fn read_state(&self, store: &str, keys: &[&str], partitions: u32) -> Result<StateRead> {
        Log::read_state(self, store, keys, partitions)
    }
    fn scan_state(
        &self,
        store: &str,
        from: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<()> {
        Log::scan_state(self, store, from, visit)
    }
    fn state_stats(&self, store: &str) -> Result<StoreStats> {
        Log::state_stats(self, store)
    }
    fn snapshot(&self, reply: Reply<(std::fs::File, u64)>) {
        Log::snapshot(self, reply)
    }
}

/// Runs a callback-style call of the seam and waits for its answer, for callers on
/// threads that may block.
pub fn wait<T: Send + 'static>(call: impl FnOnce(Reply<T>)) -> Result<T> {
    crate::log::blocking(call)
}

/// Refuses a shard other than a one-machine store's only one.
fn one_shard(shard: u32) -> Result<()> {
    if shard == 0 {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "shard {shard}: a store on one machine has one shard"
        )))
    }
}
