//! Shared state of the HTTP layer: the log, the configuration, and the waiters that
//! long-polling fetches park on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_log::Backend;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::groups::Coordinator;
use crate::limits::Limits;
use crate::tail::TailCache;
use crate::ws::WsConfig;

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
    pub log: Arc<dyn Backend>,
    pub limits: Arc<Limits>,
    pub waiters: Arc<Waiters>,
    /// Token verification; `None` when auth is off.
    pub auth: Option<Arc<Auth>>,
    /// Consumer-group membership and positions.
    pub groups: Arc<Coordinator>,
    /// Consumer-group settings.
    pub group_config: GroupConfig,
    /// Recently encoded record chunks, shared by subscribers.
    pub tail: Arc<TailCache>,
    /// WebSocket settings.
    pub ws: Arc<WsConfig>,
    /// Becomes true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// The table engine.
    pub tables: Arc<sluice_tables::Engine>,
    /// Long polls on table changes park here.
    pub table_waiters: Arc<TableWaiters>,
    /// Start-up time and delivery counts for `/v1/stats`.
    pub stats: Arc<crate::stats::Stats>,
    /// The Prometheus recorder's handle, when metrics are on.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Consumer-group settings.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// Whether a consumer id belongs to the token subject that first used it.
    pub bind_subject: bool,
}

/// The key of a topic-wide channel.
const ANY_PARTITION: u32 = u32::MAX;

/// One watch channel per partition that someone waits on (and one per topic), each a
/// counter the log's commit hook bumps, so a long poll wakes on the commit that brings
/// it data instead of polling.
#[derive(Default)]
pub struct Waiters {
    channels: Mutex<HashMap<(u64, u32), watch::Sender<u64>>>,
}

impl Waiters {
    pub fn subscribe(&self, topic_id: u64, partition: u32) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().expect("waiters lock");
        map.entry((topic_id, partition))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A receiver that changes whenever any partition of the topic grows.
    pub fn subscribe_topic(&self, topic_id: u64) -> watch::Receiver<u64> {
        self.subscribe(topic_id, ANY_PARTITION)
    }

    pub fn notify(&self, topic_id: u64, partition: u32) {
        let mut map = self.channels.lock().expect("waiters lock");
        for key in [(topic_id, partition), (topic_id, ANY_PARTITION)] {
            if let Some(tx) = map.get(&key) {
                if tx.receiver_count() == 0 {
                    map.remove(&key);
                } else {
                    tx.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
        }
    }
}

/// Per table: a watch channel that long polls wait on, and a broadcast of changed
/// keys for live subscribers; the engine's change hook feeds both.
#[derive(Default)]
pub struct TableWaiters {
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
    feeds: Mutex<HashMap<String, tokio::sync::broadcast::Sender<Arc<[String]>>>>,
}

/// Batches of changed keys a live table subscriber may fall behind by before it is
/// told to resynchronise.
const FEED_DEPTH: usize = 64;

impl TableWaiters {
    pub fn subscribe(&self, table: &str) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().expect("table waiters lock");
        map.entry(table.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Changed keys of a table, batch by batch.
    pub fn feed(&self, table: &str) -> tokio::sync::broadcast::Receiver<Arc<[String]>> {
        let mut map = self.feeds.lock().expect("table feeds lock");
        map.entry(table.to_string())
            .or_insert_with(|| tokio::sync::broadcast::channel(FEED_DEPTH).0)
            .subscribe()
    }

    pub fn notify(&self, table: &str, keys: &[String]) {
        {
            let mut map = self.channels.lock().expect("table waiters lock");
            if let Some(tx) = map.get(table) {
                if tx.receiver_count() == 0 {
                    map.remove(table);
                } else {
                    tx.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
        }
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
