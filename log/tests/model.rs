//! Property test: random sequences of log operations, with restarts among them,
//! checked against a plain in-memory model of topics, partitions and dedupe keys.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use sluice_log::{
    AppendRequest, AppendUnit, Error, Log, LogOptions, NewRecord, RecordParts, TopicConfig,
    ValueKind,
};

/// A generated record: explicit partition, key number, value length.
type GenRecord = (Option<u32>, Option<u8>, u16);
/// A generated unit: dedupe key number and records.
type GenUnit = (Option<u8>, Vec<GenRecord>);

#[derive(Debug, Clone)]
enum Op {
    Create {
        topic: u8,
        partitions: u32,
    },
    Delete {
        topic: u8,
    },
    Append {
        topic: u8,
        units: Vec<GenUnit>,
    },
    Read {
        topic: u8,
        partition: u32,
        from: u64,
        limit: usize,
        max_bytes: usize,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        proptest::option::of(0u32..4),
        proptest::option::of(0u8..6),
        0u16..400,
    );
    let unit = (
        proptest::option::of(0u8..4),
        proptest::collection::vec(record, 0..5),
    );
    prop_oneof![
        1 => (0u8..3, 1u32..4).prop_map(|(topic, partitions)| Op::Create { topic, partitions }),
        1 => (0u8..3).prop_map(|topic| Op::Delete { topic }),
        6 => (0u8..3, proptest::collection::vec(unit, 1..3)).prop_map(|(topic, units)| Op::Append { topic, units }),
        3 => (0u8..3, 0u32..4, 0u64..12, 1usize..8, 1usize..2000)
            .prop_map(|(topic, partition, from, limit, max_bytes)| Op::Read { topic, partition, from, limit, max_bytes }),
        1 => Just(Op::Restart),
    ]
}

/// Records as (key, value) per partition; dedupe keys to their offsets.
#[derive(Default)]
struct ModelTopic {
    partitions: Vec<Vec<(Option<String>, Vec<u8>)>>,
    dedupe: HashMap<u8, Vec<(u32, u64)>>,
}

fn open(dir: &std::path::Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            two_phase_commit: false,
            ..LogOptions::default()
        },
    )
    .expect("open")
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut model: BTreeMap<String, ModelTopic> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create { topic, partitions } => {
                let name = format!("t{topic}");
                let r = log.create_topic_blocking(
                    &name,
                    TopicConfig {
                        partitions,
                        ..TopicConfig::default()
                    },
                );
                match model.entry(name) {
                    Entry::Occupied(_) => assert!(matches!(r, Err(Error::TopicExists(_)))),
                    Entry::Vacant(v) => {
                        r.expect("create");
                        v.insert(ModelTopic {
                            partitions: vec![Vec::new(); partitions as usize],
                            dedupe: HashMap::new(),
                        });
                    }
                }
            }
            Op::Delete { topic } => {
                let name = format!("t{topic}");
                let r = log.delete_topic_blocking(&name);
                if model.remove(&name).is_some() {
                    r.expect("delete");
                } else {
                    assert!(matches!(r, Err(Error::TopicNotFound(_))));
                }
            }
            Op::Append { topic, units } => {
                let name = format!("t{topic}");
                let Some(t) = log.topic(&name) else {
                    assert!(!model.contains_key(&name));
                    continue;
                };
                let m = model.get_mut(&name).expect("model has the topic");
                let n = t.partition_count();
                let mut request = AppendRequest {
                    topic: name.clone(),
                    topic_id: t.id(),
                    units: Vec::new(),
                };
                let mut expected = Vec::new();
                let mut pending: Vec<Vec<(Option<String>, Vec<u8>)>> = m.partitions.clone();
                let mut pending_dedupe = m.dedupe.clone();
                for (dk, records) in units {
                    let mut unit = AppendUnit {
                        dedupe_key: dk.map(|k| vec![k]),
                        records: Vec::new(),
                    };
                    let mut unit_offsets = Vec::new();
                    for (p, key, len) in records {
                        let key = key.map(|k| format!("k{k}"));
                        let partition = p
                            .map(|p| p % n)
                            .unwrap_or_else(|| t.pick_partition(key.as_deref()));
                        let value = vec![b'v'; len as usize];
                        let bytes = RecordParts {
                            timestamp: 1,
                            key: key.as_deref(),
                            headers: &[],
                            kind: ValueKind::Binary,
                            value: &value,
                        }
                        .encode();
                        unit.records.push(NewRecord { partition, bytes });
                        let part = &mut pending[partition as usize];
                        unit_offsets.push((partition, part.len() as u64));
                        part.push((key, value));
                    }
                    match dk.and_then(|k| pending_dedupe.get(&k).cloned()) {
                        Some(earlier) => {
                            // Undo: a deduplicated unit writes nothing.
                            for (p, _) in unit_offsets.iter().rev() {
                                pending[*p as usize].pop();
                            }
                            expected.extend(earlier);
                        }
                        None => {
                            if let Some(k) = dk {
                                pending_dedupe.insert(k, unit_offsets.clone());
                            }
                            expected.extend(unit_offsets);
                        }
                    }
                    request.units.push(unit);
                }
                let got = log.append_blocking(request).expect("append");
                assert_eq!(got, expected);
                m.partitions = pending;
                m.dedupe = pending_dedupe;
            }
            Op::Read {
                topic,
                partition,
                from,
                limit,
                max_bytes,
            } => {
                let name = format!("t{topic}");
                let Some(t) = log.topic(&name) else { continue };
                let m = &model[&name];
                let mut got = Vec::new();
                let r = log.read(&t, partition, from, limit, max_bytes, |o, v| {
                    got.push((o, v.key.map(str::to_string), v.value.to_vec()));
                });
                let Some(part) = m.partitions.get(partition as usize) else {
                    assert!(matches!(r, Err(Error::PartitionNotFound { .. })));
                    continue;
                };
                if from > part.len() as u64 {
                    assert!(matches!(r, Err(Error::OffsetOutOfRange { .. })));
                    continue;
                }
                let outcome = r.expect("read");
                assert_eq!(outcome.high_watermark, part.len() as u64);
                assert!(got.len() <= limit);
                for (i, (o, k, v)) in got.iter().enumerate() {
                    assert_eq!(*o, from + i as u64);
                    assert_eq!((k, v), (&part[*o as usize].0, &part[*o as usize].1));
                }
                if from < part.len() as u64 {
                    assert!(
                        !got.is_empty(),
                        "a read below the end returns at least one record"
                    );
                }
                assert_eq!(outcome.next_offset, from + got.len() as u64);
            }
            Op::Restart => {
                drop(log);
                log = open(dir.path());
                let names: Vec<String> =
                    log.topics().iter().map(|t| t.name().to_string()).collect();
                assert_eq!(names, model.keys().cloned().collect::<Vec<_>>());
                for (name, m) in &model {
                    let t = log.topic(name).unwrap();
                    for (p, part) in m.partitions.iter().enumerate() {
                        let info = t.partition(p as u32).unwrap();
                        assert_eq!((info.start_offset, info.end_offset), (0, part.len() as u64));
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
