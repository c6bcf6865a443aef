//! Measures the group-commit path alone: N threads appending one record each in a
//! loop, for a few seconds. Prints records/s and the mean group size.
//! `cargo run --release -p sluice-log --example groupcommit -- 64`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_log::{
    AppendRequest, AppendUnit, Log, LogOptions, NewRecord, RecordParts, TopicConfig, ValueKind,
};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let commits = Arc::new(AtomicUsize::new(0));
    let busy_us = Arc::new(AtomicU64::new(0));
    let (c2, b2) = (commits.clone(), busy_us.clone());
    let log = Log::open(
        dir.path(),
        LogOptions {
            on_commit: Some(Arc::new(move |s| {
                c2.fetch_add(1, Ordering::Relaxed);
                b2.fetch_add(s.duration.as_micros() as u64, Ordering::Relaxed);
            })),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let topic = log
        .create_topic_blocking(
            "t",
            TopicConfig {
                partitions: 8,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    let value = vec![b'x'; 200];
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(4);
    let commits0 = commits.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (log, topic, value, done) =
                (log.clone(), topic.clone(), value.clone(), done.clone());
            s.spawn(move || {
                while Instant::now() < deadline {
                    let bytes = RecordParts {
                        timestamp: 1,
                        key: None,
                        headers: &[],
                        kind: ValueKind::Json,
                        value: &value,
                    }
                    .encode();
                    let partition = topic.pick_partition(None);
                    log.append_blocking(AppendRequest {
                        topic: "t".into(),
                        topic_id: topic.id(),
                        units: vec![AppendUnit {
                            dedupe_key: None,
                            records: vec![NewRecord { partition, bytes }],
                        }],
                    })
                    .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let c = commits.load(Ordering::Relaxed) - commits0;
    println!(
        "{threads} threads: {:.0} records/s, {c} commits, {:.1} records/commit, {:.0} us/commit",
        n as f64 / secs,
        n as f64 / c as f64,
        busy_us.load(Ordering::Relaxed) as f64 / c as f64
    );
}
