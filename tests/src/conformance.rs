//! The storage seam's conformance suite: what every engine behind
//! [`sluice_log::Backend`] must do, written against the trait alone. Each check
//! takes a fresh engine; `tests/tests/conformance.rs` runs every check on every
//! engine, so a new engine is one more line there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_log::groups::{Coordinator, GroupError};
use sluice_log::{
    AppendRequest, AppendUnit, Backend, Error, NewRecord, RecordParts, StateBatch, Topic,
    TopicConfig, ValueKind, partition_for_key, wait,
};

/// An engine under test, fresh, and what it needs to stay alive (a temporary
/// directory, ...).
pub type Engine = (Arc<dyn Backend>, Box<dyn std::any::Any>);

/// What a check runs against: an engine, and the prefix of every topic, group and
/// store name it makes (so checks can share a cluster with other tests and runs).
pub struct Suite {
    pub backend: Arc<dyn Backend>,
    pub prefix: String,
}

impl Suite {
    /// `name` under the suite's prefix.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// One check of the suite.
pub type Check = fn(&Suite);

/// Every check, by name; `tests/tests/conformance.rs` has a test per check and
/// engine, and fails if one is missing.
pub const CHECKS: &[(&str, Check)] = &[
    (
        "dense_offsets_in_request_order",
        dense_offsets_in_request_order,
    ),
    ("reads_honour_their_limits", reads_honour_their_limits),
    (
        "reads_outside_the_range_are_refused",
        reads_outside_the_range_are_refused,
    ),
    ("a_dedupe_key_is_written_once", a_dedupe_key_is_written_once),
    ("placement_is_murmur2", placement_is_murmur2),
    ("subscribers_hear_of_appends", subscribers_hear_of_appends),
    ("offset_for_timestamp", offset_for_timestamp),
    (
        "topics_are_created_listed_and_deleted",
        topics_are_created_listed_and_deleted,
    ),
    ("group_offsets_are_stored", group_offsets_are_stored),
    ("fencing_tokens_never_repeat", fencing_tokens_never_repeat),
    ("group_commits_are_fenced", group_commits_are_fenced),
    ("revoke_before_assign", revoke_before_assign),
    (
        "cluster_members_are_fenced_and_move",
        cluster_members_are_fenced_and_move,
    ),
    ("state_batches_are_atomic", state_batches_are_atomic),
    (
        "an_older_state_writer_is_fenced",
        an_older_state_writer_is_fenced,
    ),
    ("state_shards_write_apart", state_shards_write_apart),
    (
        "state_batches_append_with_their_commit",
        state_batches_append_with_their_commit,
    ),
    (
        "retention_start_moves_only_forward",
        retention_start_moves_only_forward,
    ),
];

fn create(b: &Arc<dyn Backend>, name: &str, config: TopicConfig) -> Arc<Topic> {
    wait(|r| b.create_topic(name, config, r)).expect("create topic")
}

fn record(key: Option<&str>, value: &str, timestamp: u64) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("a string is JSON");
    RecordParts {
        key,
        value: &json,
        kind: ValueKind::Json,
        timestamp,
        headers: &[],
    }
    .encode()
}

fn append(b: &Arc<dyn Backend>, t: &Topic, records: &[(u32, Vec<u8>)]) -> Vec<(u32, u64)> {
    wait(|r| {
        b.append(
            AppendRequest {
                topic: t.name().to_string(),
                topic_id: t.id(),
                units: vec![AppendUnit {
                    dedupe_key: None,
                    records: records
                        .iter()
                        .map(|(p, bytes)| NewRecord {
                            partition: *p,
                            bytes: bytes.clone(),
                        })
                        .collect(),
                }],
            },
            r,
        )
    })
    .expect("append")
}

/// `(offset, value)` of the records read from `from`.
fn read(b: &Arc<dyn Backend>, t: &Topic, p: u32, from: u64, max: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    b.read(t, p, from, max, usize::MAX, &mut |o, r| {
        let v: String = serde_json::from_slice(r.value).expect("a JSON string");
        out.push((o, v))
    })
    .expect("read");
    out
}

