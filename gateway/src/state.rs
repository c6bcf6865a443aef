//! Shared state of the HTTP layer: the log, the configuration, and the waiters that
//! long-polling fetches park on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_log::Backend;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::limits::Limits;
use crate::stream::tail::TailCache;
use crate::ws::WsConfig;
use sluice_log::groups::Coordinator;

/// What every handler shares; cloned per request, so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    /// The storage engine, through the seam.
    pub(crate) log: Arc<dyn Backend>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) waiters: Arc<Waiters>,
    /// Token verification; `None` when auth is off.
    pub(crate) auth: Option<Arc<Auth>>,
    /// Consumer-group membership and positions.
    pub(crate) groups: Arc<Coordinator>,
    /// The engine's keeper of group membership, where its cluster keeps it
    /// (then `groups` is not used for membership).
    pub(crate) cluster: Option<Arc<dyn sluice_log::ClusterGroups>>,
    /// How far this gateway handed out members' partitions of cluster-kept
    /// groups.
    pub(crate) shares: Arc<crate::session::Shares>,
    /// Bumped whenever a group's generation moves, for polls waiting on it.
    pub(crate) group_changes: Arc<Signals<String>>,
    /// Consumer-group settings.
    pub(crate) group_config: GroupConfig,
    /// Recently encoded record chunks, shared by subscribers.
    pub(crate) tail: Arc<TailCache>,
    /// WebSocket settings.
    pub(crate) ws: Arc<WsConfig>,
    /// Becomes true when the server starts shutting down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The table engine.
    pub(crate) tables: Arc<sluice_tables::Engine>,
    /// The sinks' runners.
    pub(crate) sinks: Arc<crate::sinks::Sinks>,
    /// The processors (derived streams).
    pub(crate) processors: Arc<sluice_tables::Processors>,
    /// The event sources (webhooks in).
    pub(crate) sources: Arc<crate::sources::Sources>,
    /// Long polls on table changes park here.
    pub(crate) table_waiters: Arc<TableWaiters>,
    /// Start-up time and delivery counts for `/v1/stats`.
    pub(crate) stats: Arc<crate::stats::Stats>,
    /// The Prometheus recorder's handle, when metrics are on.
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Consumer-group settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupConfig {
    /// Whether a consumer id belongs to the token subject that first used it.
    pub(crate) bind_subject: bool,
}

/// Named wake-up counters: a watch channel per key that someone waits on, bumped by
/// `notify`, dropped once nobody holds a receiver. Long polls and subscriptions wake
/// on the event that concerns them instead of polling.
pub(crate) struct Signals<K> {
    channels: Mutex<HashMap<K, watch::Sender<u64>>>,
}

impl<K> Default for Signals<K> {
    fn default() -> Self {
        Signals {
            channels: Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Signals<K> {
    /// A receiver that changes at every `notify(key)` from now on.
    pub(crate) fn subscribe(&self, key: K) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().expect("signals lock");
        map.entry(key)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes whoever waits on `key`.
    pub(crate) fn notify<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let mut map = self.channels.lock().expect("signals lock");
        if let Some(tx) = map.get(key) {
            if tx.receiver_count() == 0 {
                map.remove(key);
            } else {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }
}

/// The key of a topic-wide channel.
const ANY_PARTITION: u32 = u32::MAX;

/// One signal per partition that someone waits on (and one per topic), bumped by
/// the storage engine's append subscription, so a long poll wakes on the commit that
/// brings it data.
#[derive(Default)]
pub(crate) struct Waiters {
    signals: Signals<(u64, u32)>,
}

impl Waiters {
    pub(crate) fn subscribe(&self, topic_id: u64, partition: u32) -> watch::Receiver<u64> {
        self.signals.subscribe((topic_id, partition))
    }

    /// A receiver that changes whenever any partition of the topic grows.
    pub(crate) fn subscribe_topic(&self, topic_id: u64) -> watch::Receiver<u64> {
        self.subscribe(topic_id, ANY_PARTITION)
    }

    pub(crate) fn notify(&self, topic_id: u64, partition: u32) {
        self.signals.notify(&(topic_id, partition));
        self.signals.notify(&(topic_id, ANY_PARTITION));
    }
}

/// Per table: a watch channel that long polls wait on, and a broadcast of changed
/// keys for live subscribers; the engine's change hook feeds both.
#[derive(Default)]
pub(crate) struct TableWaiters {
    channels: Signals<String>,
    feeds: Mutex<HashMap<String, tokio::sync::broadcast::Sender<Arc<[String]>>>>,
}

/// Batches of changed keys a live table subscriber may fall behind by before it is
/// told to resynchronise.
const FEED_DEPTH: usize = 64;

impl TableWaiters {
    pub(crate) fn subscribe(&self, table: &str) -> watch::Receiver<u64> {
        self.channels.subscribe(table.to_string())
    }

    /// Changed keys of a table, batch by batch.
    pub(crate) fn feed(&self, table: &str) -> tokio::sync::broadcast::Receiver<Arc<[String]>> {
        let mut map = self.feeds.lock().expect("table feeds lock");
        map.entry(table.to_string())
            .or_insert_with(|| tokio::sync::broadcast::channel(FEED_DEPTH).0)
            .subscribe()
    }

    pub(crate) fn notify(&self, table: &str, keys: &[String]) {
        self.channels.notify(table);
        let mut feeds = self.feeds.lock().expect("table feeds lock");
        if let Some(tx) = feeds.get(table) {
            if tx.receiver_count() == 0 {
                feeds.remove(table);
            } else {
                let _ = tx.send(keys.into());
            }
        }
    }
}
