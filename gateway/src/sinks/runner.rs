//! One sink's runner: the task that drives its state machine (see the module
//! above). Every round it follows changes of the stored definition (pause, a
//! replay, secrets), takes up or lets go of shards as the engine allows, reads
//! records into the machine's windows, sends what the machine hands out,
//! writes dead letters, and commits checkpoints (at most every
//! [`COMMIT_EVERY`]); then it waits for an answer, an append to its topic, a
//! timer or a call of the API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sluice_log::{AppendRequest, AppendUnit, Backend, RecordParts, RecordView, Topic, ValueKind};
use sluice_openapi::SinkError;
use sluice_sinks::sign::Sealer;
use sluice_sinks::{Delivery, Entry, Next, PartRow, Policy, Sink, Stored};
use tokio::sync::mpsc;

use super::deliver::{self, Client, Payload, Request, Sent};
use super::{Fault, Live, now_ms, start_offset};

/// How often progress is committed, at most.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// How often the runner asks whether it may write each shard.
const OWN_EVERY: Duration = Duration::from_secs(1);
/// How often the runner tells the API where it stands, at most.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Records read from a partition at once, at most.
const READ_RECORDS: usize = 2_000;
const READ_BYTES: usize = 1 << 20;

/// What the API sees of a partition this gateway delivers.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartStatus {
    pub cursor: u64,
    pub counts: PartRow,
    /// Timestamp of the record at the cursor (`None`: caught up).
    pub oldest_ms: Option<u64>,
}

/// What the API sees of a runner.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub parts: HashMap<u32, PartStatus>,
    /// Over a cluster (partitions are delivered by whichever gateway holds
    /// their shard).
    pub clustered: bool,
    pub failing: bool,
    pub next_attempt_ms: Option<u64>,
    pub last_error: Option<SinkError>,
}

/// The secrets that sign now, opened, with when each stops.
pub(crate) type Secrets = Vec<(String, Option<u64>)>;

pub(crate) fn open_secrets(sealer: Option<&Sealer>, stored: &Stored) -> Result<Secrets, Fault> {
    let now = now_ms();
    let mut out = Vec::new();
    for s in stored.live_secrets(now) {
        let sealer = sealer.ok_or_else(|| {
            Fault::Invalid("signing secrets need --sink-secret-key on this engine".into())
        })?;
        out.push((sealer.open(&stored.sink.name, &s.sealed)?, s.until_ms));
    }
    Ok(out)
}

/// What a request's headers say of its records.
pub(crate) struct Meta<'a> {
    pub id: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub key: Option<&'a str>,
    pub attempt: u32,
    pub records: usize,
}

/// Where and how a sink's requests go.
pub(crate) struct Endpoint<'a> {
    /// The URL parsed already, if it was.
    pub url: Option<&'a reqwest::Url>,
    pub stored: &'a Stored,
    pub policy: &'a Policy,
    pub secrets: &'a Secrets,
}

/// A signed request of a sink.
pub(crate) fn request(
    to: Endpoint<'_>,
    meta: Meta<'_>,
    body: bytes::Bytes,
    content_type: &'static str,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<Request, String> {
    let Endpoint {
        url,
        stored,
        policy,
        secrets,
    } = to;
    let url = match url {
        Some(u) => u.clone(),
        None => reqwest::Url::parse(&stored.sink.url).map_err(|e| e.to_string())?,
    };
    let mut h = HeaderMap::new();
    if let Some(user) = &stored.sink.headers {
        for (k, v) in user {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
    }
    let num = |v: u64| HeaderValue::from(v);
    h.insert("content-type", HeaderValue::from_static(content_type));
    let ts = now_ms() / 1000;
    h.insert(
        "webhook-id",
        HeaderValue::from_str(meta.id).map_err(|e| e.to_string())?,
    );
    h.insert("webhook-timestamp", num(ts));
    if policy.signed {
        let now = now_ms();
        let live: Vec<String> = secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| u > now))
            .map(|(s, _)| s.clone())
            .collect();
        let sig =
            sluice_sinks::sign::signature(&live, meta.id, ts, &body).map_err(|e| e.to_string())?;
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
        );
    }
    if let Ok(v) = HeaderValue::from_str(meta.topic) {
        h.insert("sluice-topic", v);
    }
    h.insert("sluice-partition", num(u64::from(meta.partition)));
    h.insert("sluice-offset", num(meta.first));
    if meta.records > 1 {
        h.insert("sluice-last-offset", num(meta.last));
    }
    h.insert("sluice-records", num(meta.records as u64));
    h.insert("sluice-attempt", num(u64::from(meta.attempt)));
    if let Some(k) = meta.key
        && let Ok(v) = HeaderValue::from_str(k)
    {
        h.insert("sluice-key", v);
    }
    for (k, v) in extra {
        h.insert(k.clone(), v.clone());
    }
    Ok(Request {
        url,
        headers: h,
        body,
        timeout: Duration::from_millis(policy.timeout_ms),
    })
}

