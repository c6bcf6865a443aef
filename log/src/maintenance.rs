//! The background maintenance thread: retention by time and size, compaction,
//! expiry of dedupe rows, and purging the records of deleted topics. Each job goes through the writer
//! in chunks, so appends queued behind a chunk wait for at most one chunk.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::compaction::{self, Progress};
use crate::log::{Log, blocking, now_ms};
use crate::writer::Command;

/// Records deleted per commit by one maintenance step.
const CHUNK: usize = 10_000;

pub(crate) fn run(
    interval: Duration,
    dedupe_window: Duration,
    max_dirty: Duration,
    stop: &(Mutex<bool>, Condvar),
    log: impl Fn() -> Option<Log>,
) {
    let mut compacted: HashMap<(u64, u32), Progress> = HashMap::new();
    loop {
        {
            let (flag, cv) = stop;
            let guard = flag.lock().expect("stop lock");
            let (guard, _) = cv
                .wait_timeout_while(guard, interval, |stopped| !*stopped)
                .expect("stop lock");
            if *guard {
                return;
            }
        }
        let Some(log) = log() else { return };
        if log.is_poisoned() {
            continue;
        }
        if let Err(e) = tick(&log, dedupe_window, max_dirty, stop, &mut compacted) {
            tracing::warn!(error = %e, "maintenance step failed");
        }
    }
}

fn stopped(stop: &(Mutex<bool>, Condvar)) -> bool {
    *stop.0.lock().expect("stop lock")
}

/// One pass over every job; repeats a job while it fills whole chunks.
pub(crate) fn tick(
    log: &Log,
    dedupe_window: Duration,
    max_dirty: Duration,
    stop: &(Mutex<bool>, Condvar),
    compacted: &mut HashMap<(u64, u32), Progress>,
) -> crate::Result<()> {
    let now = now_ms();
    let topics = log.topics();
    compacted.retain(|(id, _), _| topics.iter().any(|t| t.id() == *id));
    for topic in &topics {
        let Some(policy) = topic.config().compaction else {
            continue;
        };
        for p in 0..topic.partition_count() {
            if stopped(stop) {
                return Ok(());
            }
            let progress = compacted.entry((topic.id(), p)).or_default();
            let info = topic.partition(p).expect("partition in range");
            if progress.due(info.start_offset, info.end_offset, now, max_dirty) {
                compaction::pass(log, topic, p, policy, progress, now)?;
            }
        }
    }
    for topic in topics {
        let cfg = topic.config().clone();
        if cfg.retention_ms.is_none() && cfg.retention_bytes.is_none() {
            continue;
        }
        let before_ms = cfg.retention_ms.map(|r| now.saturating_sub(r));
        // What stores (sinks) have not passed yet is not deleted for its age.
        let floor = log.retention_floor(topic.id(), topic.partition_count())?;
        for p in 0..topic.partition_count() {
            let floor = floor.as_ref().and_then(|f| f.get(p as usize).copied());
            loop {
                if stopped(stop) {
                    return Ok(());
                }
                let info = topic.partition(p).expect("partition in range");
                let over = cfg.retention_bytes.is_some_and(|max| info.bytes > max);
                let old = match before_ms {
                    Some(cut) => {
                        log.first_timestamp(&topic, p)?.is_some_and(|t| t < cut)
                            && floor.is_none_or(|f| f > info.start_offset)
                    }
                    None => false,
                };
                if !(over || old) {
                    break;
                }
                let topic = topic.clone();
                let removed = blocking(|reply| {
                    log.send(Command::Trim {
                        topic,
                        partition: p,
                        before_ms,
                        floor,
                        max_bytes: cfg.retention_bytes,
                        limit: CHUNK,
                        reply,
                    })
                })?;
                if removed < CHUNK {
                    break;
                }
            }
        }
    }
    let before_ms = now.saturating_sub(dedupe_window.as_millis() as u64);
    while !stopped(stop) {
        let n = blocking(|reply| {
            log.send(Command::ExpireDedupe {
                before_ms,
                limit: CHUNK,
                reply,
            })
        })?;
        if n < CHUNK {
            break;
        }
    }
    while !stopped(stop) {
        let n = blocking(|reply| {
            log.send(Command::Purge {
                limit: CHUNK,
                reply,
            })
        })?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}
