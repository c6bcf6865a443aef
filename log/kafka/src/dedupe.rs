//! Idempotency keys across gateways. A unit appended under a dedupe key (an
//! `Idempotency-Key`, or a CloudEvent's `source`+`id`) is remembered in
//! `_sluice.dedupe`, a compacted topic every gateway follows, before its append is
//! answered. A gateway that meets a key it has not seen first reads that topic up
//! to its end as it stands, so a retry that reaches any gateway after the first
//! attempt was answered is answered with the first offsets and writes nothing. Two
//! attempts in flight at the same moment can both be written: the window is the
//! time between a first attempt's check and its answer.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_log::now_ms;

/// The dedupe topic's name (after the gateway's topic prefix).
pub(crate) const TOPIC: &str = "_sluice.dedupe";

/// A unit's dedupe key within a topic: (topic id, key).
pub(crate) type Key = (u64, Vec<u8>);

/// `(partition, offset)` of each record of a unit.
pub(crate) type Offsets = Vec<(u32, u64)>;

/// A dedupe record's value.
#[derive(Serialize, Deserialize)]
struct Stored {
    at_ms: u64,
    offsets: Offsets,
}

/// The record key of a dedupe key: the topic id, big-endian, then the key.
pub(crate) fn record_key(key: &Key) -> Vec<u8> {
    let mut k = key.0.to_be_bytes().to_vec();
    k.extend_from_slice(&key.1);
    k
}

/// The record value of a unit's offsets, written now.
pub(crate) fn record_value(offsets: &Offsets) -> Vec<u8> {
    serde_json::to_vec(&Stored {
        at_ms: now_ms(),
        offsets: offsets.clone(),
    })
    .expect("offsets serialize")
}

/// Units written under a dedupe key: their offsets by key, and the keys in the
/// order they were written, so expiry takes only what expired.
#[derive(Default)]
pub(crate) struct Dedupe {
    pub offsets: HashMap<Key, Offsets>,
    order: VecDeque<(Instant, Key)>,
}

impl Dedupe {
    /// Forgets keys older than `window`.
    pub fn expire(&mut self, window: Duration) {
        while let Some((at, _)) = self.order.front() {
            if at.elapsed() < window {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.offsets.remove(&key);
            }
        }
    }

    /// Remembers a unit written now.
    pub fn remember(&mut self, key: Key, offsets: Offsets) {
        if self.offsets.insert(key.clone(), offsets).is_none() {
            self.order.push_back((Instant::now(), key));
        }
    }

    /// Remembers a unit from a dedupe record (written by any gateway), if it is
    /// still within `window`.
    pub fn apply(&mut self, record_key: &[u8], value: Option<&[u8]>, window: Duration) {
        let (Some(id), Some(value)) = (record_key.get(..8), value) else {
            return;
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(value) else {
            return;
        };
        let age = Duration::from_millis(now_ms().saturating_sub(stored.at_ms));
        if age >= window {
            return;
        }
        let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
        let key = (id, record_key[8..].to_vec());
        if self.offsets.insert(key.clone(), stored.offsets).is_none() {
            let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            self.order.push_back((at, key));
        }
    }
}