/// Resolves when the table (if any) applied a batch; never without one.
async fn table_changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

type Answer = (u64, Sent);

/// A request in flight, as the attempt log names it.
struct Flight {
    id: String,
    partition: u32,
    offsets: (u64, u64),
    records: u32,
    attempt: u32,
    at_ms: u64,
}

/// What a sink reads, on a blocking thread: a topic's records, or a table's
/// rows as the records of its source change them.
struct Source {
    log: Arc<dyn Backend>,
    topic: Arc<Topic>,
    epoch: String,
    filter: Option<sluice_tables::Filter>,
    format: sluice_openapi::SinkFormat,
    table: Option<(String, Arc<sluice_tables::Engine>)>,
}

type Read = (
    sluice_log::Result<sluice_log::ReadOutcome>,
    Vec<(u64, Option<Entry<Payload>>)>,
);

impl Source {
    fn entry(&self, p: u32, o: u64, r: &RecordView<'_>, key: Option<&str>) -> Entry<Payload> {
        let id = sluice_sinks::event_id(&self.epoch, self.topic.name(), p, o);
        let f = deliver::format(self.format, id, self.topic.name(), p, o, r);
        Entry {
            key: key.map(key_hash),
            bytes: f.body.len() + 64,
            timestamp_ms: r.timestamp,
            payload: Arc::new(f),
        }
    }

    fn passes(&self, kind: ValueKind, value: &[u8]) -> bool {
        self.filter.as_ref().is_none_or(|f| {
            kind == ValueKind::Json
                && serde_json::from_slice::<serde_json::Value>(value).is_ok_and(|v| f.matches(&v))
        })
    }

    fn read(&self, p: u32, from: u64, room: usize) -> Read {
        let mut records = Vec::new();
        let Some((table, tables)) = &self.table else {
            let res = self
                .log
                .read(&self.topic, p, from, room, READ_BYTES, &mut |o, r| {
                    let e = self
                        .passes(r.kind, r.value)
                        .then(|| self.entry(p, o, &r, r.key));
                    records.push((o, e));
                });
            return (res, records);
        };
        // The row each record changed, read once the table applied it.
        let mut changed: Vec<(u64, u64, Option<String>)> = Vec::new();
        let res = self
            .log
            .read(&self.topic, p, from, room, READ_BYTES, &mut |o, r| {
                let key = tables
                    .rows_of(table, &r)
                    .ok()
                    .and_then(|k| k.into_iter().next());
                changed.push((o, r.timestamp, key));
            });
        for (o, ts, key) in changed {
            let Some(key) = key else {
                records.push((o, None));
                continue;
            };
            let row = match tables.get(table, &key) {
                Ok(r) => r.map_or(serde_json::Value::Null, |(row, _)| row),
                Err(e) => return (Err(table_error(e)), records),
            };
            let value =
                serde_json::to_vec(&serde_json::json!({"table": table, "key": key, "row": row}))
                    .expect("serializes");
            let passes = row.is_null() || self.filter.as_ref().is_none_or(|f| f.matches(&row));
            let view = RecordView::plain(ts, Some(&key), ValueKind::Json, &value);
            records.push((o, passes.then(|| self.entry(p, o, &view, Some(&key)))));
        }
        (res, records)
    }
}

fn table_error(e: sluice_tables::Error) -> sluice_log::Error {
    match e {
        sluice_tables::Error::Log(e) => e,
        other => sluice_log::Error::Invalid(other.to_string()),
    }
}

