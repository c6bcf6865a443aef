//! The engine: one producer, an admin client, a metadata consumer, the reader pool
//! and a thread that follows the cluster (topics, their partitions' start and end,
//! the catalog), implementing the seam.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_log::{
    AppendHook, AppendRequest, Backend, ClusterGroups, Error, Health, ReadOutcome, RecordView,
    Reply, Result, StateBatch, StateRead, StoreStats, Topic, TopicConfig, now_ms,
};

use crate::catalog::{self, Entry};
use crate::dedupe::{self, Dedupe, Offsets};
use crate::groups::KafkaGroups;
use crate::members::Members;
use crate::read::Readers;
use crate::record::outgoing;
use crate::state::States;
use crate::wire::Wire;

/// How long a member told to give partitions up may take to say it did (a
/// Sluice member says so at its next poll) before the coordinator fences it.
const GROUP_REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The partitions whose sizes to ask for, by the `host:port` of their leader
/// (Kafka names).
type SizeAsks = Vec<(String, Vec<(String, i32)>)>;

/// Which broker of `md` leads each partition of `led` (by broker id): the size
/// requests to send.
fn size_asks(
    md: &rdkafka::metadata::Metadata,
    mut led: HashMap<i32, Vec<(String, i32)>>,
) -> SizeAsks {
    md.brokers()
        .iter()
        .filter_map(|b| Some((format!("{}:{}", b.host(), b.port()), led.remove(&b.id())?)))
        .collect()
}

/// How long reading partition sizes may take, per call.
const SIZES_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a pooled read consumer stays assigned with nobody reading through it.
const READERS_REST: Duration = Duration::from_secs(5);

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port,...` of some brokers.
    pub bootstrap: String,
    /// Client settings passed through to librdkafka (`security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, ...).
    pub client: Vec<(String, String)>,
    /// Replication factor of new topics; by default 3, or the broker count if
    /// smaller.
    pub replication: Option<u16>,
    /// How long an idempotency key is remembered.
    pub dedupe_window: Duration,
    /// How long a metadata or admin call may take.
    pub timeout: Duration,
    /// Put before the name of every Kafka topic this gateway makes or sees (its
    /// own catalog and dedupe topics too): gateways with different prefixes
    /// share a cluster without seeing each other's topics. Empty by default.
    pub topic_prefix: String,
    /// The session timeout members are told of when their group's was not set
    /// through this gateway (it should match the brokers'
    /// `group.consumer.session.timeout.ms`).
    pub group_session_timeout: Duration,
    /// Where this gateway keeps its local copies of the tables; without one,
    /// tables are not offered.
    pub state_dir: Option<std::path::PathBuf>,
    /// The most shards a new state table is split into; by default one per
    /// source partition.
    pub table_shards: Option<u32>,
}

impl KafkaOptions {
    /// Options for the brokers at `bootstrap`, with the defaults.
    pub fn new(bootstrap: &str) -> Self {
        KafkaOptions {
            bootstrap: bootstrap.to_string(),
            client: Vec::new(),
            replication: None,
            dedupe_window: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            topic_prefix: String::new(),
            group_session_timeout: Duration::from_secs(30),
            state_dir: None,
            table_shards: None,
        }
    }
}

/// An error from the cluster: the write or read did not happen, and may if tried
/// again.
pub(crate) fn unavailable(e: KafkaError) -> Error {
    Error::Unavailable(e.to_string())
}

/// Calls `ask` until it answers or `timeout` passes. For the metadata and offset
/// requests made while connecting: a cluster just started, or one whose leaders
/// are moving, refuses some of them for a moment (a partition just made has no
/// leader yet; a broker answers "not leader" while leadership moves).
pub(crate) fn patiently<T>(timeout: Duration, mut ask: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match ask() {
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}

/// The engine's handle; cheap to clone.
#[derive(Clone)]
pub struct Kafka {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    /// The state stores, when the gateway has a directory for their copies.
    states: std::sync::OnceLock<Arc<States>>,
    /// This gateway's name as a holder of table leases.
    holder: String,
    /// Direct broker calls (partition sizes), when the listener is plaintext.
    wire: Option<Wire>,
    /// Consumer groups kept by the cluster (direct calls too).
    groups: Option<Arc<KafkaGroups>>,
    /// Whether a round of size requests is under way.
    sizing: AtomicBool,
    /// Sixteen hex digits from the cluster id and the topic prefix: the store's
    /// epoch (a topic's adds its id).
    epoch: String,
    producer: ThreadedProducer<Deliveries>,
    admin: AdminClient<DefaultClientContext>,
    meta: BaseConsumer,
    readers: Readers,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    catalog: Mutex<HashMap<String, Entry>>,
    subscribers: Arc<RwLock<Vec<AppendHook>>>,
    /// Units written under a dedupe key, within the window.
    dedupe: Mutex<Dedupe>,
    /// The next offset of the dedupe topic the tail has not read, and a signal
    /// for appends waiting for it to catch up.
    dedupe_seen: (Mutex<i64>, std::sync::Condvar),
    /// Appends whose dedupe keys this gateway has not seen, waiting to be checked
    /// against the dedupe topic (see `crate::dedupe`).
    checks: Mutex<Option<std::sync::mpsc::Sender<Check>>>,
    reachable: AtomicBool,
    /// Whether the first refresh is done (the catalog was complete for it).
    opened: AtomicBool,
    /// Topics in the cluster that the catalog did not name at the last refresh.
    unnamed: Mutex<std::collections::HashSet<String>>,
    /// The next offset of the catalog topic the tail has not read, and a signal
    /// for lookups waiting for it to catch up.
    catalog_seen: (Mutex<i64>, std::sync::Condvar),
    /// One lookup of an unknown topic at a time; when the last found nothing.
    looking: Mutex<Option<Instant>>,
    /// Set when a lookup added a topic: the tail follows its partitions at once.
    follow_now: AtomicBool,
    stop: Arc<AtomicBool>,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.producer.flush(Duration::from_secs(10)).ok();
    }
}

/// Answers appends once Kafka acknowledged all their records.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        let outcome = match result {
            Ok(m) => Ok((
                m.partition() as u32,
                u64::try_from(m.offset()).unwrap_or(UNKNOWN_OFFSET),
            )),
            Err((e, _)) => Err(unavailable(e.clone())),
        };
        d.batch.done(d.index, outcome);
    }
}

/// The offset of a record Kafka acknowledged without saying where it is: a retry
/// the leader recognised as a write it had already made (after a leader moved),
/// answered with no offset. [`Kafka::find_unknown`] looks it up.
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// How many records after a record's timestamp are read to find it, at most.
const FIND_WITHIN: u64 = 100_000;

/// One record of an append in flight.
struct Delivery {
    batch: Arc<Batch>,
    index: usize,
}

/// An append in flight: its answer once every record is acknowledged.
struct Batch {
    offsets: Mutex<Vec<(u32, u64)>>,
    failed: Mutex<Option<Error>>,
    left: AtomicUsize,
    reply: Mutex<Option<Reply<Offsets>>>,
}