/// Offsets start at 0 and are dense per partition; an append is answered in
/// request order, mixing partitions; what was answered is what is read.
pub fn dense_offsets_in_request_order(s: &Suite) {
    let b = &s.backend;
    let t = create(
        b,
        &s.name("dense"),
        TopicConfig {
            partitions: 3,
            ..Default::default()
        },
    );
    let records: Vec<(u32, Vec<u8>)> = (0..12)
        .map(|i| (i % 3, record(None, &format!("v{i}"), 1_000)))
        .collect();
    let answered = append(b, &t, &records);
    let expected: Vec<(u32, u64)> = (0..12).map(|i| (i % 3, u64::from(i / 3))).collect();
    assert_eq!(answered, expected);
    let more = append(b, &t, &[(1, record(None, "late", 1_000))]);
    assert_eq!(more, vec![(1, 4)]);
    let read1 = read(b, &t, 1, 0, 100);
    assert_eq!(
        read1,
        vec![
            (0, "v1".into()),
            (1, "v4".into()),
            (2, "v7".into()),
            (3, "v10".into()),
            (4, "late".into())
        ]
    );
    let t = b.topic(&s.name("dense")).expect("topic");
    let ends: Vec<u64> = t.partitions().iter().map(|p| p.end_offset).collect();
    assert_eq!(ends, vec![4, 5, 4]);
}

/// A read takes at most `max_records`, stops at the byte budget but always takes
/// one record, and says where to go on.
pub fn reads_honour_their_limits(s: &Suite) {
    let b = &s.backend;
    let t = create(b, &s.name("limits"), TopicConfig::default());
    let big = "x".repeat(1000);
    let records: Vec<(u32, Vec<u8>)> = (0..10).map(|_| (0, record(None, &big, 1))).collect();
    append(b, &t, &records);
    let mut n = 0;
    let out = b.read(&t, 0, 2, 3, usize::MAX, &mut |_, _| n += 1).unwrap();
    assert_eq!((n, out.records, out.next_offset), (3, 3, 5));
    assert_eq!(out.high_watermark, 10);
    let mut n = 0;
    let out = b.read(&t, 0, 0, 100, 10, &mut |_, _| n += 1).unwrap();
    assert_eq!(
        (n, out.next_offset),
        (1, 1),
        "one record however small the budget"
    );
    let mut n = 0;
    let out = b.read(&t, 0, 0, 100, 2500, &mut |_, _| n += 1).unwrap();
    assert!((1..=3).contains(&n), "about the byte budget: {n} records");
    assert_eq!(out.next_offset, n as u64);
    let out = b.read(&t, 0, 10, 100, usize::MAX, &mut |_, _| {}).unwrap();
    assert_eq!(
        (out.records, out.next_offset),
        (0, 10),
        "at the end: nothing yet"
    );
}

/// Offsets past the end, partitions and topics that do not exist: refused, not
/// guessed.
pub fn reads_outside_the_range_are_refused(s: &Suite) {
    let b = &s.backend;
    let t = create(b, &s.name("range"), TopicConfig::default());
    append(b, &t, &[(0, record(None, "a", 1))]);
    assert!(matches!(
        b.read(&t, 0, 2, 10, usize::MAX, &mut |_, _| {}),
        Err(Error::OffsetOutOfRange {
            offset: 2,
            start: 0,
            end: 1
        })
    ));
    assert!(matches!(
        b.read(&t, 5, 0, 10, usize::MAX, &mut |_, _| {}),
        Err(Error::PartitionNotFound { .. })
    ));
    assert!(b.topic(&s.name("never-made")).is_none());
}

