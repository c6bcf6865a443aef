//! Stores that hold back a topic's retention (sinks): records at or above a
//! store's offset are not deleted for their age; moving the offset, or dropping
//! the hold, lets retention go on.

use sluice_log::{
    AppendRequest, AppendUnit, Log, LogOptions, NewRecord, RecordParts, StateBatch, Topic,
    TopicConfig, ValueKind, wait,
};

/// Waits until partitions 0 and 1 of `topic` start at `starts`; a start
/// beyond them fails at once (retention went past a hold).
fn starts_reach(topic: &Topic, starts: [u64; 2]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = [0, 1].map(|p| topic.partition(p).unwrap().start_offset);
        assert!(
            now[0] <= starts[0] && now[1] <= starts[1],
            "retention deleted past a hold: {now:?}, hold {starts:?}"
        );
        if now == starts {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "starts {now:?}, expected {starts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_store_holds_back_retention_by_time_until_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions {
            maintenance_interval: std::time::Duration::from_millis(5),
            ..LogOptions::default()
        },
    )
    .expect("open");
    let topic = log
        .create_topic_blocking(
            "t",
            TopicConfig {
                partitions: 2,
                retention_ms: Some(1),
                ..TopicConfig::default()
            },
        )
        .unwrap();
    wait(|r| log.create_store("_sink.s", Vec::new(), vec![4, 2], r)).unwrap();
    wait(|r| log.hold_retention("_sink.s", Some(topic.id()), r)).unwrap();
    // Ten records per partition, one batch each, all long past their retention.
    for i in 0..20u64 {
        log.append_blocking(AppendRequest {
            topic: "t".into(),
            topic_id: topic.id(),
            units: vec![AppendUnit {
                dedupe_key: None,
                records: vec![NewRecord {
                    partition: (i % 2) as u32,
                    bytes: RecordParts {
                        timestamp: 1_000 + i,
                        key: None,
                        headers: &[],
                        kind: ValueKind::Json,
                        value: b"1",
                    }
                    .encode(),
                }],
            }],
        })
        .unwrap();
    }
    starts_reach(&topic, [4, 2]);
    let w = log.open_writer("_sink.s").unwrap();
    let batch = StateBatch {
        rows: Vec::new(),
        offsets: Some(vec![7, 2]),
        skipped: 0,
        appends: Vec::new(),
    };
    wait(|r| log.commit_state("_sink.s", w, batch, r)).unwrap();
    starts_reach(&topic, [7, 2]);
    wait(|r| log.hold_retention("_sink.s", None, r)).unwrap();
    starts_reach(&topic, [10, 10]);
}