impl Batch {
    fn done(&self, index: usize, outcome: Result<(u32, u64)>) {
        match outcome {
            Ok(at) => self.offsets.lock().expect("batch lock")[index] = at,
            Err(e) => {
                self.failed.lock().expect("batch lock").get_or_insert(e);
            }
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let Some(reply) = self.reply.lock().expect("batch lock").take() else {
            return;
        };
        match self.failed.lock().expect("batch lock").take() {
            Some(e) => reply(Err(e)),
            None => reply(Ok(std::mem::take(
                &mut *self.offsets.lock().expect("batch lock"),
            ))),
        }
    }
}

fn client_config(options: &KafkaOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &options.bootstrap);
    for (k, v) in &options.client {
        c.set(k, v);
    }
    c
}

impl Kafka {
    /// The state stores, when this gateway keeps copies of them.
    fn states(&self) -> Result<&States> {
        self.inner.states.get().map(|s| &**s).ok_or_else(|| {
            Error::Unsupported(
                "tables over Kafka need a data directory for their local copies".into(),
            )
        })
    }

    /// The cluster's consumer groups, when this gateway can speak to them.
    fn groups(&self) -> Result<&KafkaGroups> {
        self.inner.groups.as_deref().ok_or_else(|| {
            Error::Unsupported(
                "consumer groups over Kafka need a PLAINTEXT listener (security.protocol)".into(),
            )
        })
    }

    /// Connects to the cluster, reads the topic catalog and starts following the
    /// cluster. Fails when no broker answers within the timeout.
    pub fn open(options: KafkaOptions) -> Result<Kafka> {
        let base = client_config(&options);
        let mut producer_config = base.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .set("max.in.flight.requests.per.connection", "5");
        let producer: ThreadedProducer<Deliveries> = producer_config
            .create_with_context(Deliveries)
            .map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(unavailable)?;
        let mut consumer_config = base.clone();
        consumer_config
            .set("group.id", "sluice-readers")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "20")
            .set("queued.max.messages.kbytes", "16384");
        let meta: BaseConsumer = consumer_config.create().map_err(unavailable)?;
        let cluster_id = meta
            .client()
            .fetch_cluster_id(options.timeout)
            .ok_or_else(|| {
                Error::Unavailable(format!("no broker of {} answered", options.bootstrap))
            })?;
        let epoch = {
            let mut h = Fnv::new();
            h.write(cluster_id.as_bytes());
            h.write(b"/");
            h.write(options.topic_prefix.as_bytes());
            format!("{:016x}", h.0)
        };
        let wire = Wire::new(&options.client, SIZES_TIMEOUT);
        let groups = Members::new(
            &options.bootstrap,
            &options.client,
            options.timeout,
            GROUP_REBALANCE_TIMEOUT,
        )
        .map(|m| {
            Arc::new(KafkaGroups::new(
                m,
                &options.topic_prefix,
                options.group_session_timeout,
            ))
        });
        let inner = Arc::new(Inner {
            wire,
            groups,
            sizing: AtomicBool::new(false),
            epoch,
            readers: Readers::new(consumer_config.clone()),
            options,
            producer,
            admin,
            meta,
            topics: RwLock::new(HashMap::new()),
            catalog: Mutex::new(HashMap::new()),
            subscribers: Arc::new(RwLock::new(Vec::new())),
            dedupe: Mutex::new(Dedupe::default()),
            dedupe_seen: (Mutex::new(0), std::sync::Condvar::new()),
            checks: Mutex::new(None),
            reachable: AtomicBool::new(true),
            opened: AtomicBool::new(false),
            unnamed: Mutex::new(Default::default()),
            catalog_seen: (Mutex::new(0), std::sync::Condvar::new()),
            looking: Mutex::new(None),
            follow_now: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            follower: Mutex::new(None),
            states: std::sync::OnceLock::new(),
            holder: format!("tables-{}", uuid::Uuid::new_v4().simple()),
        });
        let (catalog_topic, dedupe_topic) = (
            inner.kafka_name(catalog::TOPIC),
            inner.kafka_name(dedupe::TOPIC),
        );
        inner.ensure_internal(&catalog_topic, 1, &[("cleanup.policy", "compact")])?;
        // Dedupe records outlive the window a little, then go.
        let keep = (inner.options.dedupe_window + Duration::from_secs(600))
            .as_millis()
            .to_string();
        inner.ensure_internal(
            &dedupe_topic,
            1,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", &keep),
            ],
        )?;
        let (entries, catalog_next) =
            catalog::load(&inner.meta, &catalog_topic, inner.options.timeout)?;
        *inner.catalog.lock().expect("catalog lock") = entries;
        *inner.catalog_seen.0.lock().expect("catalog seen lock") = catalog_next;
        let window = inner.options.dedupe_window;
        let dedupe_next = {
            let mut d = inner.dedupe.lock().expect("dedupe lock");
            catalog::read_all(
                &inner.meta,
                &dedupe_topic,
                inner.options.timeout,
                &mut |k, v| d.apply(k, v, window),
            )?
        };
        *inner.dedupe_seen.0.lock().expect("dedupe seen lock") = dedupe_next;
        if let Some(dir) = inner.options.state_dir.clone() {
            let defs_topic = inner.kafka_name(crate::state::DEFS);
            inner.ensure_internal(&defs_topic, 1, &[("cleanup.policy", "compact")])?;
            let mut follower = consumer_config.clone();
            follower
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false");
            let states = States::open(
                &dir,
                base.clone(),
                &producer_config,
                &follower,
                defs_topic,
                inner.kafka_name("sluice.table."),
                &inner.epoch,
                inner.options.timeout,
            )?;
            let _ = inner.states.set(states);
        }
        let asks = patiently(inner.options.timeout, || inner.refresh(true))?;
        inner.publish_sizes(&asks);
        let tail = Tail::new(&consumer_config, &inner, catalog_next, dedupe_next)?;
        let weak = Arc::downgrade(&inner);
        let stop = inner.stop.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-kafka".into())
            .spawn(move || tail.run(weak, stop))
            .map_err(Error::Io)?;
        *inner.follower.lock().expect("follower lock") = Some(handle);
        Ok(Kafka { inner })
    }
}

impl Inner {
    /// The Kafka topic behind Sluice's topic (or internal topic) `name`.
    fn kafka_name(&self, name: &str) -> String {
        format!("{}{name}", self.options.topic_prefix)
    }

