//! Event sinks of Sluice: a topic's records pushed to an HTTP endpoint, at least
//! once, in order, with retries, a dead-letter topic and replay.
//!
//! This crate owns everything of a sink but the HTTP: its definition and
//! checks (`def`), the delivery state machine (`machine`: cursors, ordering
//! lanes, batching, retries and backoff, dead letters), the signing of requests
//! and the sealing of secrets (`sign`), event ids, and how a sink's progress is
//! kept through the storage seam. The gateway drives it: it reads records
//! through the seam, makes the requests, and commits the checkpoints.
//!
//! **Where a sink's progress lives.** A sink is a state store of the seam named
//! [`store_name`] (its definition is [`Stored`]), split into the shards the
//! engine gives a store over the source's partitions, each with its own fenced
//! writer (over a cluster, the gateway holding a shard's lease delivers its
//! partitions). The store's offsets are the partitions' cursors (the lowest
//! offset not yet done); its row [`row_key`] per partition holds the done
//! ranges above the cursor and the counters ([`PartRow`]). A record is done
//! once the endpoint acknowledged it, or once its dead letter is in the
//! dead-letter topic; a crash between a delivery and the commit of its
//! checkpoint sends it again, with the same event id. Dead letters are appended
//! with a dedupe key made from the sink and the record's place, so a dead
//! letter written again after such a crash is not written twice.
//!
//! It depends on the seam's crate, the wire types and the table engine's
//! filter expressions; never on HTTP, an async runtime or a storage engine.

mod def;
mod machine;
pub mod sign;

use sha2::{Digest, Sha256};
use sluice_log::{SINK_STORES, StateBatch};

pub use crate::def::{MAX_RETRY_AFTER_MS, Policy, Stored, StoredSecret, check, rotate, start_of};
pub use crate::machine::{
    DeadLetter, Delivery, Entry, Failure, Next, Outcome, PartRow, PartView, Sink, WINDOW,
    WINDOW_BYTES,
};

/// Sink errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definition or argument that cannot be accepted.
    #[error("{0}")]
    Invalid(String),
    /// A stored secret that does not open.
    #[error("a sink's signing secret does not open: {0}")]
    Secret(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The seam's store that keeps sink `name`.
pub fn store_name(name: &str) -> String {
    format!("{SINK_STORES}{name}")
}

/// The sink a store keeps, if it keeps one.
pub fn sink_of_store(store: &str) -> Option<&str> {
    store.strip_prefix(SINK_STORES)
}

/// The topic that takes sink `name`'s dead letters.
pub fn dead_letter_topic(name: &str) -> String {
    format!("{name}.dead-letters")
}

/// The row of a partition's progress in a sink's store.
pub fn row_key(partition: u32) -> String {
    format!("p{partition}")
}

/// The event id of the record at `offset` of `topic`'s `partition`, the same
/// across retries, restarts and replays: `msg_` and 32 hex digits of a hash of
/// the topic's epoch, its name and the record's place.
pub fn event_id(epoch: &str, topic: &str, partition: u32, offset: u64) -> String {
    hashed_id(&[
        epoch.as_bytes(),
        topic.as_bytes(),
        &partition.to_be_bytes(),
        &offset.to_be_bytes(),
    ])
}

/// The `webhook-id` of a request carrying several records: made from the
/// first and the last one's place.
pub fn batch_id(epoch: &str, topic: &str, partition: u32, first: u64, last: u64) -> String {
    hashed_id(&[
        epoch.as_bytes(),
        topic.as_bytes(),
        &partition.to_be_bytes(),
        &first.to_be_bytes(),
        &last.to_be_bytes(),
    ])
}

fn hashed_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut out = String::with_capacity(36);
    out.push_str("msg_");
    for b in &d[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The dedupe key of a dead letter: the same record of the same sink and
/// generation is dead-lettered once.
pub fn dead_letter_key(sink: &str, generation: u64, partition: u32, offset: u64) -> String {
    format!("sink:{sink}:{generation}:{partition}:{offset}")
}

/// The batch that commits checkpoints of some of a shard's partitions: their
/// rows, and the cursors of all `partitions` of the source (`cursors` gives the
/// ones known; the engine takes only the shard's own).
pub fn checkpoint_batch(points: &[(u32, u64, PartRow)], cursors: &[u64]) -> StateBatch {
    let mut offsets = cursors.to_vec();
    let mut rows = Vec::with_capacity(points.len());
    for (p, cursor, row) in points {
        if let Some(o) = offsets.get_mut(*p as usize) {
            *o = *cursor;
        }
        rows.push((
            row_key(*p),
            Some(serde_json::to_vec(row).expect("serializes")),
        ));
    }
    StateBatch {
        rows,
        offsets: Some(offsets),
        skipped: 0,
        appends: Vec::new(),
    }
}

/// A partition's row as stored (an empty one when there is none, or it does
/// not decode).
pub fn decode_row(bytes: Option<&[u8]>) -> PartRow {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_depend_on_the_place_only() {
        let a = event_id("e", "t", 0, 5);
        assert_eq!(a, event_id("e", "t", 0, 5));
        assert_eq!(a.len(), 36);
        assert_ne!(a, event_id("e", "t", 0, 6));
        assert_ne!(a, event_id("e", "t", 1, 5));
        assert_ne!(a, event_id("f", "t", 0, 5));
        assert_ne!(event_id("e", "ab", 0, 5), event_id("e", "a", 0, 5));
    }
}