struct Runner {
    name: String,
    store: String,
    log: Arc<dyn Backend>,
    client: Client,
    sealer: Option<Sealer>,
    live: Arc<Live>,
    topic: Arc<Topic>,
    epoch: String,
    policy: Policy,
    filter: Option<sluice_tables::Filter>,
    machine: Sink<Payload>,
    /// Shards held, with their writer epochs.
    writers: BTreeMap<u32, u64>,
    shards: u32,
    stored: Stored,
    secrets: Secrets,
    /// Partitions read to their end since the topic last grew.
    at_end: HashSet<u32>,
    /// Answers of the requests in flight, by delivery id.
    answers: (
        mpsc::UnboundedSender<Answer>,
        mpsc::UnboundedReceiver<Answer>,
    ),
    /// Deliveries in flight, for the attempt log.
    flights: HashMap<u64, Flight>,
    next_slot: Instant,
    reported_gone: bool,
    /// The endpoint, parsed once.
    url: Option<reqwest::Url>,
    /// The table whose row changes it pushes, if it does.
    table: Option<String>,
    tables: Arc<sluice_tables::Engine>,
    /// Changes when the table applies a batch.
    table_changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// The version of the stored definition taken in.
    seen_version: u64,
    /// The source topic was deleted.
    topic_gone: bool,
}

