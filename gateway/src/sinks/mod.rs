//! Sinks in the gateway: the HTTP side of `sluice-sinks`. [`Sinks`] keeps a
//! runner per sink the engine has (made here or through another gateway),
//! and answers the API's calls; each runner is one task that drives its sink's
//! state machine: it takes up the partitions whose shards this gateway may
//! write, reads their records through the seam, sends the requests the machine
//! hands out, appends dead letters, and commits checkpoints.

pub(crate) mod deliver;
mod runner;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use sluice_log::{Backend, Topic, TopicConfig};
use sluice_openapi::{
    SinkAttempt, SinkDefinition, SinkError, SinkInfo, SinkPartition, SinkStart, SinkStartName,
    SinkState,
};
use sluice_sinks::sign::Sealer;
use sluice_sinks::{Stored, StoredSecret};
use tokio::sync::Notify;

use crate::sinks::deliver::Client;

/// Attempts kept per sink.
const ATTEMPTS: usize = 100;

/// How long a rotated-out secret goes on co-signing.
const ROTATION_MS: u64 = 24 * 3_600_000;

/// Sink errors as the API answers them.
#[derive(Debug)]
pub(crate) enum Fault {
    Invalid(String),
    NotFound(String),
    Exists(String),
    NoTopic(String),
    NoTable(String),
    Forbidden(String),
    Log(sluice_log::Error),
}

impl From<sluice_log::Error> for Fault {
    fn from(e: sluice_log::Error) -> Self {
        match e {
            sluice_log::Error::StoreNotFound(n) => {
                Fault::NotFound(sluice_sinks::sink_of_store(&n).unwrap_or(&n).to_string())
            }
            sluice_log::Error::StoreExists(n) => {
                Fault::Exists(sluice_sinks::sink_of_store(&n).unwrap_or(&n).to_string())
            }
            other => Fault::Log(other),
        }
    }
}

impl From<sluice_sinks::Error> for Fault {
    fn from(e: sluice_sinks::Error) -> Self {
        Fault::Invalid(e.to_string())
    }
}

pub(crate) type Result<T> = std::result::Result<T, Fault>;

/// What a runner shares with the API.
pub(crate) struct Live {
    /// Set at a graceful shutdown: commit what was delivered, then stop.
    pub stopping: std::sync::atomic::AtomicBool,
    pub stored: Mutex<Stored>,
    /// Goes up whenever `stored` changes.
    pub version: std::sync::atomic::AtomicU64,
    pub wake: Notify,
    pub attempts: Mutex<VecDeque<SinkAttempt>>,
    pub status: Mutex<runner::Status>,
}

impl Live {
    pub(crate) fn record(&self, a: SinkAttempt) {
        let mut q = self.attempts.lock().expect("attempts lock");
        if q.len() >= ATTEMPTS {
            q.pop_back();
        }
        q.push_front(a);
    }
}

struct Running {
    live: Arc<Live>,
    task: tokio::task::JoinHandle<()>,
}

/// Every sink's runner on this gateway.
pub(crate) struct Sinks {
    log: Arc<dyn Backend>,
    /// For sinks of a table's row changes.
    tables: Arc<sluice_tables::Engine>,
    /// Where the table engine says a table applied a batch.
    table_changes: Arc<crate::state::TableWaiters>,
    client: Client,
    sealer: Option<Sealer>,
    running: Mutex<HashMap<String, Running>>,
    /// Per source topic id, the runners to wake when it grows.
    by_topic: RwLock<HashMap<u64, Vec<Arc<Live>>>>,
}

use sluice_log::now_ms;

