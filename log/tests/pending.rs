//! Records acknowledged through the write-ahead log are written to redb later, in
//! bulk; until then reads find them in memory. These tests read across that seam:
//! from every offset, while the writer moves batches to redb underneath, through
//! a restart, and after retention and compaction commands that run on the same
//! records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_log::{
    AppendRequest, AppendUnit, Log, LogOptions, NewRecord, RecordParts, Topic, TopicConfig,
    ValueKind,
};

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogOptions::default()).expect("open")
}

/// A log in `dir` with a topic `t` of 2 partitions.
fn with_topic(dir: &std::path::Path) -> (Log, Arc<Topic>) {
    let log = open(dir);
    let topic = log
        .create_topic_blocking(
            "t",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .expect("create");
    (log, topic)
}

fn value(i: u64) -> Vec<u8> {
    // About 1 KiB, so a few thousand appends pass the in-memory threshold.
    format!("{i:020}-{}", "v".repeat(1000)).into_bytes()
}

fn append(log: &Log, topic: &Topic, from: u64, n: u64) {
    let records = (from..from + n)
        .map(|i| NewRecord {
            partition: (i % 2) as u32,
            bytes: RecordParts {
                timestamp: 1_000 + i,
                key: Some(&format!("k{}", i % 7)),
                headers: &[],
                kind: ValueKind::Binary,
                value: &value(i),
            }
            .encode(),
        })
        .collect();
    log.append_blocking(AppendRequest {
        topic: topic.name().to_string(),
        topic_id: topic.id(),
        units: vec![AppendUnit {
            dedupe_key: None,
            records,
        }],
    })
    .expect("append");
}

/// Every record of `partition` read from `from`, as the global numbers in its value.
fn read_all(log: &Log, topic: &Topic, partition: u32, from: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let outcome = log
            .read(topic, partition, at, 37, 1 << 20, |_, r| {
                let s = std::str::from_utf8(&r.value[..20]).expect("utf-8");
                out.push(s.parse::<u64>().expect("number"));
            })
            .expect("read");
        if outcome.records == 0 {
            return out;
        }
        at = outcome.next_offset;
    }
}

fn check(log: &Log, topic: &Topic, total: u64) {
    for p in 0..2u32 {
        let expected: Vec<u64> = (0..total).filter(|i| i % 2 == p as u64).collect();
        for from in (0..expected.len() as u64).step_by(97) {
            assert_eq!(
                read_all(log, topic, p, from),
                expected[from as usize..],
                "partition {p} from {from}"
            );
        }
    }
}

#[test]
fn reads_span_memory_and_redb_across_flushes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (log, topic) = with_topic(dir.path());
    // Small groups: each goes through the write-ahead log; together they pass the
    // threshold at which batches move to redb several times.
    let mut total = 0u64;
    for round in 0..3000u64 {
        let n = 1 + round % 3;
        append(&log, &topic, total, n);
        total += n;
    }
    check(&log, &topic, total);
    assert_eq!(
        log.offset_for_timestamp(&topic, 0, 1_000 + total - 10)
            .expect("seek"),
        (total - 10) / 2
    );

    // Reopened: the log's entries past the last durable commit are written again.
    drop(topic);
    drop(log);
    let log = open(dir.path());
    let topic = log.topic("t").expect("topic survives");
    check(&log, &topic, total);
}

#[test]
fn readers_never_miss_a_record_while_batches_move_to_redb() {
    let dir = tempfile::tempdir().unwrap();
    let (log, topic) = with_topic(dir.path());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, topic, done) = (log.clone(), topic.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                // Whatever is published is readable, dense and in order.
                let end = topic.partitions()[1].end_offset;
                let got = read_all(&log, &topic, 1, 0);
                assert!(got.len() as u64 >= end, "read {} of {end}", got.len());
                assert!(got.iter().enumerate().all(|(i, v)| *v == 2 * i as u64 + 1));
                reads += 1;
            }
            reads
        })
    };
    let mut total = 0u64;
    for _ in 0..1500u64 {
        append(&log, &topic, total, 2);
        total += 2;
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().expect("reader") > 0);
    check(&log, &topic, total);
}

#[test]
fn dropping_the_last_handle_closes_the_file_even_while_maintenance_runs() {
    let dir = tempfile::tempdir().unwrap();
    let options = || LogOptions {
        maintenance_interval: std::time::Duration::from_millis(1),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options()).expect("open");
    log.create_topic_blocking(
        "t",
        TopicConfig {
            partitions: 2,
            retention_ms: Some(1),
            ..TopicConfig::default()
        },
    )
    .expect("create");
    drop(log);
    // Maintenance runs every millisecond and finds records past their retention
    // each round, so some drops land while it holds a handle of its own (trimming
    // through the writer); each reopen must still find the file closed.
    for round in 0..200u64 {
        let log =
            Log::open(dir.path(), options()).unwrap_or_else(|e| panic!("reopen {round}: {e}"));
        let topic = log.topic("t").expect("topic survives");
        append(&log, &topic, round * 4, 4);
        std::thread::sleep(std::time::Duration::from_millis(round % 3));
    }
}