/// Runs sink `name` until its task is aborted.
pub(crate) async fn run(
    name: String,
    log: Arc<dyn Backend>,
    tables: (Arc<sluice_tables::Engine>, Arc<crate::state::TableWaiters>),
    client: Client,
    sealer: Option<Sealer>,
    live: Arc<Live>,
) {
    let stored = live.stored.lock().expect("stored lock").clone();
    let fail = |msg: String| {
        live.status.lock().expect("status lock").last_error = Some(SinkError {
            at_ms: now_ms(),
            status: None,
            message: msg,
        });
    };
    let (policy, filter) = match sluice_sinks::check(&stored.sink) {
        Ok(x) => x,
        Err(e) => return fail(e.to_string()),
    };
    let secrets = match open_secrets(sealer.as_ref(), &stored) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e:?}")),
    };
    let topic = loop {
        match log
            .topic(&stored.topic)
            .filter(|t| t.id() == stored.topic_id)
        {
            Some(t) => break t,
            None => {
                fail(format!("source topic '{}' is gone", stored.topic));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let store = sluice_sinks::store_name(&name);
    live.status.lock().expect("status lock").clustered = log.writes_store(&store).is_some();
    let mut r = Runner {
        epoch: log.topic_epoch(&topic).into_owned(),
        name,
        store,
        client,
        sealer,
        topic,
        machine: Sink::new(policy.clone()),
        policy,
        filter,
        writers: BTreeMap::new(),
        shards: stored.shards.max(1),
        secrets,
        at_end: HashSet::new(),
        answers: mpsc::unbounded_channel(),
        flights: HashMap::new(),
        next_slot: Instant::now(),
        reported_gone: false,
        url: reqwest::Url::parse(&stored.sink.url).ok(),
        table: stored.sink.source.table.clone(),
        table_changes: stored
            .sink
            .source
            .table
            .as_ref()
            .map(|t| tables.1.subscribe(t)),
        tables: tables.0,
        stored,
        seen_version: 0,
        topic_gone: false,
        log,
        live,
    };
    r.run().await;
}

impl Runner {
    async fn run(&mut self) {
        let mut last_own: Option<Instant> = None;
        let mut last_commit = Instant::now();
        let mut last_publish: Option<Instant> = None;
        loop {
            self.follow_definition().await;
            if last_own.is_none_or(|t| t.elapsed() >= OWN_EVERY) {
                self.own().await;
                last_own = Some(Instant::now());
                // Appends wake the runner; this is the net under a missed one.
                self.at_end.clear();
            }
            self.read().await;
            let wait_until = self.dispatch();
            self.bury().await;
            if last_commit.elapsed() >= COMMIT_EVERY {
                self.commit().await;
                last_commit = Instant::now();
            }
            if self.machine.gone() && !self.reported_gone {
                self.reported_gone = true;
                self.disable().await;
            }
            if last_publish.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY) {
                self.publish();
                last_publish = Some(Instant::now());
            }
            if self
                .live
                .stopping
                .load(std::sync::atomic::Ordering::Acquire)
            {
                // Answers still coming count: wait for them briefly, then save.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while self.machine.in_flight() > 0 {
                    match tokio::time::timeout_at(deadline, self.answers.1.recv()).await {
                        Ok(Some((id, sent))) => self.answered(id, sent),
                        _ => break,
                    }
                }
                self.commit().await;
                return;
            }
            // Wait for something to do.
            let mut sleep = Duration::from_millis(250);
            if let Some(at) = wait_until {
                sleep = sleep.min(Duration::from_millis(at.saturating_sub(now_ms()).max(1)));
            }
            if self.commit_pending() {
                sleep = sleep.min(
                    COMMIT_EVERY
                        .saturating_sub(last_commit.elapsed())
                        .max(Duration::from_millis(1)),
                );
            }
            if self.next_slot > Instant::now() {
                sleep = sleep.min(self.next_slot - Instant::now());
            }
            tokio::select! {
                got = self.answers.1.recv() => {
                    if let Some((id, sent)) = got {
                        self.answered(id, sent);
                        while let Ok((id, sent)) = self.answers.1.try_recv() {
                            self.answered(id, sent);
                        }
                    }
                }
                _ = self.live.wake.notified() => {
                    self.at_end.clear();
                }
                _ = table_changed(&mut self.table_changes) => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn commit_pending(&self) -> bool {
        self.machine.dirty()
    }

    /// Takes in a changed stored definition.
    async fn follow_definition(&mut self) {
        let version = self.live.version.load(std::sync::atomic::Ordering::Acquire);
        if version == self.seen_version {
            return;
        }
        self.seen_version = version;
        let cur = self.live.stored.lock().expect("stored lock").clone();
        if cur == self.stored {
            return;
        }
        if cur.resumed_ms != self.stored.resumed_ms {
            self.machine.retry_now();
            self.reported_gone = false;
        }
        if cur.secrets != self.stored.secrets {
            match open_secrets(self.sealer.as_ref(), &cur) {
                Ok(s) => self.secrets = s,
                Err(e) => tracing::warn!(sink = %self.name, error = ?e, "opening signing secrets"),
            }
        }
        let replay = cur.generation != self.stored.generation;
        if cur.disabled.is_none() && self.stored.disabled.is_some() {
            self.machine.retry_now();
            self.reported_gone = false;
        }
        self.stored = cur;
        if replay {
            for p in self.machine.held() {
                let row = self.machine.view(p).map(|v| v.counts).unwrap_or_default();
                self.start_over(p, row).await;
            }
        }
    }

    /// Holds `partition` from the current generation's start.
    async fn start_over(&mut self, partition: u32, row: PartRow) {
        let (log, topic, start) = (self.log.clone(), self.topic.clone(), self.stored.start);
        let cursor = blocking(move || start_offset(&*log, &topic, partition, start))
            .await
            .and_then(Result::ok);
        let Some(cursor) = cursor else {
            return;
        };
        self.machine.hold(
            partition,
            cursor,
            PartRow {
                generation: self.stored.generation,
                done: Vec::new(),
                ..row
            },
        );
        self.machine.unsaved(&[partition]);
        self.at_end.remove(&partition);
    }

    /// Takes up the shards the engine lets this gateway write, and lets go of
    /// those it no longer does.
    async fn own(&mut self) {
        for shard in 0..self.shards {
            let (log, store) = (self.log.clone(), self.store.clone());
            let may = blocking(move || log.may_write(&store, shard))
                .await
                .and_then(Result::ok)
                .unwrap_or(false);
            let held = self.writers.contains_key(&shard);
            if may && !held {
                self.take(shard).await;
            } else if !may && held {
                self.let_go(shard);
            }
        }
    }

    fn partitions_of(&self, shard: u32) -> Vec<u32> {
        (0..self.topic.partition_count())
            .filter(|p| p % self.shards == shard)
            .collect()
    }

    async fn take(&mut self, shard: u32) {
        let parts = self.partitions_of(shard);
        let (log, store, n) = (
            self.log.clone(),
            self.store.clone(),
            self.topic.partition_count(),
        );
        let keys: Vec<String> = parts.iter().map(|&p| sluice_sinks::row_key(p)).collect();
        let got = blocking(move || -> sluice_log::Result<_> {
            let epoch = log.open_writer(&store, shard)?;
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            Ok((epoch, log.read_state(&store, &refs, n)?))
        })
        .await;
        let (epoch, read) = match got {
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                tracing::warn!(sink = %self.name, shard, error = %e, "taking up a sink's shard");
                return;
            }
            None => return,
        };
        self.writers.insert(shard, epoch);
        for (i, &p) in parts.iter().enumerate() {
            let row = sluice_sinks::decode_row(read.rows.get(i).and_then(|r| r.as_deref()));
            if row.generation != self.stored.generation {
                self.start_over(p, row).await;
            } else {
                let cursor = read.offsets.get(p as usize).copied().unwrap_or(0);
                self.machine.hold(p, cursor, row);
                self.at_end.remove(&p);
            }
        }
    }

    fn let_go(&mut self, shard: u32) {
        self.writers.remove(&shard);
        for p in self.partitions_of(shard) {
            self.machine.release(p);
            self.live
                .status
                .lock()
                .expect("status lock")
                .parts
                .remove(&p);
        }
    }

    /// Reads records into the windows of the partitions held.
    async fn read(&mut self) {
        if self.topic_gone {
            return;
        }
        // A table's sink reads only what the table applied.
        let applied = self
            .table
            .as_ref()
            .map(|t| self.tables.progress(t).map(|(a, _)| a).unwrap_or_default());
        let mut wanted = Vec::new();
        for p in self.machine.held() {
            if self.at_end.contains(&p) {
                continue;
            }
            if let Some((from, room)) = self.machine.wants_read(p) {
                let room = match &applied {
                    Some(a) => {
                        room.min(a.get(p as usize).map_or(0, |&a| a.saturating_sub(from)) as usize)
                    }
                    None => room,
                };
                if room > 0 {
                    wanted.push((p, from, room.min(READ_RECORDS)));
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let source = Source {
            log: self.log.clone(),
            topic: self.topic.clone(),
            epoch: self.epoch.clone(),
            filter: self.filter.clone(),
            format: self.policy.format,
            table: self.table.clone().map(|t| (t, self.tables.clone())),
        };
        let got = blocking(move || {
            wanted
                .into_iter()
                .map(|(p, from, room)| {
                    let (res, records) = source.read(p, from, room);
                    (p, res, records)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let now = now_ms();
        for (p, res, records) in got {
            match res {
                Ok(outcome) => {
                    for (o, e) in records {
                        self.machine.push(p, o, e, now);
                    }
                    self.machine.read_to(p, outcome.next_offset);
                    if outcome.next_offset >= outcome.high_watermark {
                        self.at_end.insert(p);
                    }
                }
                Err(sluice_log::Error::OffsetOutOfRange { start, offset, .. })
                    if offset < start =>
                {
                    self.machine.gap(p, start);
                }
                Err(sluice_log::Error::OffsetOutOfRange { .. }) => {
                    self.at_end.insert(p);
                }
                Err(sluice_log::Error::TopicNotFound(_)) => {
                    // The source was deleted: nothing more to read, and said
                    // once, not at every turn.
                    self.topic_gone = true;
                    self.live.status.lock().expect("status lock").last_error = Some(SinkError {
                        at_ms: now_ms(),
                        status: None,
                        message: format!("source topic '{}' is gone", self.topic.name()),
                    });
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, partition = p, error = %e, "reading a sink's records");
                    self.at_end.insert(p);
                }
            }
        }
    }

    /// Sends what may go now; answers when something next may, if it waits.
    fn dispatch(&mut self) -> Option<u64> {
        if self.stored.paused || self.stored.disabled.is_some() {
            return None;
        }
        loop {
            if let Some(rps) = self.policy.max_rps {
                let now = Instant::now();
                if self.next_slot > now {
                    return None;
                }
                self.next_slot = self.next_slot.max(now - Duration::from_secs(1))
                    + Duration::from_secs_f64(1.0 / f64::from(rps));
            }
            match self.machine.next(now_ms()) {
                Next::Deliver(d) => self.send(d),
                Next::WaitUntil(at) => return Some(at),
                Next::Idle => return None,
            }
        }
    }

    fn send(&mut self, d: Delivery<Payload>) {
        let first = d.records.first().map_or(0, |r| r.0);
        let last = d.records.last().map_or(0, |r| r.0);
        let id = match &d.records[..] {
            [(_, one)] => one.id.clone(),
            _ => sluice_sinks::batch_id(&self.epoch, self.topic.name(), d.partition, first, last),
        };
        let (body, content_type) = deliver::body(self.policy.format, &d.records);
        let single = (d.records.len() == 1).then(|| d.records[0].1.clone());
        let req = request(
            Endpoint {
                url: self.url.as_ref(),
                stored: &self.stored,
                policy: &self.policy,
                secrets: &self.secrets,
            },
            Meta {
                id: &id,
                topic: self.topic.name(),
                partition: d.partition,
                first,
                last,
                key: single.as_ref().and_then(|s| s.key.as_deref()),
                attempt: d.attempt,
                records: d.records.len(),
            },
            body,
            content_type,
            single.as_ref().map_or(&[][..], |s| &s.ce_headers[..]),
        );
        self.flights.insert(
            d.id,
            Flight {
                id,
                partition: d.partition,
                offsets: (first, last),
                records: d.records.len() as u32,
                attempt: d.attempt,
                at_ms: now_ms(),
            },
        );
        let tx = self.answers.0.clone();
        let client = self.client.clone();
        let did = d.id;
        tokio::spawn(async move {
            let sent = match req {
                Ok(req) => client.send(req).await,
                Err(e) => Sent {
                    outcome: sluice_sinks::Outcome::Failed {
                        failure: sluice_sinks::Failure {
                            status: None,
                            message: e.clone(),
                            answer: String::new(),
                        },
                        retry_after_ms: None,
                    },
                    status: None,
                    error: Some(e),
                    answer: String::new(),
                    latency: Duration::ZERO,
                },
            };
            let _ = tx.send((did, sent));
        });
    }

    fn answered(&mut self, id: u64, sent: Sent) {
        if let Some(f) = self.flights.remove(&id) {
            self.live.record(sent.attempt(
                f.at_ms,
                f.id,
                f.partition,
                f.offsets,
                f.records,
                f.attempt,
            ));
        }
        if let Some(e) = &sent.error {
            self.live.status.lock().expect("status lock").last_error = Some(SinkError {
                at_ms: now_ms(),
                status: sent.status,
                message: e.clone(),
            });
        }
        self.machine.complete(id, sent.outcome, now_ms());
    }

    /// Appends the dead letters waiting, then takes them as done.
    async fn bury(&mut self) {
        let letters = self.machine.dead_letters();
        if letters.is_empty() {
            return;
        }
        let log = self.log.clone();
        let (topic, name, generation) = (
            self.topic.clone(),
            self.name.clone(),
            self.stored.generation,
        );
        let l2 = letters.clone();
        let done = blocking(move || -> sluice_log::Result<Vec<(u32, u64, u64)>> {
            let dlq_name = sluice_sinks::dead_letter_topic(&name);
            // Made with the sink; made again if it was deleted since.
            let dlq = match log.topic(&dlq_name) {
                Some(t) => t,
                None => {
                    let config = sluice_log::TopicConfig {
                        partitions: topic.partition_count(),
                        ..sluice_log::TopicConfig::default()
                    };
                    match sluice_log::wait(|r| log.create_topic(&dlq_name, config, r)) {
                        Ok(t) => t,
                        Err(sluice_log::Error::TopicExists(_)) => log
                            .find_topic(&dlq_name)
                            .ok_or(sluice_log::Error::TopicNotFound(dlq_name.clone()))?,
                        Err(e) => return Err(e),
                    }
                }
            };
            let mut units = Vec::new();
            for l in &l2 {
                let mut record = Vec::new();
                let mut key = None;
                log.read(&topic, l.partition, l.offset, 1, 1, &mut |o, r| {
                    if o == l.offset {
                        crate::stream::encode::write_record(&mut record, l.partition, o, &r);
                        key = r.key.map(str::to_string);
                    }
                })?;
                let record: serde_json::Value =
                    serde_json::from_slice(&record).unwrap_or(serde_json::Value::Null);
                let value = serde_json::to_vec(&serde_json::json!({
                    "sink": name,
                    "id": l.payload.id,
                    "topic": topic.name(),
                    "partition": l.partition,
                    "offset": l.offset,
                    "attempts": l.attempts,
                    "status": l.failure.status,
                    "error": l.failure.message,
                    "answer": l.failure.answer,
                    "record": record,
                }))
                .expect("serializes");
                let partition = l.partition % dlq.partition_count().max(1);
                let rec = crate::records::encode_parts(
                    &dlq,
                    Some(partition),
                    RecordParts {
                        timestamp: now_ms(),
                        key: key.as_deref(),
                        headers: &[],
                        kind: ValueKind::Json,
                        value: &value,
                    },
                )
                .map_err(|e| sluice_log::Error::Invalid(e.message))?;
                units.push(AppendUnit {
                    dedupe_key: Some(
                        sluice_sinks::dead_letter_key(&name, generation, l.partition, l.offset)
                            .into_bytes(),
                    ),
                    records: vec![rec],
                });
            }
            sluice_log::wait(|r| {
                log.append(
                    AppendRequest {
                        topic: dlq.name().to_string(),
                        topic_id: dlq.id(),
                        units,
                    },
                    r,
                )
            })?;
            Ok(l2
                .iter()
                .map(|l| (l.partition, l.offset, l.incarnation))
                .collect())
        })
        .await;
        match done {
            Some(Ok(done)) => self.machine.buried(&done),
            Some(Err(e)) => {
                tracing::warn!(sink = %self.name, error = %e, "writing dead letters");
            }
            None => {}
        }
        let _ = letters;
    }

    /// Commits the checkpoints of the partitions that moved, a batch per shard.
    async fn commit(&mut self) {
        let points = self.machine.checkpoint();
        if points.is_empty() {
            return;
        }
        let n = self.topic.partition_count() as usize;
        let mut cursors = vec![0u64; n];
        for p in self.machine.held() {
            if let Some(v) = self.machine.view(p) {
                cursors[p as usize] = v.cursor;
            }
        }
        let mut by_shard: BTreeMap<u32, Vec<(u32, u64, PartRow)>> = BTreeMap::new();
        for pt in points {
            by_shard.entry(pt.0 % self.shards).or_default().push(pt);
        }
        for (shard, pts) in by_shard {
            let Some(&epoch) = self.writers.get(&shard) else {
                continue;
            };
            let batch = sluice_sinks::checkpoint_batch(&pts, &cursors);
            let (log, store) = (self.log.clone(), self.store.clone());
            let res = blocking(move || {
                sluice_log::wait(|r| log.commit_state(&store, shard, epoch, batch, r))
            })
            .await;
            match res {
                Some(Ok(())) => {}
                Some(Err(sluice_log::Error::Fenced { .. })) => {
                    tracing::info!(sink = %self.name, shard, "another gateway delivers this shard now");
                    self.let_go(shard);
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(sink = %self.name, shard, error = %e, "committing a sink's progress");
                    }
                    let ps: Vec<u32> = pts.iter().map(|p| p.0).collect();
                    self.machine.unsaved(&ps);
                }
            }
        }
    }

    /// The endpoint answered 410: the sink is disabled until a resume.
    async fn disable(&mut self) {
        let mut stored = self.live.stored.lock().expect("stored lock").clone();
        if stored.disabled.is_some() {
            return;
        }
        stored.disabled = Some(format!(
            "the endpoint answered 410 Gone at {}",
            deliver::rfc3339(now_ms())
        ));
        let (log, store, bytes) = (self.log.clone(), self.store.clone(), stored.encode());
        // A disabled sink no longer holds back its topic's retention.
        let res = blocking(move || {
            sluice_log::wait(|r| log.update_store(&store, bytes, r))?;
            sluice_log::wait(|r| log.hold_retention(&store, None, r))
        })
        .await;
        if let Some(Ok(())) = res {
            *self.live.stored.lock().expect("stored lock") = stored.clone();
            self.stored = stored;
        }
    }

    /// Tells the API where the partitions held stand.
    fn publish(&self) {
        let (failures, until) = self.machine.backoff();
        let mut s = self.live.status.lock().expect("status lock");
        s.failing = self.machine.failing();
        s.next_attempt_ms = (failures > 0).then_some(until).flatten();
        for p in self.machine.held() {
            if let Some(v) = self.machine.view(p) {
                s.parts.insert(
                    p,
                    PartStatus {
                        cursor: v.cursor,
                        counts: v.counts,
                        oldest_ms: v.oldest_ms,
                    },
                );
            }
        }
    }
}