    /// Sluice's name for Kafka topic `name`, if it is one of this gateway's.
    fn sluice_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.options.topic_prefix.as_str())
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(self.options.timeout))
    }

    /// Makes one of Sluice's own topics (one partition, replicated like the
    /// others, with the given settings) if the cluster has none yet.
    fn ensure_internal(
        &self,
        name: &str,
        partitions: u32,
        settings: &[(&str, &str)],
    ) -> Result<()> {
        let md = patiently(self.options.timeout, || {
            self.meta
                .fetch_metadata(Some(name), self.options.timeout)
                .map_err(unavailable)
        })?;
        let exists = md
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none());
        if !exists {
            let replication = self.replication()?;
            let mut topic = NewTopic::new(
                name,
                partitions as i32,
                TopicReplication::Fixed(i32::from(replication)),
            );
            for (k, v) in settings {
                topic = topic.set(k, v);
            }
            if replication >= 3 {
                topic = topic.set("min.insync.replicas", "2");
            }
            let results = futures_executor::block_on(
                self.admin.create_topics([&topic], &self.admin_options()),
            )
            .map_err(unavailable)?;
            for r in results {
                match r {
                    Ok(_) => {}
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(Error::Unavailable(format!("creating {name}: {code}")));
                    }
                }
            }
        }
        self.wait_for_leaders(name, partitions as usize);
        Ok(())
    }

    /// Waits (up to the timeout) until every partition of a new topic has a leader.
    fn wait_for_leaders(&self, name: &str, partitions: usize) {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let ready = self
                .meta
                .fetch_metadata(Some(name), self.options.timeout)
                .ok()
                .is_some_and(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && t.partitions().len() == partitions
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                });
            if ready || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The replication factor for new topics.
    fn replication(&self) -> Result<u16> {
        if let Some(r) = self.options.replication {
            return Ok(r);
        }
        let md = patiently(self.options.timeout, || {
            self.meta
                .fetch_metadata(None, self.options.timeout)
                .map_err(unavailable)
        })?;
        Ok((md.brokers().len() as u16).clamp(1, 3))
    }

    /// Reads the cluster's topics into `topics`; with `offsets`, also every
    /// partition's start and end (new topics always get theirs). Ends move as the
    /// tail consumer sees records; this catches retention moving starts. Answers
    /// the size requests for the partitions whose offsets it read.
    fn refresh(&self, offsets: bool) -> Result<SizeAsks> {
        let md = match self.meta.fetch_metadata(None, self.options.timeout) {
            Ok(md) => md,
            Err(e) => {
                self.reachable.store(false, Ordering::Release);
                return Err(unavailable(e));
            }
        };
        self.reachable.store(true, Ordering::Release);
        let opened = self.opened.swap(true, Ordering::AcqRel);
        let catalog = self.catalog.lock().expect("catalog lock").clone();
        let mut seen = HashMap::new();
        // With the offsets, the partitions' sizes: asked of each partition's leader.
        let mut led: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
        for t in md.topics() {
            let Some(name) = self.sluice_name(t.name()) else {
                continue;
            };
            if name.starts_with('_') || t.error().is_some() || t.partitions().is_empty() {
                continue;
            }
            let known = self.topics.read().expect("topics lock").get(name).cloned();
            let entry = match catalog.get(name) {
                Some(e) => *e,
                None => {
                    // A topic the catalog does not name yet may be one another
                    // gateway is making (its catalog record is on the way): it
                    // counts as made elsewhere only if still unnamed a refresh later.
                    let mut waiting = self.unnamed.lock().expect("unnamed lock");
                    if known.is_none() && opened && waiting.insert(name.to_string()) {
                        continue;
                    }
                    waiting.remove(name);
                    Entry::foreign(name)
                }
            };
            let mut fresh = false;
            let topic = match known {
                Some(k)
                    if k.id() == entry.id
                        && k.partition_count() as usize == t.partitions().len() =>
                {
                    k
                }
                _ => {
                    fresh = true;
                    Arc::new(Topic::describe(
                        entry.id,
                        name,
                        entry.config(t.partitions().len() as u32),
                        entry.created_ms,
                    ))
                }
            };
            if !(offsets || fresh) {
                seen.insert(name.to_string(), topic);
                continue;
            }
            for p in t.partitions() {
                if let Ok((low, high)) =
                    self.meta
                        .fetch_watermarks(t.name(), p.id(), self.options.timeout)
                {
                    topic.publish(p.id() as u32, low.max(0) as u64, high.max(0) as u64, None);
                }
                if p.leader() >= 0 {
                    led.entry(p.leader())
                        .or_default()
                        .push((t.name().to_string(), p.id()));
                }
            }
            seen.insert(name.to_string(), topic);
        }
        let mut topics = self.topics.write().expect("topics lock");
        // A topic the catalog still names stays when the metadata left it out
        // or had no leaders for it yet (a broker's metadata lags a topic made
        // a moment ago); only the catalog's tombstone, or a foreign topic
        // leaving the cluster, takes it away.
        for (name, topic) in topics.drain() {
            if !seen.contains_key(&name) && catalog.get(&name).is_some_and(|e| e.id == topic.id()) {
                seen.insert(name, topic);
            }
        }
        *topics = seen;
        drop(topics);
        Ok(size_asks(&md, led))
    }

    /// Asks each broker the sizes of the partitions it leads, as `asks` lists
    /// them, and publishes them on this gateway's topics.
    fn publish_sizes(&self, asks: &SizeAsks) {
        let Some(wire) = &self.wire else {
            return;
        };
        for (addr, partitions) in asks {
            match wire.partition_sizes(addr, partitions) {
                Ok(sizes) => {
                    for ((t, p), bytes) in sizes {
                        if let Some(topic) = self.sluice_name(&t).and_then(|n| self.topic(n)) {
                            topic.publish(p as u32, 0, 0, Some(bytes));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading partition sizes failed"),
            }
        }
    }

    /// Tells the subscribers that a partition's end moved.
    fn grew(&self, topic: &Topic, partition: u32, end: u64) {
        topic.publish(partition, 0, end, None);
        for hook in self.subscribers.read().expect("subscribers lock").iter() {
            hook(topic.id(), partition, end);
        }
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// A topic this gateway does not know yet, looked for in the cluster at
    /// once: the catalog read up to its end, then the topic's metadata. So a
    /// topic made through another gateway a moment ago is found by the first
    /// request that names it, not only after the next refresh. One lookup at a
    /// time, and none within 100 ms of one that found nothing, so requests for
    /// topics that do not exist cost the cluster little.
    fn look_for(&self, name: &str) -> Option<Arc<Topic>> {
        if !sluice_log::valid_name(name) || name.starts_with('_') {
            return None;
        }
        let mut looking = self.looking.lock().expect("looking lock");
        if let Some(t) = self.topic(name) {
            return Some(t);
        }
        if looking.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
            return None;
        }
        let found = self.look_up(name);
        *looking = found.is_none().then(Instant::now);
        found
    }

    fn look_up(&self, name: &str) -> Option<Arc<Topic>> {
        let (_, end) = self
            .meta
            .fetch_watermarks(&self.kafka_name(catalog::TOPIC), 0, SIZES_TIMEOUT)
            .ok()?;
        let (seen, signal) = &self.catalog_seen;
        let guard = seen.lock().expect("catalog seen lock");
        let (guard, _) = signal
            .wait_timeout_while(guard, SIZES_TIMEOUT, |s| *s < end)
            .expect("catalog seen lock");
        drop(guard);
        let entry = *self.catalog.lock().expect("catalog lock").get(name)?;
        let kafka_name = self.kafka_name(name);
        let md = self
            .meta
            .fetch_metadata(Some(&kafka_name), SIZES_TIMEOUT)
            .ok()?;
        let t = md.topics().iter().find(|t| {
            t.name() == kafka_name && t.error().is_none() && !t.partitions().is_empty()
        })?;
        let topic = Arc::new(Topic::describe(
            entry.id,
            name,
            entry.config(t.partitions().len() as u32),
            entry.created_ms,
        ));
        for p in t.partitions() {
            if let Ok((low, high)) = self
                .meta
                .fetch_watermarks(&kafka_name, p.id(), SIZES_TIMEOUT)
            {
                topic.publish(p.id() as u32, low.max(0) as u64, high.max(0) as u64, None);
            }
        }
        let found = self
            .topics
            .write()
            .expect("topics lock")
            .entry(name.to_string())
            .or_insert(topic)
            .clone();
        self.follow_now.store(true, Ordering::Release);
        Some(found)
    }
}

/// The thread that follows the cluster: a consumer at the end of every partition
/// (and of the catalog) that moves ends and wakes subscribers as records arrive,
/// and a metadata refresh every second for topics made or deleted elsewhere and
/// for retention moving starts.
struct Tail {
    consumer: BaseConsumer,
    /// The topics' partitions it follows, by Kafka name (the catalog's and the
    /// dedupe topic's are always assigned).
    assigned: std::collections::BTreeSet<(String, i32)>,
    catalog_topic: String,
    dedupe_topic: String,
}

impl Tail {
    /// A tail that reads the catalog on from `catalog_next` (where loading it
    /// stopped, so no record written in between is missed).
    fn new(
        config: &ClientConfig,
        inner: &Inner,
        catalog_next: i64,
        dedupe_next: i64,
    ) -> Result<Tail> {
        let mut config = config.clone();
        config.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create().map_err(unavailable)?;
        let (catalog_topic, dedupe_topic) = (
            inner.kafka_name(catalog::TOPIC),
            inner.kafka_name(dedupe::TOPIC),
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&catalog_topic, 0, Offset::Offset(catalog_next))
            .map_err(unavailable)?;
        tpl.add_partition_offset(&dedupe_topic, 0, Offset::Offset(dedupe_next))
            .map_err(unavailable)?;
        consumer.assign(&tpl).map_err(unavailable)?;
        Ok(Tail {
            consumer,
            assigned: Default::default(),
            catalog_topic,
            dedupe_topic,
        })
    }

    /// Follows the partitions of topics that appeared from their end, and stops
    /// following those of topics that went; the others keep their place.
    fn reassign(&mut self, inner: &Inner) {
        let mut wanted = std::collections::BTreeSet::new();
        for t in inner.topics.read().expect("topics lock").values() {
            for p in 0..t.partition_count() {
                wanted.insert((inner.kafka_name(t.name()), p as i32));
            }
        }
        let list = |set: &mut dyn Iterator<Item = &(String, i32)>, offset: Option<Offset>| {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in set {
                match offset {
                    Some(o) => {
                        let _ = tpl.add_partition_offset(t, *p, o);
                    }
                    None => {
                        tpl.add_partition(t, *p);
                    }
                }
            }
            tpl
        };
        let gone = list(&mut self.assigned.difference(&wanted), None);
        if gone.count() > 0 && self.consumer.incremental_unassign(&gone).is_err() {
            return;
        }
        let new = list(&mut wanted.difference(&self.assigned), Some(Offset::End));
        if new.count() > 0 && self.consumer.incremental_assign(&new).is_err() {
            return;
        }
        self.assigned = wanted;
    }

    fn run(mut self, inner: std::sync::Weak<Inner>, stop: Arc<AtomicBool>) {
        let mut last_refresh = Instant::now();
        let mut refreshes = 0u64;
        if let Some(i) = inner.upgrade() {
            self.reassign(&i);
        }
        while !stop.load(Ordering::Acquire) {
            let polled = self.consumer.poll(Duration::from_millis(100));
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if let Some(Ok(m)) = polled {
                if m.topic() == self.catalog_topic {
                    if let Some(key) = m.key() {
                        let mut c = inner.catalog.lock().expect("catalog lock");
                        catalog::apply(&mut c, key, m.payload());
                    }
                    let (seen, signal) = &inner.catalog_seen;
                    *seen.lock().expect("catalog seen lock") = m.offset() + 1;
                    signal.notify_all();
                } else if m.topic() == self.dedupe_topic {
                    if let Some(key) = m.key() {
                        let window = inner.options.dedupe_window;
                        let mut d = inner.dedupe.lock().expect("dedupe lock");
                        d.apply(key, m.payload(), window);
                    }
                    let (seen, signal) = &inner.dedupe_seen;
                    *seen.lock().expect("dedupe seen lock") = m.offset() + 1;
                    signal.notify_all();
                } else if let Some(t) = inner.sluice_name(m.topic()).and_then(|n| inner.topic(n)) {
                    inner.grew(&t, m.partition() as u32, m.offset() as u64 + 1);
                }
            }
            if inner.follow_now.swap(false, Ordering::AcqRel) {
                self.reassign(&inner);
            }
            if last_refresh.elapsed() >= Duration::from_secs(1) {
                last_refresh = Instant::now();
                refreshes += 1;
                match inner.refresh(refreshes.is_multiple_of(10)) {
                    // Sizes are asked on a thread of their own, one round at a
                    // time, so a broker slow to answer never holds up the tail.
                    Ok(asks) if !asks.is_empty() && !inner.sizing.swap(true, Ordering::AcqRel) => {
                        let i = inner.clone();
                        spawn("sluice-kafka-sizes", move || {
                            i.publish_sizes(&asks);
                            i.sizing.store(false, Ordering::Release);
                        });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the cluster's metadata failed"),
                }
                self.reassign(&inner);
                inner.readers.rest(READERS_REST);
            }
        }
    }
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(Error::Unsupported(format!(
        "{what} is not offered by the Kafka engine yet"
    )))
}

impl Backend for Kafka {
    fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    fn topic_epoch(&self, topic: &Topic) -> std::borrow::Cow<'_, str> {
        let mut h = Fnv::new();
        h.write(self.inner.epoch.as_bytes());
        h.write(&topic.id().to_be_bytes());
        std::borrow::Cow::Owned(format!("{:016x}", h.0))
    }

    fn health(&self) -> Health {
        Health {
            poisoned: false,
            available: self.inner.reachable.load(Ordering::Acquire),
            disk: None,
            file_bytes: None,
        }
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topic(name)
    }

    fn find_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.look_for(name)
    }

    fn end_offset(&self, topic: &Topic, partition: u32) -> u64 {
        let inner = &self.inner;
        if let Ok((low, high)) = inner.meta.fetch_watermarks(
            &inner.kafka_name(topic.name()),
            partition as i32,
            SIZES_TIMEOUT,
        ) {
            topic.publish(partition, low.max(0) as u64, high.max(0) as u64, None);
        }
        topic.partition(partition).map_or(0, |p| p.end_offset)
    }

    fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .inner
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    fn create_topic(&self, name: &str, config: TopicConfig, reply: Reply<Arc<Topic>>) {
        // Admin calls wait for the cluster: never on the caller's thread.
        let (this, name) = (self.clone(), name.to_string());
        spawn("sluice-kafka-admin", move || {
            reply(this.create_topic_now(&name, config))
        });
    }

    fn delete_topic(&self, name: &str, reply: Reply<()>) {
        let (this, name) = (self.clone(), name.to_string());
        spawn("sluice-kafka-admin", move || {
            reply(this.delete_topic_now(&name))
        });
    }

    fn append(&self, request: AppendRequest, reply: Reply<Vec<(u32, u64)>>) {
        let unseen = {
            let dedupe = self.inner.dedupe.lock().expect("dedupe lock");
            request.units.iter().any(|u| {
                u.dedupe_key
                    .as_ref()
                    .is_some_and(|k| !dedupe.offsets.contains_key(&(request.topic_id, k.clone())))
            })
        };
        if unseen {
            self.check_then_append(request, reply);
        } else {
            self.append_now(request, reply);
        }
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
        let mut info = topic.partition_checked(partition)?;
        if from > info.end_offset || from < info.start_offset {
            // Another gateway may have written since, or retention moved on.
            if let Ok((low, high)) = self.inner.meta.fetch_watermarks(
                &self.inner.kafka_name(topic.name()),
                partition as i32,
                self.inner.options.timeout,
            ) {
                topic.publish(partition, low.max(0) as u64, high.max(0) as u64, None);
                info = topic.partition_checked(partition)?;
            }
        }
        if from < info.start_offset || from > info.end_offset {
            return Err(Error::OffsetOutOfRange {
                offset: from,
                start: info.start_offset,
                end: info.end_offset,
            });
        }
        let read = self.inner.readers.read(
            &self.inner.kafka_name(topic.name()),
            partition,
            from,
            info.start_offset,
            info.end_offset,
            max_records,
            max_bytes,
            visit,
        );
        match read {
            // Retention removed what the read asked for: say where the partition
            // starts now, so the reader can go on from there.
            Err(Error::OffsetOutOfRange { .. }) => {
                let (low, high) = self
                    .inner
                    .meta
                    .fetch_watermarks(
                        &self.inner.kafka_name(topic.name()),
                        partition as i32,
                        self.inner.options.timeout,
                    )
                    .map_err(unavailable)?;
                topic.publish(partition, low.max(0) as u64, high.max(0) as u64, None);
                let info = topic.partition_checked(partition)?;
                Err(Error::OffsetOutOfRange {
                    offset: from,
                    start: info.start_offset,
                    end: info.end_offset,
                })
            }
            other => other,
        }
    }

    fn offset_for_timestamp(
        &self,
        topic: &Topic,
        partition: u32,
        timestamp_ms: u64,
    ) -> Result<u64> {
        let info = topic.partition_checked(partition)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.inner.kafka_name(topic.name()),
            partition as i32,
            Offset::Offset(timestamp_ms as i64),
        )
        .map_err(unavailable)?;
        // A topic made a moment ago may not be in the client's metadata yet.
        let found = retry(self.inner.options.timeout, || {
            self.inner
                .meta
                .offsets_for_times(tpl.clone(), self.inner.options.timeout)
        })?;
        let offset = found
            .elements()
            .first()
            .map(|e| e.offset())
            .unwrap_or(Offset::End);
        Ok(match offset {
            Offset::Offset(o) if o >= 0 => o as u64,
            _ => info.end_offset,
        })
    }

    fn refresh_sizes(&self, topic: &Topic) {
        let inner = &self.inner;
        // Only when sizes can be read, and only while the cluster answers: a
        // topic's description never waits long for them.
        if inner.wire.is_none() || !inner.reachable.load(Ordering::Acquire) {
            return;
        }
        let name = inner.kafka_name(topic.name());
        let Ok(md) = inner.meta.fetch_metadata(Some(&name), SIZES_TIMEOUT) else {
            return;
        };
        let mut led: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
        for t in md.topics().iter().filter(|t| t.name() == name) {
            for p in t.partitions().iter().filter(|p| p.leader() >= 0) {
                led.entry(p.leader())
                    .or_default()
                    .push((name.clone(), p.id()));
            }
        }
        inner.publish_sizes(&size_asks(&md, led));
    }

    fn subscribe(&self, hook: AppendHook) {
        self.inner
            .subscribers
            .write()
            .expect("subscribers lock")
            .push(hook);
    }

    fn commit_offsets(&self, group: &str, offsets: Vec<(Arc<Topic>, u32, u64)>, reply: Reply<()>) {
        let offsets: Vec<(String, u32, u64)> = offsets
            .iter()
            .map(|(t, p, o)| (t.name().to_string(), *p, *o))
            .collect();
        reply(
            self.groups()
                .and_then(|g| g.commit_as_admin(group, &offsets)),
        );
    }
    fn committed_offsets(&self, group: &str, topic: &Topic) -> Result<Vec<Option<u64>>> {
        self.groups()?.committed(group, topic)
    }
    fn committed_groups(&self) -> Result<Vec<(String, Vec<Arc<Topic>>)>> {
        let Ok(groups) = self.groups() else {
            return Ok(Vec::new());
        };
        Ok(groups
            .committed_groups()?
            .into_iter()
            .map(|(g, ts)| (g, ts.iter().filter_map(|t| self.topic(t)).collect()))
            .collect())
    }
    fn delete_group(&self, group: &str, reply: Reply<usize>) {
        reply(self.groups().and_then(|g| g.delete(group)));
    }
    fn cluster_groups(&self) -> Option<Arc<dyn ClusterGroups>> {
        let groups: Arc<dyn ClusterGroups> = self.inner.groups.clone()?;
        Some(groups)
    }
    fn reserve_fencing_tokens(&self) -> Result<Range<u64>> {
        unsupported("the consumer-group store")
    }
    fn shards(&self, partitions: u32) -> u32 {
        partitions
            .min(self.inner.options.table_shards.unwrap_or(u32::MAX))
            .max(1)
    }
    fn create_store(
        &self,
        name: &str,
        definition: Vec<u8>,
        offsets: Vec<u64>,
        shards: u32,
        reply: Reply<()>,
    ) {
        // The table's lease is a group membership: without group calls no
        // gateway could tell whether it may write.
        let states = self.groups().and_then(|_| self.states());
        reply(states.and_then(|s| {
            let changelog =
                self.inner
                    .kafka_name(&format!("{}{name}.{}", crate::state::CHANGELOGS, now_ms()));
            if changelog.len() > 249 {
                return Err(Error::Invalid(format!(
                    "table name '{name}' is too long for a Kafka changelog topic"
                )));
            }
            if shards == 0 || shards > sluice_log::MAX_PARTITIONS {
                return Err(Error::Invalid(format!("{shards} shards")));
            }
            self.inner
                .ensure_internal(&changelog, shards, &[("cleanup.policy", "compact")])?;
            s.create(name, changelog, definition, offsets, shards)
        }));
    }
    fn update_store(&self, name: &str, definition: Vec<u8>, reply: Reply<()>) {
        reply(self.states().and_then(|s| s.update(name, definition)))
    }
    fn drop_store(&self, name: &str, reply: Reply<()>) {
        reply(self.states().and_then(|s| {
            let changelog = s.drop_store(name)?;
            let deleted = futures_executor::block_on(
                self.inner
                    .admin
                    .delete_topics(&[changelog.as_str()], &self.inner.admin_options()),
            );
            if let Err(e) = deleted {
                tracing::warn!(topic = %changelog, error = %e, "deleting a table's changelog");
            }
            Ok(())
        }));
    }
    fn stores(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .inner
            .states
            .get()
            .map(|s| s.stores())
            .unwrap_or_default())
    }
    fn open_writer(&self, store: &str, shard: u32) -> Result<u64> {
        self.states()?.open_writer(store, shard)
    }
    fn commit_state(
        &self,
        store: &str,
        shard: u32,
        epoch: u64,
        mut batch: StateBatch,
        reply: Reply<()>,
    ) {
        let (topics, outputs): (Vec<Arc<Topic>>, Vec<crate::state::Output>) =
            match self.outputs(std::mem::take(&mut batch.appends)) {
                Ok(o) => o.into_iter().unzip(),
                Err(e) => return reply(Err(e)),
            };
        let written = self
            .states()
            .and_then(|s| s.commit(store, shard, epoch, batch, &outputs));
        // The appended records are readable here at once, as an append's are.
        if let Ok(written) = &written {
            for (topic, ends) in topics.iter().zip(written) {
                for &(p, end) in ends {
                    let now = topic.partition(p).map_or(0, |i| i.end_offset);
                    if end > now {
                        self.inner.grew(topic, p, end);
                    }
                }
            }
        }
        reply(written.map(drop));
    }
    fn read_state(&self, store: &str, keys: &[&str], partitions: u32) -> Result<StateRead> {
        self.states()?.read(store, keys, partitions)
    }
    fn scan_state(
        &self,
        store: &str,
        from: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<()> {
        self.states()?.scan(store, from, visit)
    }
    fn state_stats(&self, store: &str) -> Result<StoreStats> {
        self.states()?.stats(store)
    }
    fn may_write(&self, store: &str, shard: u32) -> Result<bool> {
        let groups = self.groups()?;
        self.states()?.may_write(store, shard, |changelogs| {
            groups.leases(crate::state::LEASE_GROUP, &self.inner.holder, changelogs)
        })
    }
    fn writes_store(&self, store: &str) -> Option<Vec<u32>> {
        Some(
            self.inner
                .states
                .get()
                .map(|s| s.holds_lease(store))
                .unwrap_or_default(),
        )
    }
    fn release_stores(&self) {
        let (Some(states), Some(groups)) = (self.inner.states.get(), &self.inner.groups) else {
            return;
        };
        let held = states.release_leases();
        if held.is_empty() {
            return;
        }
        match groups.release(crate::state::LEASE_GROUP, &self.inner.holder) {
            Ok(()) => {
                for store in held {
                    tracing::info!(table = %store, "handed the table over");
                }
            }
            Err(e) => tracing::warn!(error = %e, "handing the tables over"),
        }
    }
    fn subscribe_state(&self, hook: sluice_log::StateHook) -> bool {
        match self.inner.states.get() {
            Some(s) => {
                s.subscribe(hook);
                true
            }
            None => false,
        }
    }
    fn snapshot(&self, reply: Reply<(std::fs::File, u64)>) {
        reply(Err(Error::Unsupported(
            "backups of a Kafka cluster are Kafka's own (replication, MirrorMaker, broker \
             snapshots); /v1/backup copies the embedded engine only"
                .into(),
        )));
    }
}

