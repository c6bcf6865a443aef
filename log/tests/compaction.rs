//! Compacted topics: the latest record of each key stays at its offset, superseded
//! records and expired tombstones go, offsets never move, and reads skip the gaps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_log::{
    AppendRequest, AppendUnit, Compaction, Error, Log, LogOptions, NewRecord, RecordParts,
    TopicConfig, ValueKind,
};

fn open(dir: &std::path::Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            maintenance_interval: Duration::from_millis(20),
            compaction_max_dirty: Duration::from_millis(100),
            ..LogOptions::default()
        },
    )
    .expect("open")
}

fn record(key: Option<&str>, value: Option<&str>) -> Vec<u8> {
    RecordParts {
        timestamp: sluice_log::now_ms(),
        key,
        headers: &[],
        kind: if value.is_some() {
            ValueKind::Json
        } else {
            ValueKind::Null
        },
        value: value.unwrap_or("").as_bytes(),
    }
    .encode()
}

fn append(log: &Log, topic: &str, records: Vec<Vec<u8>>) -> sluice_log::Result<Vec<(u32, u64)>> {
    let t = log.topic(topic).unwrap();
    log.append_blocking(AppendRequest {
        topic: topic.to_string(),
        topic_id: t.id(),
        units: vec![AppendUnit {
            records: records
                .into_iter()
                .map(|bytes| NewRecord {
                    partition: 0,
                    bytes,
                })
                .collect(),
            ..AppendUnit::default()
        }],
    })
}

/// Every record of partition 0 as (offset, key, value or None for a tombstone),
/// read 7 at a time, with the final next offset.
fn read_all(log: &Log, topic: &str) -> (Vec<(u64, String, Option<String>)>, u64) {
    let t = log.topic(topic).unwrap();
    let mut out = Vec::new();
    let mut from = t.partition(0).unwrap().start_offset;
    loop {
        let o = log
            .read(&t, 0, from, 7, 1 << 20, |offset, r| {
                let value = (r.kind != ValueKind::Null)
                    .then(|| String::from_utf8_lossy(r.value).into_owned());
                out.push((offset, r.key.unwrap_or("").to_string(), value));
            })
            .unwrap();
        assert!(o.next_offset > from || o.next_offset == o.high_watermark);
        from = o.next_offset;
        if from == o.high_watermark {
            return (out, from);
        }
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.create_topic_blocking(
        "c",
        TopicConfig {
            compaction: Some(Compaction {
                tombstone_retention_ms: 3_600_000,
            }),
            ..TopicConfig::default()
        },
    )
    .unwrap();
    // 10 keys, 300 versions each, interleaved; then a tombstone for k3.
    let mut latest: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for round in 0..30 {
        let batch: Vec<(String, String)> = (0..100)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    format!("{{\"v\":{}}}", round * 100 + i),
                )
            })
            .collect();
        let offsets = append(
            &log,
            "c",
            batch
                .iter()
                .map(|(k, v)| record(Some(k), Some(v)))
                .collect(),
        )
        .unwrap();
        for ((k, v), (_, o)) in batch.into_iter().zip(offsets) {
            latest.insert(k, (o, Some(v)));
        }
    }
    let o = append(&log, "c", vec![record(Some("k3"), None)]).unwrap()[0].1;
    latest.insert("k3".into(), (o, None));
    let end = o + 1;
    let bytes_before = log.topic("c").unwrap().partition(0).unwrap().bytes;

    wait_for("compaction", || read_all(&log, "c").0.len() == 10);
    let expected: Vec<(u64, String, Option<String>)> = {
        let mut v: Vec<_> = latest
            .iter()
            .map(|(k, (o, val))| (*o, k.clone(), val.clone()))
            .collect();
        v.sort();
        v
    };
    let (got, next) = read_all(&log, "c");
    assert_eq!(got, expected);
    assert_eq!(next, end, "the end offset does not move");
    let info = log.topic("c").unwrap().partition(0).unwrap();
    assert_eq!((info.start_offset, info.end_offset), (0, end));
    assert!(
        info.bytes < bytes_before / 10,
        "{} of {bytes_before} bytes left",
        info.bytes
    );

    // Appends go on at the end, reads from inside a gap find the next record, and
    // all of it survives a restart.
    let o = append(&log, "c", vec![record(Some("k1"), Some("\"new\""))]).unwrap()[0].1;
    assert_eq!(o, end);
    let t = log.topic("c").unwrap();
    let mut first = None;
    log.read(&t, 0, 5, 1, 1 << 20, |offset, _| first = Some(offset))
        .unwrap();
    assert_eq!(first, Some(expected[0].0));
    drop(t);
    drop(log);
    log = open(dir.path());
    wait_for("the superseded k1 to go", || {
        read_all(&log, "c").0.len() == 10
    });
    let (got, _) = read_all(&log, "c");
    assert_eq!(
        got.last().unwrap(),
        &(end, "k1".to_string(), Some("\"new\"".to_string()))
    );

    // A compacted topic takes keyed records only.
    assert!(matches!(
        append(&log, "c", vec![record(None, Some("1"))]),
        Err(Error::KeyRequired(_))
    ));
}

#[test]
fn tombstones_go_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic_blocking(
        "c",
        TopicConfig {
            compaction: Some(Compaction {
                tombstone_retention_ms: 300,
            }),
            ..TopicConfig::default()
        },
    )
    .unwrap();
    append(
        &log,
        "c",
        vec![
            record(Some("a"), Some("1")),
            record(Some("b"), Some("2")),
            record(Some("a"), None),
        ],
    )
    .unwrap();
    // First the put of "a" goes and its tombstone stays readable...
    wait_for("the superseded put", || read_all(&log, "c").0.len() == 2);
    let (got, _) = read_all(&log, "c");
    assert_eq!(got[1], (2, "a".to_string(), None));
    // ...then the tombstone goes too, and reads end at the end offset.
    wait_for("the tombstone", || read_all(&log, "c").0.len() == 1);
    let (got, next) = read_all(&log, "c");
    assert_eq!(got, vec![(1, "b".to_string(), Some("2".to_string()))]);
    assert_eq!(next, 3);
}
