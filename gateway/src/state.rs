//! Shared state of the HTTP layer: the log, the configuration, and the waiters that
//! long-polling fetches park on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_log::Log;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::limits::Limits;

#[derive(Clone)]
pub struct AppState {
    pub log: Log,
    pub limits: Arc<Limits>,
    pub waiters: Arc<Waiters>,
    /// Token verification; `None` when auth is off.
    pub auth: Option<Arc<Auth>>,
}

/// One watch channel per partition that someone waits on, carrying its end offset.
/// The log's commit hook publishes into it, so a long poll wakes on the commit that
/// brings it data instead of polling.
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

    pub fn notify(&self, topic_id: u64, partition: u32, end: u64) {
        let mut map = self.channels.lock().expect("waiters lock");
        if let Some(tx) = map.get(&(topic_id, partition)) {
            if tx.receiver_count() == 0 {
                map.remove(&(topic_id, partition));
            } else {
                tx.send_replace(end);
            }
        }
    }
}