impl Kafka {
    fn create_topic_now(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        let inner = &self.inner;
        if !sluice_log::valid_name(name) || name.starts_with('_') {
            return Err(Error::Invalid(
                "topic names are 1 to 249 characters of [A-Za-z0-9._-], not starting with _".into(),
            ));
        }
        if inner.kafka_name(name).len() > 249 {
            return Err(Error::Invalid(format!(
                "topic names are at most {} characters here (Kafka's 249, less the \
                 gateway's topic prefix)",
                249 - inner.options.topic_prefix.len()
            )));
        }
        if config.partitions == 0 || config.partitions > sluice_log::MAX_PARTITIONS {
            return Err(Error::Invalid(format!(
                "partitions must be between 1 and {}",
                sluice_log::MAX_PARTITIONS
            )));
        }
        if inner.topic(name).is_some() {
            return Err(Error::TopicExists(name.to_string()));
        }
        let replication = inner.replication()?;
        let (retention_ms, retention_bytes, tombstones);
        let kafka_name = inner.kafka_name(name);
        let mut topic = NewTopic::new(
            &kafka_name,
            config.partitions as i32,
            TopicReplication::Fixed(i32::from(replication)),
        );
        if replication >= 3 {
            topic = topic.set("min.insync.replicas", "2");
        }
        if let Some(ms) = config.retention_ms {
            retention_ms = ms.to_string();
            topic = topic.set("retention.ms", &retention_ms);
        }
        if let Some(b) = config.retention_bytes {
            retention_bytes = b.to_string();
            topic = topic.set("retention.bytes", &retention_bytes);
        }
        if let Some(c) = config.compaction {
            tombstones = c.tombstone_retention_ms.to_string();
            topic = topic
                .set("cleanup.policy", "compact")
                .set("delete.retention.ms", &tombstones);
        }
        // The catalog names the topic before the cluster has it, so every gateway
        // that sees it in the cluster's metadata already knows its id.
        let entry = Entry {
            id: rand_id(),
            created_ms: now_ms(),
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            compaction: config.compaction,
        };
        let previous = inner
            .catalog
            .lock()
            .expect("catalog lock")
            .get(name)
            .copied();
        let value = serde_json::to_vec(&entry).expect("an entry serializes");
        self.write_catalog(name, Some(&value))?;
        inner
            .catalog
            .lock()
            .expect("catalog lock")
            .insert(name.to_string(), entry);
        if let Err(e) = self.create_in_cluster(name, &topic) {
            // Put the catalog back as it was.
            let back = previous.map(|p| serde_json::to_vec(&p).expect("an entry serializes"));
            if self.write_catalog(name, back.as_deref()).is_ok() {
                let mut c = inner.catalog.lock().expect("catalog lock");
                match previous {
                    Some(p) => c.insert(name.to_string(), p),
                    None => c.remove(name),
                };
            }
            return Err(e);
        }
        let partitions = config.partitions as usize;
        let topic = Arc::new(Topic::describe(entry.id, name, config, entry.created_ms));
        // The topic's partitions may take a moment to have leaders; wait for them,
        // so the first append does not meet an unknown partition.
        inner.wait_for_leaders(&kafka_name, partitions);
        inner
            .topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Creates the topic in the cluster. A topic of that name deleted a moment ago
    /// may still be going away: its name is taken until then.
    fn create_in_cluster(&self, name: &str, topic: &NewTopic<'_>) -> Result<()> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.options.timeout;
        loop {
            let results = futures_executor::block_on(
                inner.admin.create_topics([topic], &inner.admin_options()),
            )
            .map_err(unavailable)?;
            match results.into_iter().next() {
                Some(Ok(_)) | None => return Ok(()),
                Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => {
                    if inner.topic(name).is_some() || Instant::now() >= deadline {
                        return Err(Error::TopicExists(name.to_string()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(Err((_, code))) => return Err(Error::Unavailable(format!("{code}"))),
            }
        }
    }

    fn delete_topic_now(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        if inner.topic(name).is_none() {
            return Err(Error::TopicNotFound(name.to_string()));
        }
        let results = futures_executor::block_on(
            inner
                .admin
                .delete_topics(&[&inner.kafka_name(name)], &inner.admin_options()),
        )
        .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(Error::TopicNotFound(name.to_string()));
                }
                Err((_, code)) => return Err(Error::Unavailable(format!("{code}"))),
            }
        }
        self.write_catalog(name, None)?;
        inner.catalog.lock().expect("catalog lock").remove(name);
        inner.topics.write().expect("topics lock").remove(name);
        Ok(())
    }

    /// Writes a catalog record and waits for its acknowledgement.
    fn write_catalog(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let batch = Arc::new(Batch {
            offsets: Mutex::new(vec![(0, 0)]),
            failed: Mutex::new(None),
            left: AtomicUsize::new(1),
            reply: Mutex::new(Some(Box::new(move |r: Result<Vec<(u32, u64)>>| {
                let _ = tx.send(r);
            }))),
        });
        let catalog_topic = self.inner.kafka_name(catalog::TOPIC);
        let mut record = BaseRecord::with_opaque_to(
            &catalog_topic,
            Box::new(Delivery {
                batch: batch.clone(),
                index: 0,
            }),
        )
        .partition(0)
        .key(name);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Err((e, _)) = self.inner.producer.send::<str, [u8]>(record) {
            return Err(unavailable(e));
        }
        rx.recv().unwrap_or(Err(Error::Closed)).map(|_| ())
    }

    /// `written` (where each of `records` went) with the offsets Kafka left
    /// unknown found: each such record is read back from the first offset at its
    /// timestamp, the first record equal to it that no other of `records` took.
    /// Refused with [`Error::Unavailable`] when one is not found. An append calls
    /// it for the records Kafka acknowledged at [`UNKNOWN_OFFSET`].
    pub fn find_unknown(
        &self,
        topic: &Topic,
        records: &[sluice_log::NewRecord],
        mut written: Vec<(u32, u64)>,
    ) -> Result<Vec<(u32, u64)>> {
        let mut taken: std::collections::HashSet<(u32, u64)> = written
            .iter()
            .copied()
            .filter(|(_, o)| *o != UNKNOWN_OFFSET)
            .collect();
        for (i, r) in records.iter().enumerate() {
            let (p, o) = written[i];
            if o != UNKNOWN_OFFSET {
                continue;
            }
            let ours = RecordView::decode(&r.bytes).expect("checked before it was sent");
            // The end this gateway knows may not cover the record yet.
            self.end_offset(topic, p);
            let mut from = self.offset_for_timestamp(topic, p, ours.timestamp)?;
            let stop = from + FIND_WITHIN;
            let mut found = None;
            while found.is_none() && from < stop {
                let outcome = self.read(topic, p, from, 1000, usize::MAX, &mut |at, view| {
                    if found.is_none()
                        && !taken.contains(&(p, at))
                        && view.timestamp == ours.timestamp
                        && view.key == ours.key
                        && view.kind == ours.kind
                        && view.value == ours.value
                        && view.headers().eq(ours.headers())
                    {
                        found = Some(at);
                    }
                })?;
                if outcome.records == 0 {
                    break;
                }
                from = outcome.next_offset;
            }
            let Some(at) = found else {
                return Err(Error::Unavailable(format!(
                    "Kafka acknowledged a record of partition {p} without its offset, \
                     and it was not found there"
                )));
            };
            tracing::info!(
                partition = p,
                offset = at,
                "found where an acknowledged record was written"
            );
            taken.insert((p, at));
            written[i] = (p, at);
        }
        Ok(written)
    }

    /// A state batch's appends, checked against their topics: each topic, and
    /// its records under its Kafka name.
    fn outputs(
        &self,
        appends: Vec<AppendRequest>,
    ) -> Result<Vec<(Arc<Topic>, crate::state::Output)>> {
        let inner = &self.inner;
        appends
            .into_iter()
            .map(|a| {
                let topic = match inner.topic(&a.topic) {
                    Some(t) if t.id() == a.topic_id => t,
                    _ => return Err(Error::TopicNotFound(a.topic)),
                };
                a.check(topic.partition_count(), topic.config().compaction.is_some())?;
                let records = a.units.into_iter().flat_map(|u| u.records).collect();
                let name = inner.kafka_name(topic.name());
                Ok((topic, (name, records)))
            })
            .collect()
    }

    fn append_now(&self, request: AppendRequest, reply: Reply<Vec<(u32, u64)>>) {
        let inner = &self.inner;
        let topic = match inner.topic(&request.topic) {
            Some(t) if t.id() == request.topic_id => t,
            _ => return reply(Err(Error::TopicNotFound(request.topic))),
        };
        // Units already written under their dedupe key answer their first offsets.
        let window = inner.options.dedupe_window;
        let mut known: Vec<Option<Vec<(u32, u64)>>> = Vec::with_capacity(request.units.len());
        {
            let mut dedupe = inner.dedupe.lock().expect("dedupe lock");
            dedupe.expire(window);
            for u in &request.units {
                known.push(
                    u.dedupe_key
                        .as_ref()
                        .and_then(|k| dedupe.offsets.get(&(topic.id(), k.clone())))
                        .cloned(),
                );
            }
        }
        if let Err(e) = request.check(topic.partition_count(), topic.config().compaction.is_some())
        {
            return reply(Err(e));
        }
        // What the answer needs of each unit, and the records to send.
        let mut to_send = Vec::new();
        let mut shapes = Vec::with_capacity(request.units.len());
        for (u, k) in request.units.into_iter().zip(known) {
            shapes.push((u.records.len(), u.dedupe_key, k.clone()));
            if k.is_none() {
                to_send.extend(u.records);
            }
        }
        let to_send = Arc::new(to_send);
        let (finder, sent, topic3) = (self.clone(), to_send.clone(), topic.clone());
        let this = self.clone();
        let topic2 = topic.clone();
        let answer = move |written: Result<Vec<(u32, u64)>>| {
            let written = match written {
                Ok(w) => w,
                Err(e) => return reply(Err(e)),
            };
            let mut answer = Vec::new();
            let mut keyed = Vec::new();
            let mut taken = written.into_iter();
            let mut dedupe = this.inner.dedupe.lock().expect("dedupe lock");
            for (len, key, first) in shapes {
                match first {
                    Some(first) => answer.extend(first),
                    None => {
                        let offsets: Vec<(u32, u64)> = taken.by_ref().take(len).collect();
                        if let Some(key) = key {
                            let key = (topic2.id(), key);
                            dedupe.remember(key.clone(), offsets.clone());
                            keyed.push((key, offsets.clone()));
                        }
                        answer.extend(offsets);
                    }
                }
            }
            drop(dedupe);
            let mut ends: HashMap<u32, u64> = HashMap::new();
            for (p, o) in &answer {
                let e = ends.entry(*p).or_default();
                *e = (*e).max(o + 1);
            }
            for (p, end) in ends {
                this.inner.grew(&topic2, p, end);
            }
            // Other gateways learn of the keys before the client hears back.
            this.remember_everywhere(keyed, Box::new(move |()| reply(Ok(answer))));
        };
        let finish = move |written: Result<Vec<(u32, u64)>>| match written {
            Ok(w) if w.iter().any(|(_, o)| *o == UNKNOWN_OFFSET) => {
                // Finding them reads partitions: not on the client's delivery thread.
                std::thread::spawn(move || answer(finder.find_unknown(&topic3, &sent, w)));
            }
            written => answer(written),
        };
        if to_send.is_empty() {
            return finish(Ok(Vec::new()));
        }
        let batch = Arc::new(Batch {
            offsets: Mutex::new(vec![(0, 0); to_send.len()]),
            failed: Mutex::new(None),
            left: AtomicUsize::new(to_send.len()),
            reply: Mutex::new(Some(Box::new(finish))),
        });
        let kafka_name = inner.kafka_name(topic.name());
        for (index, r) in to_send.iter().enumerate() {
            let view = RecordView::decode(&r.bytes).expect("checked above");
            let out = outgoing(&view);
            let delivery = Box::new(Delivery {
                batch: batch.clone(),
                index,
            });
            let mut record: BaseRecord<'_, str, [u8], Box<Delivery>> =
                BaseRecord::with_opaque_to(&kafka_name, delivery)
                    .partition(r.partition as i32)
                    .timestamp(out.timestamp);
            if let Some(k) = out.key {
                record = record.key(k);
            }
            if let Some(v) = out.value {
                record = record.payload(v);
            }
            if let Some(h) = out.headers {
                record = record.headers(h);
            }
            loop {
                match inner.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        // librdkafka's queue is full: wait for acknowledgements.
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => {
                        batch.done(index, Err(unavailable(e)));
                        break;
                    }
                }
            }
        }
    }
}

/// FNV-1a, for ids and epochs derived from names.
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish() & !(1 << 63)
}

