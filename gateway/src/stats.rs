//! Server-wide bookkeeping beyond what the log knows: start-up time, records handed
//! to readers per topic and open WebSockets (for `/v1/stats`; each count also feeds
//! the matching Prometheus metric, so the two cannot disagree), the per-topic produce
//! counters, and the one-at-a-time guard of backups.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) struct Stats {
    started: Instant,
    started_ms: u64,
    data_dir: PathBuf,
    /// Per topic name.
    topics: Mutex<HashMap<String, TopicCounts>>,
    websockets: AtomicU64,
    /// One backup at a time.
    pub backups: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Stats {
    pub(crate) fn new(data_dir: PathBuf) -> Self {
        Stats {
            started: Instant::now(),
            started_ms: sluice_log::now_ms(),
            data_dir,
            topics: Mutex::default(),
            websockets: AtomicU64::new(0),
            backups: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Runs `f` on a topic's counts, made on first use. The metric handles are kept
    /// with them so that counting does not build labels on every request.
    fn with_topic<R>(&self, topic: &str, f: impl FnOnce(&mut TopicCounts) -> R) -> R {
        let mut map = self.topics.lock().expect("stats lock");
        if let Some(c) = map.get_mut(topic) {
            return f(c);
        }
        f(map
            .entry(topic.to_string())
            .or_insert_with(|| TopicCounts::new(topic)))
    }

    /// Counts records (and their encoded bytes) written to `topic`.
    pub(crate) fn produced(&self, topic: &str, records: u64, bytes: u64) {
        self.with_topic(topic, |c| {
            c.produce_records.increment(records);
            c.produce_bytes.increment(bytes);
        });
    }

    /// Counts records (and their encoded bytes) handed to a reader of `topic`.
    pub(crate) fn delivered(&self, topic: &str, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        self.with_topic(topic, |c| {
            c.delivered += records;
            c.fetch_records.increment(records);
            c.fetch_bytes.increment(bytes);
        });
    }

    pub(crate) fn delivered_total(&self, topic: &str) -> u64 {
        let map = self.topics.lock().expect("stats lock");
        map.get(topic).map_or(0, |c| c.delivered)
    }

    /// Drops a deleted topic's counts.
    pub(crate) fn forget(&self, topic: &str) {
        self.topics.lock().expect("stats lock").remove(topic);
    }

    /// A WebSocket opened (`true`) or closed.
    pub(crate) fn websocket(&self, open: bool) {
        let gauge = metrics::gauge!("sluice_websocket_connections");
        if open {
            self.websockets.fetch_add(1, Ordering::Relaxed);
            gauge.increment(1.0);
        } else {
            self.websockets.fetch_sub(1, Ordering::Relaxed);
            gauge.decrement(1.0);
        }
    }

    pub(crate) fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub(crate) fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes the data directory takes, summed over its files but the disk reserve
    /// (room kept free for a full disk, not data).
    pub(crate) fn data_bytes(&self) -> u64 {
        fn walk(dir: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .filter(|e| e.file_name() != sluice_log::RESERVE_FILE)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data_dir)
    }
}

/// A topic's delivered count and its metric handles.
struct TopicCounts {
    delivered: u64,
    produce_records: metrics::Counter,
    produce_bytes: metrics::Counter,
    fetch_records: metrics::Counter,
    fetch_bytes: metrics::Counter,
}

impl TopicCounts {
    fn new(topic: &str) -> Self {
        let label = || ("topic", topic.to_string());
        TopicCounts {
            delivered: 0,
            produce_records: metrics::counter!("sluice_produce_records_total", &[label()]),
            produce_bytes: metrics::counter!("sluice_produce_bytes_total", &[label()]),
            fetch_records: metrics::counter!("sluice_fetch_records_total", &[label()]),
            fetch_bytes: metrics::counter!("sluice_fetch_bytes_total", &[label()]),
        }
    }
}