/// A unit appended again under the same dedupe key writes nothing and is
/// answered with the first offsets.
pub fn a_dedupe_key_is_written_once(s: &Suite) {
    let b = &s.backend;
    let t = create(
        b,
        &s.name("dedupe"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let unit = |key: &[u8]| AppendUnit {
        dedupe_key: Some(key.to_vec()),
        records: vec![
            NewRecord {
                partition: 0,
                bytes: record(None, "a", 1),
            },
            NewRecord {
                partition: 1,
                bytes: record(None, "b", 1),
            },
        ],
    };
    let send = |units: Vec<AppendUnit>| {
        wait(|r| {
            b.append(
                AppendRequest {
                    topic: t.name().into(),
                    topic_id: t.id(),
                    units,
                },
                r,
            )
        })
        .unwrap()
    };
    let first = send(vec![unit(b"k1")]);
    assert_eq!(first, vec![(0, 0), (1, 0)]);
    let again = send(vec![unit(b"k2"), unit(b"k1")]);
    assert_eq!(again, vec![(0, 1), (1, 1), (0, 0), (1, 0)]);
    assert_eq!(read(b, &t, 0, 0, 100).len(), 2, "k1 was written once");
}

/// The partition of a keyed record is Kafka's murmur2 placement, chosen above
/// the seam: the topic picks it, the engine keeps it.
pub fn placement_is_murmur2(s: &Suite) {
    let b = &s.backend;
    let t = create(
        b,
        &s.name("placed"),
        TopicConfig {
            partitions: 6,
            ..Default::default()
        },
    );
    for key in ["a", "customer-17", "ünïcode", ""] {
        assert_eq!(
            t.pick_partition(Some(key)),
            partition_for_key(key.as_bytes(), 6)
        );
        let p = t.pick_partition(Some(key));
        let got = append(b, &t, &[(p, record(Some(key), "v", 1))]);
        assert_eq!(got[0].0, p);
    }
}

/// Subscribers hear of every partition whose end moved, with the new end, and
/// any number may subscribe.
pub fn subscribers_hear_of_appends(s: &Suite) {
    let b = &s.backend;
    let t = create(
        b,
        &s.name("heard"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let ends: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for seen in &ends {
        let seen = seen.clone();
        let id = t.id();
        b.subscribe(Arc::new(move |topic, partition, end| {
            if topic == id && partition == 1 {
                seen.fetch_max(end, Ordering::AcqRel);
            }
        }));
    }
    append(
        b,
        &t,
        &[(1, record(None, "a", 1)), (1, record(None, "b", 1))],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while ends.iter().any(|e| e.load(Ordering::Acquire) < 2) {
        assert!(
            Instant::now() < deadline,
            "a subscriber never heard of the append"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The offset for a timestamp is the first record at or after it, else the end.
pub fn offset_for_timestamp(s: &Suite) {
    let b = &s.backend;
    let t = create(b, &s.name("timed"), TopicConfig::default());
    let records: Vec<(u32, Vec<u8>)> = [100, 200, 200, 300]
        .iter()
        .map(|ts| (0, record(None, "v", *ts)))
        .collect();
    append(b, &t, &records);
    for (ts, offset) in [(0, 0), (100, 0), (150, 1), (200, 1), (250, 3), (301, 4)] {
        assert_eq!(
            b.offset_for_timestamp(&t, 0, ts).unwrap(),
            offset,
            "at {ts}"
        );
    }
}

/// Topics are listed by name and described per partition; a deleted topic is
/// gone, and one made again under its name is another topic.
pub fn topics_are_created_listed_and_deleted(s: &Suite) {
    let b = &s.backend;
    let first = create(
        b,
        &s.name("b-topic"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    create(b, &s.name("a-topic"), TopicConfig::default());
    let names: Vec<String> = b
        .topics()
        .iter()
        .filter_map(|t| t.name().strip_prefix(&s.prefix).map(str::to_string))
        .collect();
    assert_eq!(names, vec!["a-topic", "b-topic"], "listed by name");
    assert!(matches!(
        wait(|r| b.create_topic(&s.name("a-topic"), TopicConfig::default(), r)),
        Err(Error::TopicExists(_))
    ));
    let parts = first.partitions();
    assert_eq!(parts.len(), 2);
    assert!(
        parts
            .iter()
            .all(|p| p.start_offset == 0 && p.end_offset == 0)
    );
    wait(|r| b.delete_topic(&s.name("b-topic"), r)).unwrap();
    assert!(b.topic(&s.name("b-topic")).is_none());
    assert!(matches!(
        wait(|r| b.delete_topic(&s.name("b-topic"), r)),
        Err(Error::TopicNotFound(_))
    ));
    let again = create(b, &s.name("b-topic"), TopicConfig::default());
    assert_ne!(again.id(), first.id());
    // An append aimed at the old topic is refused, not misplaced.
    let stale = wait(|r| {
        b.append(
            AppendRequest {
                topic: s.name("b-topic"),
                topic_id: first.id(),
                units: vec![AppendUnit {
                    dedupe_key: None,
                    records: vec![NewRecord {
                        partition: 0,
                        bytes: record(None, "x", 1),
                    }],
                }],
            },
            r,
        )
    });
    assert!(stale.is_err());
}

/// Committed offsets are stored per group and partition, listed, and deleted.
pub fn group_offsets_are_stored(s: &Suite) {
    let b = &s.backend;
    let t = create(
        b,
        &s.name("consumed"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    append(
        b,
        &t,
        &[(0, record(None, "a", 1)), (0, record(None, "b", 1))],
    );
    let g = s.name("g");
    assert_eq!(b.committed_offsets(&g, &t).unwrap(), vec![None, None]);
    wait(|r| b.commit_offsets(&g, vec![(t.clone(), 0, 2)], r)).unwrap();
    assert_eq!(b.committed_offsets(&g, &t).unwrap(), vec![Some(2), None]);
    let groups: Vec<String> = b
        .committed_groups()
        .unwrap()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    assert!(groups.contains(&g), "{groups:?}");
    assert_eq!(wait(|r| b.delete_group(&g, r)).unwrap(), 1);
    assert_eq!(b.committed_offsets(&g, &t).unwrap(), vec![None, None]);
}

/// Blocks of fencing tokens never overlap and only go up.
pub fn fencing_tokens_never_repeat(s: &Suite) {
    let b = &s.backend;
    let blocks: Vec<_> = (0..3)
        .map(|_| b.reserve_fencing_tokens().unwrap())
        .collect();
    for w in blocks.windows(2) {
        assert!(!w[0].is_empty());
        assert!(w[1].start >= w[0].end, "{blocks:?}");
    }
}

fn coordinator(b: &Arc<dyn Backend>) -> Coordinator {
    let b = b.clone();
    Coordinator::new(
        Box::new(move || b.reserve_fencing_tokens().map_err(|e| e.to_string())),
        Duration::from_secs(30),
        None,
    )
}

/// Where the engine's cluster keeps group membership: a member's commit must
/// carry its epoch; a second member gets partitions only once the first gave
/// them up (never one in both members' latest answers, heartbeating in turn);
/// a leave hands the partitions to the other; the members and the group are
/// listed.
pub fn cluster_members_are_fenced_and_move(s: &Suite) {
    let b = &s.backend;
    let groups = b
        .cluster_groups()
        .expect("an engine run on this check keeps groups in its cluster");
    let t = create(
        b,
        &s.name("shared"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let g = s.name("members");
    let until = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut a = groups.heartbeat(&g, &t, "a", None).unwrap();
    until(
        "a alone holds both partitions",
        Box::new(|| {
            a = groups.heartbeat(&g, &t, "a", None).unwrap();
            a.partitions == [0, 1]
        }),
    );
    match groups.commit(&g, &t, "a", a.epoch + 1, &[(0, 0)]) {
        Err(Error::StaleGeneration(_)) => {}
        other => panic!("a commit at another epoch: {other:?}"),
    }
    groups.commit(&g, &t, "a", a.epoch, &[(0, 0)]).unwrap();
    assert_eq!(b.committed_offsets(&g, &t).unwrap(), vec![Some(0), None]);

    let mut last_b = Vec::new();
    until(
        "a and b hold one partition each",
        Box::new(|| {
            let now_a = groups.heartbeat(&g, &t, "a", None).unwrap().partitions;
            assert!(
                now_a.iter().all(|p| !last_b.contains(p)),
                "a {now_a:?} and b {last_b:?}"
            );
            last_b = groups.heartbeat(&g, &t, "b", None).unwrap().partitions;
            assert!(
                last_b.iter().all(|p| !now_a.contains(p)),
                "a {now_a:?} and b {last_b:?}"
            );
            now_a.len() == 1 && last_b.len() == 1
        }),
    );
    let (epoch, members) = groups.members(&g).unwrap();
    assert!(epoch.is_some());
    assert_eq!(
        members
            .iter()
            .map(|m| m.consumer.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(groups.groups().unwrap().contains(&g));
    assert!(groups.leave(&g, &t, "a").unwrap());
    until(
        "b holds both after a left",
        Box::new(|| groups.heartbeat(&g, &t, "b", None).unwrap().partitions == [0, 1]),
    );
    assert!(!groups.leave(&g, &t, "a").unwrap(), "a left already");
}

/// A commit must carry the consumer's current generation.
pub fn group_commits_are_fenced(s: &Suite) {
    let b = &s.backend;
    let c = coordinator(b);
    let t = create(
        b,
        &s.name("fenced"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let join = |who: &str| {
        c.join("g", "fenced", t.id(), 2, who, None, None, false)
            .unwrap()
    };
    let a1 = join("a");
    c.answered("g", "fenced", "a", a1.generation);
    let b1 = join("b");
    let a2 = join("a");
    assert_ne!(a1.generation, a2.generation, "a's assignment changed");
    assert!(matches!(
        c.check_commit("g", "a", a1.generation, &[("fenced", 0)], None, false),
        Err(GroupError::Stale(_))
    ));
    assert_eq!(a2.assignment.len(), 1, "a keeps one partition");
    let kept = a2.assignment[0];
    c.check_commit("g", "a", a2.generation, &[("fenced", kept)], None, false)
        .expect("the current generation commits");
    assert!(matches!(
        c.check_commit("g", "b", b1.generation, &[("fenced", kept)], None, false),
        Err(GroupError::Stale(_))
    ));
    assert!(b1.generation > a1.generation);
}

/// A partition moves to a new member only after its owner was told it lost it.
pub fn revoke_before_assign(s: &Suite) {
    let b = &s.backend;
    let c = coordinator(b);
    let t = create(
        b,
        &s.name("moved"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let join = |who: &str| {
        c.join("g", "moved", t.id(), 2, who, None, None, false)
            .unwrap()
    };
    let a = join("a");
    assert_eq!(a.assignment, vec![0, 1]);
    c.answered("g", "moved", "a", a.generation);
    let b1 = join("b");
    assert!(
        b1.assignment.is_empty(),
        "nothing for b while a still holds both"
    );
    let a2 = join("a");
    assert_eq!(a2.assignment.len(), 1, "a is asked to give one up");
    assert!(join("b").assignment.is_empty(), "not before a was told");
    c.answered("g", "moved", "a", a2.generation);
    let b2 = join("b");
    assert_eq!(b2.assignment.len(), 1);
    assert_ne!(b2.assignment, a2.assignment, "never two owners");
}

/// Rows and the offsets they reflect commit together, and are read together; a
/// new definition keeps them.
pub fn state_batches_are_atomic(s: &Suite) {
    let b = &s.backend;
    let st = s.name("s");
    wait(|r| b.create_store(&st, b"def".to_vec(), vec![0, 0], 1, r)).unwrap();
    assert!(matches!(
        wait(|r| b.create_store(&st, Vec::new(), Vec::new(), 1, r)),
        Err(Error::StoreExists(_))
    ));
    let ours: Vec<(String, Vec<u8>)> = b
        .stores()
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.starts_with(&s.prefix))
        .collect();
    assert_eq!(ours, vec![(st.clone(), b"def".to_vec())]);
    let w = b.open_writer(&st, 0).unwrap();
    let batch = StateBatch {
        rows: vec![
            ("k1".into(), Some(b"1".to_vec())),
            ("k2".into(), Some(b"2".to_vec())),
        ],
        offsets: Some(vec![5, 7]),
        skipped: 1,
        appends: Vec::new(),
    };
    wait(|r| b.commit_state(&st, 0, w, batch, r)).unwrap();
    let read = b.read_state(&st, &["k1", "k2", "k3"], 2).unwrap();
    assert_eq!(
        read.rows,
        vec![Some(b"1".to_vec()), Some(b"2".to_vec()), None]
    );
    assert_eq!(read.offsets, vec![5, 7]);
    let delete = StateBatch {
        rows: vec![("k1".into(), None)],
        offsets: Some(vec![6, 7]),
        skipped: 0,
        appends: Vec::new(),
    };
    wait(|r| b.commit_state(&st, 0, w, delete, r)).unwrap();
    let mut keys = Vec::new();
    b.scan_state(&st, "", &mut |k, _| {
        keys.push(k.to_string());
        true
    })
    .unwrap();
    assert_eq!(keys, vec!["k2"]);
    let stats = b.state_stats(&st).unwrap();
    assert_eq!((stats.rows, stats.skipped), (1, 1));
    // A new definition keeps the rows and offsets.
    wait(|r| b.update_store(&st, b"def2".to_vec(), r)).unwrap();
    assert!(
        b.stores()
            .unwrap()
            .contains(&(st.clone(), b"def2".to_vec()))
    );
    let read = b.read_state(&st, &["k2"], 2).unwrap();
    assert_eq!(
        (read.rows[0].as_deref(), read.offsets.clone()),
        (Some(&b"2"[..]), vec![6, 7])
    );
    assert!(matches!(
        wait(|r| b.update_store(&s.name("none"), Vec::new(), r)),
        Err(Error::StoreNotFound(_))
    ));
    wait(|r| b.drop_store(&st, r)).unwrap();
    assert!(!b.stores().unwrap().iter().any(|(n, _)| *n == st));
    assert!(b.read_state(&st, &["k2"], 0).unwrap().rows[0].is_none());
}

/// Opening a writer fences the one before: its batches write nothing.
pub fn an_older_state_writer_is_fenced(s: &Suite) {
    let b = &s.backend;
    let st = s.name("s");
    wait(|r| b.create_store(&st, Vec::new(), vec![0], 1, r)).unwrap();
    let old = b.open_writer(&st, 0).unwrap();
    let new = b.open_writer(&st, 0).unwrap();
    assert!(new > old);
    let batch = |v: &[u8], o: u64| StateBatch {
        rows: vec![("k".into(), Some(v.to_vec()))],
        offsets: Some(vec![o]),
        skipped: 0,
        appends: Vec::new(),
    };
    assert!(matches!(
        wait(|r| b.commit_state(&st, 0, old, batch(b"old", 1), r)),
        Err(Error::Fenced { .. })
    ));
    wait(|r| b.commit_state(&st, 0, new, batch(b"new", 2), r)).unwrap();
    let read = b.read_state(&st, &["k"], 1).unwrap();
    assert_eq!(
        (read.rows[0].as_deref(), read.offsets[0]),
        (Some(&b"new"[..]), 2)
    );
}

/// Records a batch appends are written with it, all or nothing: a fenced
/// writer's or a refused batch's appends are not written, nor its rows.
pub fn state_batches_append_with_their_commit(s: &Suite) {
    let b = &s.backend;
    let out = create(
        b,
        &s.name("derived"),
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    );
    let st = s.name("p");
    wait(|r| b.create_store(&st, Vec::new(), vec![0], 1, r)).unwrap();
    let old = b.open_writer(&st, 0).unwrap();
    let new = b.open_writer(&st, 0).unwrap();
    let appends = |topic: &Topic, values: &[(u32, &str)]| {
        vec![AppendRequest {
            topic: topic.name().to_string(),
            topic_id: topic.id(),
            units: vec![AppendUnit {
                dedupe_key: None,
                records: values
                    .iter()
                    .map(|(p, v)| NewRecord {
                        partition: *p,
                        bytes: record(Some("k"), v, 1_000),
                    })
                    .collect(),
            }],
        }]
    };
    let batch = |row: &[u8], o: u64, appends: Vec<AppendRequest>| StateBatch {
        rows: vec![("k".into(), Some(row.to_vec()))],
        offsets: Some(vec![o]),
        skipped: 0,
        appends,
    };
    assert!(matches!(
        wait(|r| b.commit_state(&st, 0, old, batch(b"old", 1, appends(&out, &[(0, "x")])), r)),
        Err(Error::Fenced { .. })
    ));
    wait(|r| {
        b.commit_state(
            &st,
            0,
            new,
            batch(b"new", 3, appends(&out, &[(0, "a"), (1, "b"), (0, "c")])),
            r,
        )
    })
    .unwrap();
    // A batch naming a topic that is not there writes nothing.
    let gone = Topic::describe(u64::MAX, &s.name("gone"), TopicConfig::default(), 0);
    assert!(matches!(
        wait(|r| b.commit_state(
            &st,
            0,
            new,
            batch(b"lost", 9, appends(&gone, &[(0, "z")])),
            r
        )),
        Err(Error::TopicNotFound(_))
    ));
    let read_state = b.read_state(&st, &["k"], 1).unwrap();
    assert_eq!(
        (read_state.rows[0].as_deref(), read_state.offsets[0]),
        (Some(&b"new"[..]), 3)
    );
    // The appended records are read in order (an engine with transactions may
    // leave a marker's offset after them).
    let values = |p: u32| -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got: Vec<String> = read(b, &out, p, 0, 100)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let want = if p == 0 { 2 } else { 1 };
            if got.len() >= want || std::time::Instant::now() > deadline {
                return got;
            }
            b.refresh_sizes(&out);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert_eq!(values(0), vec!["a".to_string(), "c".to_string()]);
    assert_eq!(values(1), vec!["b".to_string()]);
}

/// A store of several shards (where the engine splits stores) has a writer per
/// shard, fenced apart from the others; each shard's batches move only its own
/// partitions' offsets, and the store counts a row whose parts several shards
/// hold once.
pub fn state_shards_write_apart(s: &Suite) {
    let b = &s.backend;
    let shards = b.shards(4);
    if shards == 1 {
        // One writer for every partition: the tests above cover it.
        let st = s.name("one");
        assert!(matches!(
            wait(|r| b.create_store(&st, Vec::new(), vec![0; 4], 2, r)),
            Err(Error::Invalid(_))
        ));
        return;
    }
    assert_eq!(shards, 4);
    let st = s.name("sh");
    wait(|r| b.create_store(&st, Vec::new(), vec![0; 4], 2, r)).unwrap();
    let w0 = b.open_writer(&st, 0).unwrap();
    let w1 = b.open_writer(&st, 1).unwrap();
    let batch = |shard: u32, o: u64| StateBatch {
        rows: vec![(
            sluice_log::shard_key("k", shard),
            Some(vec![b'0' + shard as u8]),
        )],
        // Every partition named; only the shard's own are taken.
        offsets: Some(vec![o; 4]),
        skipped: 1,
        appends: Vec::new(),
    };
    wait(|r| b.commit_state(&st, 0, w0, batch(0, 10), r)).unwrap();
    wait(|r| b.commit_state(&st, 1, w1, batch(1, 20), r)).unwrap();
    let read = b.read_state(&st, &[], 4).unwrap();
    assert_eq!(read.offsets, vec![10, 20, 10, 20]);
    let stats = b.state_stats(&st).unwrap();
    assert_eq!((stats.rows, stats.skipped), (1, 2), "one row of two parts");
    // A new writer of shard 1 fences the old one of shard 1 only.
    let w1b = b.open_writer(&st, 1).unwrap();
    assert!(matches!(
        wait(|r| b.commit_state(&st, 1, w1, batch(1, 21), r)),
        Err(Error::Fenced { .. })
    ));
    wait(|r| b.commit_state(&st, 0, w0, batch(0, 11), r)).unwrap();
    wait(|r| b.commit_state(&st, 1, w1b, batch(1, 22), r)).unwrap();
    assert_eq!(
        b.read_state(&st, &[], 4).unwrap().offsets,
        vec![11, 22, 11, 22]
    );
    let delete = StateBatch {
        rows: vec![(sluice_log::shard_key("k", 0), None)],
        offsets: None,
        skipped: 0,
        appends: Vec::new(),
    };
    wait(|r| b.commit_state(&st, 0, w0, delete, r)).unwrap();
    assert_eq!(
        b.state_stats(&st).unwrap().rows,
        1,
        "shard 1's part is left"
    );
    assert!(matches!(b.open_writer(&st, 2), Err(Error::Invalid(_))));
    wait(|r| b.drop_store(&st, r)).unwrap();
}

/// Retention moves a partition's start forward, never back, and reads below it
/// are refused.
pub fn retention_start_moves_only_forward(s: &Suite) {
    let b = &s.backend;
    let config = TopicConfig {
        retention_bytes: Some(4_000),
        ..Default::default()
    };
    let t = create(b, &s.name("kept"), config);
    let value = "r".repeat(1_000);
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0..20 {
        let records: Vec<(u32, Vec<u8>)> = (0..5).map(|_| (0, record(None, &value, 1))).collect();
        append(b, &t, &records);
        let start = b.topic(&s.name("kept")).unwrap().partitions()[0].start_offset;
        assert!(
            start >= last,
            "round {round}: start went back from {last} to {start}"
        );
        last = start;
    }
    while b.topic(&s.name("kept")).unwrap().partitions()[0].start_offset == 0 {
        assert!(
            Instant::now() < deadline,
            "retention never removed anything"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = b.topic(&s.name("kept")).unwrap().partitions()[0].start_offset;
    assert!(start >= last);
    assert!(matches!(
        b.read(&t, 0, 0, 1, usize::MAX, &mut |_, _| {}),
        Err(Error::OffsetOutOfRange { .. })
    ));
}
