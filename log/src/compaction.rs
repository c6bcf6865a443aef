//! Compaction of topics with [`crate::Compaction`]: in the background, every record
//! that a later record of the same key supersedes is removed, and tombstones are
//! removed once older than their retention.
//!
//! A pass over a partition maps each key of the part not yet compacted (up to a
//! memory budget) to its latest offset, then rewrites the batches from the start up
//! to there: a removed record leaves an empty slot, so offsets never move, and a
//! batch left with no record is deleted. New batches go through the writer in
//! bounded chunks, so appends wait for at most one chunk. Passes run on the
//! maintenance thread, one after another, as retention does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::batch::{self, Batch};
use crate::error::{Error, Result};
use crate::log::{Log, blocking};
use crate::record::{RecordView, ValueKind};
use crate::schema::pkey;
use crate::topic::{Compaction, Topic};
use crate::writer::Command;

/// Bytes of keys one pass may hold in memory.
const KEY_BUDGET: usize = 32 << 20;
/// Batches rewritten per commit.
const CHANGES_PER_COMMIT: usize = 256;

/// One stored batch to replace (`new: None` deletes it), if it still has `old_len`
/// bytes when the writer gets to it.
pub(crate) struct Change {
    pub base: u64,
    pub old_len: usize,
    pub new: Option<Vec<u8>>,
}

/// What the maintenance thread remembers of a partition between passes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    /// Offsets below this have been compacted: each key appears there once at most.
    clean_to: u64,
    /// When the last pass ran, ms since the epoch.
    last_pass_ms: u64,
    /// When the oldest kept tombstone may go.
    tombstone_due_ms: Option<u64>,
}

impl Progress {
    /// Whether a pass is worth running: half the records are new since the last
    /// pass, or some are and the last pass was `max_dirty` ago, or a tombstone is due.
    pub(crate) fn due(&self, start: u64, end: u64, now_ms: u64, max_dirty: Duration) -> bool {
        let dirty = end.saturating_sub(self.clean_to.max(start));
        let live = end - start;
        let stale = now_ms >= self.last_pass_ms + max_dirty.as_millis() as u64;
        (dirty > 0 && (dirty * 2 >= live || stale))
            || self.tombstone_due_ms.is_some_and(|t| now_ms >= t)
    }
}

/// Compacts one partition; returns the records removed.
pub(crate) fn pass(
    log: &Log,
    topic: &Arc<Topic>,
    partition: u32,
    policy: Compaction,
    progress: &mut Progress,
    now_ms: u64,
) -> Result<u64> {
    let (start, end, _) = topic.parts[partition as usize].load();
    let pk = pkey(topic.id, partition);
    let from = progress.clean_to.clamp(start, end);
    let corrupted = |offset| Error::Corrupted { pkey: pk, offset };

    // The latest offset of each key in [from, upto).
    let mut latest: HashMap<Box<str>, u64> = HashMap::new();
    let mut budget = KEY_BUDGET;
    let mut upto = from;
    log.scan(pk, from, end, usize::MAX, |base, value| {
        if budget == 0 {
            return Ok(false);
        }
        let b = Batch::parse(value).ok_or_else(|| corrupted(base))?;
        for i in 0..b.len() {
            let offset = base + i as u64;
            let r = b.get(i).ok_or_else(|| corrupted(base))?;
            if offset < from || r.is_empty() {
                continue;
            }
            let view = RecordView::decode(r).ok_or_else(|| corrupted(base))?;
            if let Some(key) = view.key {
                match latest.get_mut(key) {
                    Some(o) => *o = offset,
                    None => {
                        budget = budget.saturating_sub(key.len() + 48);
                        latest.insert(key.into(), offset);
                    }
                }
            }
        }
        upto = (base + b.len() as u64).min(end);
        Ok(true)
    })?;

    // Rewrite [start, upto) without what is superseded or expired.
    let expired_before = now_ms.saturating_sub(policy.tombstone_retention_ms);
    let mut tombstone_due: Option<u64> = None;
    let mut changes = Vec::new();
    let mut removed = 0u64;
    log.scan(pk, start, upto, usize::MAX, |base, value| {
        if base < start {
            // Only batches that begin at or after `start` are rewritten.
            return Ok(true);
        }
        let b = Batch::parse(value).ok_or_else(|| corrupted(base))?;
        let mut kept: Vec<&[u8]> = Vec::with_capacity(b.len());
        let mut dropped = 0u64;
        for i in 0..b.len() {
            let offset = base + i as u64;
            let r = b.get(i).ok_or_else(|| corrupted(base))?;
            if r.is_empty() {
                kept.push(r);
                continue;
            }
            let view = RecordView::decode(r).ok_or_else(|| corrupted(base))?;
            let superseded = view
                .key
                .and_then(|key| latest.get(key))
                .is_some_and(|&o| o > offset);
            let tombstone = view.key.is_some() && view.kind == ValueKind::Null;
            let expired = tombstone && view.timestamp < expired_before;
            if superseded || expired {
                kept.push(&[]);
                dropped += 1;
            } else {
                if tombstone {
                    let due = view.timestamp + policy.tombstone_retention_ms;
                    tombstone_due = Some(tombstone_due.map_or(due, |d| d.min(due)));
                }
                kept.push(r);
            }
        }
        if dropped == 0 {
            return Ok(true);
        }
        removed += dropped;
        let empty = kept.iter().all(|r| r.is_empty());
        changes.push(Change {
            base,
            old_len: value.len(),
            new: (!empty).then(|| batch::encode(kept.iter().copied())),
        });
        if changes.len() >= CHANGES_PER_COMMIT {
            apply(log, topic, partition, std::mem::take(&mut changes))?;
        }
        Ok(true)
    })?;
    if !changes.is_empty() {
        apply(log, topic, partition, changes)?;
    }
    *progress = Progress {
        clean_to: upto,
        last_pass_ms: now_ms,
        tombstone_due_ms: tombstone_due.map(|d| d + 1),
    };
    Ok(removed)
}

fn apply(log: &Log, topic: &Arc<Topic>, partition: u32, changes: Vec<Change>) -> Result<()> {
    let topic = topic.clone();
    blocking(|reply| {
        log.send(Command::Compact {
            topic,
            partition,
            changes,
            reply,
        })
    })
}
