//! Server-wide bookkeeping beyond what the log knows: start-up time, records handed
//! to readers per topic and open WebSockets (for `/v1/stats`; each count also feeds
//! the matching Prometheus metric, so the two cannot disagree), and the one-at-a-time
//! guard of backups.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub struct Stats {
    started: Instant,
    started_ms: u64,
    data_dir: PathBuf,
    /// Records delivered per topic name.
    delivered: Mutex<HashMap<String, u64>>,
    websockets: AtomicU64,
    /// One backup at a time.
    pub backups: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Stats {
    pub fn new(data_dir: PathBuf) -> Self {
        Stats {
            started: Instant::now(),
            started_ms: sluice_log::now_ms(),
            data_dir,
            delivered: Mutex::default(),
            websockets: AtomicU64::new(0),
            backups: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Counts records (and their encoded bytes) handed to a reader of `topic`.
    pub fn delivered(&self, topic: &str, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        metrics::counter!("sluice_fetch_records_total", "topic" => topic.to_string())
            .increment(records);
        metrics::counter!("sluice_fetch_bytes_total", "topic" => topic.to_string())
            .increment(bytes);
        let mut map = self.delivered.lock().expect("stats lock");
        match map.get_mut(topic) {
            Some(n) => *n += records,
            None => {
                map.insert(topic.to_string(), records);
            }
        }
    }

    pub fn delivered_total(&self, topic: &str) -> u64 {
        let map = self.delivered.lock().expect("stats lock");
        map.get(topic).copied().unwrap_or(0)
    }

    /// Drops a deleted topic's counts.
    pub fn forget(&self, topic: &str) {
        self.delivered.lock().expect("stats lock").remove(topic);
    }

    /// A WebSocket opened (`true`) or closed.
    pub fn websocket(&self, open: bool) {
        let gauge = metrics::gauge!("sluice_websocket_connections");
        if open {
            self.websockets.fetch_add(1, Ordering::Relaxed);
            gauge.increment(1.0);
        } else {
            self.websockets.fetch_sub(1, Ordering::Relaxed);
            gauge.decrement(1.0);
        }
    }

    pub fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes the data directory takes, summed over its files.
    pub fn data_bytes(&self) -> u64 {
        fn walk(dir: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
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