/// An append waiting for the dedupe check, with its answer.
type Check = (AppendRequest, Reply<Offsets>);

/// Runs `op` until it succeeds or `timeout` passes, for calls that fail while the
/// cluster's metadata catches up (a partition of a topic made a moment ago).
fn retry<T>(
    timeout: Duration,
    mut op: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// Runs `f` on a thread of its own.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::error!(error = %e, "could not start a thread");
    }
}

impl Kafka {
    /// Hands an append with dedupe keys this gateway has not seen to the checker
    /// thread, which reads the dedupe topic up to its end first.
    fn check_then_append(&self, request: AppendRequest, reply: Reply<Offsets>) {
        let mut checks = self.inner.checks.lock().expect("checks lock");
        let tx = checks.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let this = self.clone();
            spawn("sluice-kafka-dedupe", move || this.checker(rx));
            tx
        });
        if let Err(back) = tx.send((request, reply)) {
            let (_, reply) = back.0;
            reply(Err(Error::Closed));
        }
    }

    /// The checker: takes every append waiting, reads the dedupe topic's end once
    /// for all of them, waits until the tail has read up to it, then appends
    /// them (now knowing every key written before).
    fn checker(&self, rx: std::sync::mpsc::Receiver<Check>) {
        let inner = &self.inner;
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            let caught_up = inner
                .meta
                .fetch_watermarks(&inner.kafka_name(dedupe::TOPIC), 0, inner.options.timeout)
                .map_err(unavailable)
                .and_then(|(_, end)| {
                    let (seen, signal) = &inner.dedupe_seen;
                    let guard = seen.lock().expect("dedupe seen lock");
                    let (guard, timeout) = signal
                        .wait_timeout_while(guard, inner.options.timeout, |s| *s < end)
                        .expect("dedupe seen lock");
                    drop(guard);
                    if timeout.timed_out() {
                        Err(Error::Unavailable(
                            "the dedupe topic could not be read up to its end".into(),
                        ))
                    } else {
                        Ok(())
                    }
                });
            for (request, reply) in waiting {
                match &caught_up {
                    Ok(()) => self.append_now(request, reply),
                    Err(e) => reply(Err(Error::Unavailable(e.to_string()))),
                }
            }
            if inner.stop.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Writes dedupe records for units just written, then calls `done` (also if
    /// writing them failed: the records themselves are written, and are logged).
    fn remember_everywhere(
        &self,
        keyed: Vec<(dedupe::Key, Offsets)>,
        done: Box<dyn FnOnce(()) + Send>,
    ) {
        if keyed.is_empty() {
            return done(());
        }
        let batch = Arc::new(Batch {
            offsets: Mutex::new(vec![(0, 0); keyed.len()]),
            failed: Mutex::new(None),
            left: AtomicUsize::new(keyed.len()),
            reply: Mutex::new(Some(Box::new(move |r: Result<Offsets>| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "a dedupe record was not written; a retry through another gateway may be written again");
                }
                done(())
            }))),
        });
        let dedupe_topic = self.inner.kafka_name(dedupe::TOPIC);
        for (index, (key, offsets)) in keyed.iter().enumerate() {
            let (k, v) = (dedupe::record_key(key), dedupe::record_value(offsets));
            let record: BaseRecord<'_, [u8], [u8], Box<Delivery>> = BaseRecord::with_opaque_to(
                &dedupe_topic,
                Box::new(Delivery {
                    batch: batch.clone(),
                    index,
                }),
            )
            .partition(0)
            .key(k.as_slice())
            .payload(v.as_slice());
            if let Err((e, _)) = self.inner.producer.send(record) {
                batch.done(index, Err(unavailable(e)));
            }
        }
    }
}
