//! A shared cache of recently read, already JSON-encoded record chunks.
//!
//! Subscribers that follow a topic's tail all ask for the same offsets; the first
//! to ask reads the log and encodes the chunk, the others reuse its bytes, so a
//! thousand subscribers cost one read and one encoding per chunk, not a thousand.
//! The cache holds a fixed number of bytes and forgets the oldest chunks first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_log::{Backend, Topic};

use crate::api::fetch::write_record;

/// Records `[first, next)` of one partition, encoded as JSON objects joined by
/// commas (the inside of a JSON array).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub first: u64,
    pub next: u64,
    pub json: Bytes,
}

/// Most records in one chunk.
pub const CHUNK_RECORDS: usize = 500;
/// About the most bytes of records in one chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// The cache.
pub struct TailCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    bytes: usize,
    /// Chunks by (topic id, partition, first offset).
    chunks: HashMap<(u64, u32, u64), Chunk>,
    /// Insertion order, for eviction.
    order: VecDeque<(u64, u32, u64)>,
}

impl TailCache {
    /// A cache holding about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        TailCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The chunk starting at `from`: from the cache, or read and encoded now (on a
    /// blocking thread) and kept for the next reader. An empty chunk means `from` is
    /// the end.
    pub async fn read(
        self: &Arc<Self>,
        log: &Arc<dyn Backend>,
        topic: &Arc<Topic>,
        partition: u32,
        from: u64,
    ) -> Result<Chunk, sluice_log::Error> {
        let key = (topic.id(), partition, from);
        if let Some(info) = topic.partition(partition)
            && (from < info.start_offset || from > info.end_offset)
        {
            // Retention may have removed what a cached chunk still holds.
            return Err(sluice_log::Error::OffsetOutOfRange {
                offset: from,
                start: info.start_offset,
                end: info.end_offset,
            });
        }
        if let Some(c) = self.inner.lock().expect("tail lock").chunks.get(&key) {
            return Ok(c.clone());
        }
        let (log, topic2) = (log.clone(), topic.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            let mut json = Vec::with_capacity(16 * 1024);
            let outcome = log.read(
                &topic2,
                partition,
                from,
                CHUNK_RECORDS,
                CHUNK_BYTES,
                &mut |o, r| {
                    if !json.is_empty() {
                        json.push(b',');
                    }
                    write_record(&mut json, partition, o, &r);
                },
            )?;
            Ok::<_, sluice_log::Error>(Chunk {
                first: from,
                next: outcome.next_offset,
                json: json.into(),
            })
        })
        .await
        .map_err(|_| sluice_log::Error::Closed)??;
        if chunk.next > chunk.first {
            self.insert(key, chunk.clone());
        }
        Ok(chunk)
    }

    fn insert(&self, key: (u64, u32, u64), chunk: Chunk) {
        let mut inner = self.inner.lock().expect("tail lock");
        let size = chunk.json.len();
        if inner.chunks.insert(key, chunk).is_none() {
            inner.order.push_back(key);
            inner.bytes += size;
        }
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(c) = inner.chunks.remove(&old) {
                inner.bytes -= c.json.len();
            }
        }
    }
}