/// The sealer of signing secrets: from the configured passphrase, else (on an
/// engine with a data directory) from a random key kept there.
pub(crate) fn sealer(
    configured: Option<&str>,
    data_dir: Option<&Path>,
) -> anyhow::Result<Option<Sealer>> {
    if let Some(k) = configured {
        return Ok(Some(Sealer::new(k.as_bytes())));
    }
    let Some(dir) = data_dir else {
        return Ok(None);
    };
    let path = dir.join("sink-secret.key");
    let key = match std::fs::read(&path) {
        Ok(k) if !k.is_empty() => k,
        _ => {
            use rand::RngCore;
            let mut k = [0u8; 32];
            rand::rng().fill_bytes(&mut k);
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join("sink-secret.key.tmp");
            {
                use std::io::Write;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(hex.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            hex.into_bytes()
        }
    };
    Ok(Some(Sealer::new(&key)))
}

impl Sinks {
    pub(crate) fn new(
        log: Arc<dyn Backend>,
        tables: (Arc<sluice_tables::Engine>, Arc<crate::state::TableWaiters>),
        client: Client,
        sealer: Option<Sealer>,
    ) -> Arc<Sinks> {
        let sinks = Arc::new(Sinks {
            log,
            tables: tables.0,
            table_changes: tables.1,
            client,
            sealer,
            running: Mutex::new(HashMap::new()),
            by_topic: RwLock::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&sinks);
        sinks.log.subscribe(Arc::new(move |topic_id, _, _| {
            if let Some(s) = weak.upgrade()
                && let Some(lives) = s.by_topic.read().expect("by_topic lock").get(&topic_id)
            {
                for l in lives {
                    l.wake.notify_one();
                }
            }
        }));
        sinks
    }

    /// Starts runners for sinks made elsewhere, stops those of sinks gone, and
    /// hands changed definitions to theirs; every second until the gateway
    /// stops.
    pub(crate) fn supervise(self: &Arc<Sinks>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
                let log = me.log.clone();
                let Ok(Ok(stores)) = tokio::task::spawn_blocking(move || log.stores()).await else {
                    continue;
                };
                me.sync(&stores);
            }
        });
    }

    /// At a graceful shutdown: every runner commits what was delivered and
    /// stops (those that take longer than `grace` are stopped where they are:
    /// their last deliveries are sent again after the restart).
    pub(crate) async fn stop(&self, grace: std::time::Duration) {
        let running: Vec<Running> = self
            .running
            .lock()
            .expect("running lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        self.by_topic.write().expect("by_topic lock").clear();
        for r in &running {
            r.live
                .stopping
                .store(true, std::sync::atomic::Ordering::Release);
            r.live.wake.notify_one();
        }
        for r in running {
            let abort = r.task.abort_handle();
            if tokio::time::timeout(grace, r.task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Brings the runners in line with the stores the engine has.
    fn sync(self: &Arc<Sinks>, stores: &[(String, Vec<u8>)]) {
        let mut sinks: HashMap<&str, Stored> = HashMap::new();
        for (store, bytes) in stores {
            if let (Some(name), Some(stored)) =
                (sluice_sinks::sink_of_store(store), Stored::decode(bytes))
            {
                sinks.insert(name, stored);
            }
        }
        let mut running = self.running.lock().expect("running lock");
        running.retain(|name, r| {
            let keep = sinks.contains_key(name.as_str()) && !r.task.is_finished();
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (name, stored) in sinks {
            match running.get(name) {
                Some(r) => {
                    let mut cur = r.live.stored.lock().expect("stored lock");
                    if *cur != stored {
                        *cur = stored;
                        drop(cur);
                        r.live
                            .version
                            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        r.live.wake.notify_one();
                    }
                }
                None => {
                    let live = Arc::new(Live {
                        stopping: Default::default(),
                        version: Default::default(),
                        stored: Mutex::new(stored.clone()),
                        wake: Notify::new(),
                        attempts: Mutex::new(VecDeque::new()),
                        status: Mutex::new(runner::Status::default()),
                    });
                    let task = tokio::spawn(runner::run(
                        name.to_string(),
                        self.log.clone(),
                        (self.tables.clone(), self.table_changes.clone()),
                        self.client.clone(),
                        self.sealer.clone(),
                        live.clone(),
                    ));
                    running.insert(
                        name.to_string(),
                        Running {
                            live: live.clone(),
                            task,
                        },
                    );
                }
            }
        }
        let mut by_topic: HashMap<u64, Vec<Arc<Live>>> = HashMap::new();
        for r in running.values() {
            let id = r.live.stored.lock().expect("stored lock").topic_id;
            by_topic.entry(id).or_default().push(r.live.clone());
        }
        *self.by_topic.write().expect("by_topic lock") = by_topic;
    }

    async fn refresh(self: &Arc<Sinks>) {
        let log = self.log.clone();
        if let Ok(Ok(stores)) = tokio::task::spawn_blocking(move || log.stores()).await {
            self.sync(&stores);
        }
    }

    fn live(&self, name: &str) -> Option<Arc<Live>> {
        self.running
            .lock()
            .expect("running lock")
            .get(name)
            .map(|r| r.live.clone())
    }

    async fn stored(&self, name: &str) -> Result<Stored> {
        let log = self.log.clone();
        let store = sluice_sinks::store_name(name);
        let stores = tokio::task::spawn_blocking(move || log.stores())
            .await
            .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        stores
            .into_iter()
            .find(|(n, _)| *n == store)
            .and_then(|(_, b)| Stored::decode(&b))
            .ok_or_else(|| Fault::NotFound(name.to_string()))
    }

    /// Makes a sink; answers its info with its signing secret.
    pub(crate) async fn create(self: &Arc<Sinks>, def: SinkDefinition) -> Result<SinkInfo> {
        let (policy, _) = sluice_sinks::check(&def)?;
        self.client
            .check_url(&def.url)
            .await
            .map_err(Fault::Forbidden)?;
        let topic = match (&def.source.topic, &def.source.table) {
            (Some(t), _) => self.log.topic(t).ok_or_else(|| Fault::NoTopic(t.clone()))?,
            (None, Some(table)) => self
                .tables
                .source(table)
                .map_err(|_| Fault::NoTable(table.clone()))?
                .ok_or_else(|| {
                    Fault::Invalid(format!("table '{table}' has lost its source topic"))
                })?,
            (None, None) => unreachable!("checked"),
        };
        let secret = if policy.signed {
            let sealer = self.sealer.as_ref().ok_or_else(|| {
                Fault::Invalid(
                    "signed sinks need --sink-secret-key on this engine (or signing: {\"scheme\": \"none\"})"
                        .into(),
                )
            })?;
            let secret = sluice_sinks::sign::new_secret();
            Some((sealer.seal(&def.name, &secret), secret))
        } else {
            None
        };
        let start = sluice_sinks::start_of(&def);
        let name = def.name.clone();
        let stored = Stored {
            sink: def,
            topic: topic.name().to_string(),
            topic_id: topic.id(),
            created_ms: now_ms(),
            generation: 0,
            start,
            paused: false,
            resumed_ms: 0,
            disabled: None,
            secrets: secret
                .as_ref()
                .map(|(sealed, _)| vec![StoredSecret::new(sealed.clone(), now_ms())])
                .unwrap_or_default(),
            shards: 1,
        };
        let log = self.log.clone();
        let dlq = sluice_sinks::dead_letter_topic(&name);
        let t = topic.clone();
        let mut stored = stored;
        tokio::task::spawn_blocking(move || -> Result<()> {
            let partitions = t.partition_count();
            stored.shards = log.shards(partitions);
            let offsets = (0..partitions)
                .map(|p| start_offset(&*log, &t, p, start))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if log.topic(&dlq).is_none() {
                let config = TopicConfig {
                    partitions,
                    ..TopicConfig::default()
                };
                match sluice_log::wait(|r| log.create_topic(&dlq, config, r)) {
                    Ok(_) | Err(sluice_log::Error::TopicExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let store = sluice_sinks::store_name(&stored.sink.name);
            sluice_log::wait(|r| {
                log.create_store(&store, stored.encode(), offsets, stored.shards, r)
            })?;
            // Retention keeps what the sink has not delivered.
            sluice_log::wait(|r| log.hold_retention(&store, Some(&t), r)).map_err(Fault::from)
        })
        .await
        .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        self.refresh().await;
        let mut info = self.info(&name).await?;
        info.secret = secret.map(|(_, s)| s);
        Ok(info)
    }

    /// Changes a sink's stored definition with `f` and hands it to the runner.
    async fn update(
        self: &Arc<Sinks>,
        name: &str,
        f: impl FnOnce(&mut Stored) -> Result<()>,
    ) -> Result<Stored> {
        let mut stored = self.stored(name).await?;
        f(&mut stored)?;
        let log = self.log.clone();
        let store = sluice_sinks::store_name(name);
        let bytes = stored.encode();
        tokio::task::spawn_blocking(move || {
            sluice_log::wait(|r| log.update_store(&store, bytes, r))
        })
        .await
        .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        self.refresh().await;
        Ok(stored)
    }

    pub(crate) async fn pause(self: &Arc<Sinks>, name: &str) -> Result<SinkInfo> {
        self.update(name, |s| {
            s.paused = true;
            Ok(())
        })
        .await?;
        self.info(name).await
    }

    pub(crate) async fn resume(self: &Arc<Sinks>, name: &str) -> Result<SinkInfo> {
        let stored = self
            .update(name, |s| {
                s.paused = false;
                s.disabled = None;
                s.resumed_ms = now_ms();
                Ok(())
            })
            .await?;
        let (log, store) = (self.log.clone(), sluice_sinks::store_name(name));
        tokio::task::spawn_blocking(move || {
            let topic = log
                .topic(&stored.topic)
                .filter(|t| t.id() == stored.topic_id);
            sluice_log::wait(|r| log.hold_retention(&store, topic.as_deref(), r))
        })
        .await
        .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        self.info(name).await
    }

    /// Starts a sink over from `start`, delivering again with the same ids.
    pub(crate) async fn reset(self: &Arc<Sinks>, name: &str, start: SinkStart) -> Result<SinkInfo> {
        self.update(name, |s| {
            s.generation += 1;
            s.start = start;
            Ok(())
        })
        .await?;
        self.info(name).await
    }

    /// A new signing secret; the old one co-signs for 24 hours.
    pub(crate) async fn rotate(self: &Arc<Sinks>, name: &str) -> Result<SinkInfo> {
        let sealer = self.sealer.clone();
        let secret = sluice_sinks::sign::new_secret();
        let s2 = secret.clone();
        let sink = name.to_string();
        self.update(name, move |s| {
            let sealer = sealer.as_ref().ok_or_else(|| {
                Fault::Invalid("signed sinks need --sink-secret-key on this engine".into())
            })?;
            if s.secrets.is_empty() {
                return Err(Fault::Invalid(format!(
                    "sink '{sink}' does not sign its requests"
                )));
            }
            let now = now_ms();
            sluice_sinks::rotate(
                &mut s.secrets,
                StoredSecret::new(sealer.seal(&sink, &s2), now),
                now,
                now + ROTATION_MS,
            );
            Ok(())
        })
        .await?;
        let mut info = self.info(name).await?;
        info.secret = Some(secret);
        Ok(info)
    }

    pub(crate) async fn delete(self: &Arc<Sinks>, name: &str) -> Result<()> {
        self.stored(name).await?;
        let log = self.log.clone();
        let store = sluice_sinks::store_name(name);
        tokio::task::spawn_blocking(move || sluice_log::wait(|r| log.drop_store(&store, r)))
            .await
            .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        if let Some(r) = self.running.lock().expect("running lock").remove(name) {
            r.task.abort();
        }
        Ok(())
    }

    pub(crate) async fn attempts(&self, name: &str) -> Result<Vec<SinkAttempt>> {
        self.stored(name).await?;
        Ok(self
            .live(name)
            .map(|l| {
                l.attempts
                    .lock()
                    .expect("attempts lock")
                    .iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sends a test event to the sink's endpoint, signed as its deliveries are.
    pub(crate) async fn test(&self, name: &str) -> Result<(bool, SinkAttempt)> {
        let stored = self.stored(name).await?;
        let (policy, _) = sluice_sinks::check(&stored.sink)?;
        let secrets = runner::open_secrets(self.sealer.as_ref(), &stored)?;
        let now = now_ms();
        let id = format!("msg_test_{now}");
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "sluice.test", "sink": name, "id": id, "timestamp": now,
        }))
        .expect("serializes")
        .into();
        let req = runner::request(
            runner::Endpoint {
                url: None,
                stored: &stored,
                policy: &policy,
                secrets: &secrets,
            },
            runner::Meta {
                id: &id,
                topic: &stored.topic,
                partition: 0,
                first: 0,
                last: 0,
                key: None,
                attempt: 1,
                records: 0,
            },
            body,
            "application/json",
            &[],
        )
        .map_err(Fault::Invalid)?;
        let sent = self.client.send(req).await;
        let ok = matches!(sent.outcome, sluice_sinks::Outcome::Delivered);
        let attempt = sent.attempt(now, id, 0, (0, 0), 0, 1);
        if let Some(l) = self.live(name) {
            l.record(attempt.clone());
        }
        Ok((ok, attempt))
    }

    pub(crate) async fn list(self: &Arc<Sinks>) -> Result<Vec<SinkInfo>> {
        let log = self.log.clone();
        let stores = tokio::task::spawn_blocking(move || log.stores())
            .await
            .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        let mut names: Vec<String> = stores
            .iter()
            .filter_map(|(n, _)| sluice_sinks::sink_of_store(n).map(str::to_string))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.info(&n).await {
                Ok(i) => out.push(i),
                Err(Fault::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A sink's definition and status: its stored progress, and what its
    /// runner here knows of the partitions it delivers.
    pub(crate) async fn info(&self, name: &str) -> Result<SinkInfo> {
        let stored = self.stored(name).await?;
        let log = self.log.clone();
        let live = self.live(name);
        let topic = log
            .topic(&stored.topic)
            .filter(|t| t.id() == stored.topic_id);
        let store = sluice_sinks::store_name(name);
        let t = topic.clone();
        let (read, ends) = tokio::task::spawn_blocking(move || -> Result<_> {
            let partitions = t.as_ref().map_or(0, |t| t.partition_count());
            let keys: Vec<String> = (0..partitions).map(sluice_sinks::row_key).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let read = log.read_state(&store, &refs, partitions)?;
            let ends: Vec<u64> = match &t {
                Some(t) => (0..partitions).map(|p| log.end_offset(t, p)).collect(),
                None => Vec::new(),
            };
            Ok((read, ends))
        })
        .await
        .map_err(|_| Fault::Log(sluice_log::Error::Closed))??;
        let status = live
            .as_ref()
            .map(|l| l.status.lock().expect("status lock").clone())
            .unwrap_or_default();
        let now = now_ms();
        let mut partitions = Vec::new();
        for (p, end) in ends.iter().enumerate() {
            let p = p as u32;
            let row =
                sluice_sinks::decode_row(read.rows.get(p as usize).and_then(|r| r.as_deref()));
            let here = status.parts.get(&p);
            let (cursor, counts, oldest) = match here {
                Some(v) => (v.cursor, v.counts.clone(), Some(v.oldest_ms)),
                None => (
                    read.offsets.get(p as usize).copied().unwrap_or(0),
                    row,
                    None,
                ),
            };
            partitions.push(SinkPartition {
                partition: p,
                cursor,
                end_offset: *end,
                lag_records: end.saturating_sub(cursor),
                lag_seconds: oldest
                    .map(|o| o.map_or(0.0, |ts| now.saturating_sub(ts) as f64 / 1000.0)),
                delivered: counts.delivered,
                retried: counts.retried,
                dead_lettered: counts.dead_lettered,
                delivered_here: status.clustered.then_some(here.is_some()),
            });
        }
        let sum = |f: fn(&SinkPartition) -> u64| partitions.iter().map(f).sum::<u64>();
        let skipped: u64 = (0..ends.len())
            .map(|p| {
                status.parts.get(&(p as u32)).map_or_else(
                    || {
                        sluice_sinks::decode_row(read.rows.get(p).and_then(|r| r.as_deref()))
                            .skipped
                    },
                    |v| v.counts.skipped,
                )
            })
            .sum();
        let state = if stored.disabled.is_some() {
            SinkState::Disabled
        } else if stored.paused {
            SinkState::Paused
        } else if status.failing {
            SinkState::Failing
        } else if status.next_attempt_ms.is_some() {
            SinkState::BackingOff
        } else {
            SinkState::Running
        };
        Ok(SinkInfo {
            name: name.to_string(),
            state,
            disabled_reason: stored.disabled.clone(),
            dead_letter_topic: sluice_sinks::dead_letter_topic(name),
            created_ms: stored.created_ms,
            lag_records: sum(|p| p.lag_records),
            delivered: sum(|p| p.delivered),
            retried: sum(|p| p.retried),
            dead_lettered: sum(|p| p.dead_lettered),
            skipped_by_retention: skipped,
            partitions,
            last_error: status.last_error.clone().or_else(|| {
                topic.is_none().then(|| SinkError {
                    at_ms: now,
                    status: None,
                    message: format!("source topic '{}' is gone", stored.topic),
                })
            }),
            next_attempt_ms: status.next_attempt_ms,
            definition: stored.sink,
            secret: None,
        })
    }
}

/// The offset `start` names in `topic`'s `partition`.
pub(crate) fn start_offset(
    log: &dyn Backend,
    topic: &Topic,
    partition: u32,
    start: SinkStart,
) -> sluice_log::Result<u64> {
    let info = topic.partition_checked(partition)?;
    let end = log.end_offset(topic, partition);
    Ok(match start {
        SinkStart::Named(SinkStartName::Earliest) => info.start_offset,
        SinkStart::Named(SinkStartName::Latest) => end,
        SinkStart::Offset { offset } => offset.clamp(info.start_offset, end.max(info.start_offset)),
        SinkStart::Timestamp { timestamp } => {
            log.offset_for_timestamp(topic, partition, timestamp)?
        }
    })
}
