//! A disk that fills up, against the real binary on a small tmpfs: appends are
//! refused cleanly below the free-space floor, everything acknowledged stays
//! readable, a start on a full disk opens, deletes free space, and writes resume
//! on their own once there is room again.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_log::{AppendRequest, AppendUnit, Log, LogOptions, NewRecord, RecordParts, ValueKind};
use sluice_tests::{Server, Tmpfs, client, create_topic, fetch_all, get_json};

async fn produce(c: &reqwest::Client, s: &Server, topic: &str, body: &Value) -> reqwest::Response {
    c.post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Fills the file system holding `dir` to its last byte; returns the filler.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let mut byte = [7u8; 1];
    while f.write_all(&byte).is_ok() {
        byte[0] = 8;
    }
    let _ = f.sync_all();
    path
}

/// Records of `keep` and of `big`, read back to the end.
async fn read_all(c: &reqwest::Client, s: &Server) -> (usize, usize) {
    let keep = fetch_all(c, s, "keep", 0).await.len();
    let mut big = 0;
    for p in 0..2 {
        let r = c
            .get(s.url(&format!(
                "/v1/topics/big/partitions/{p}/records?offset=0&limit=1"
            )))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return (keep, 0);
        }
        big += fetch_all(c, s, "big", p).await.len();
    }
    (keep, big)
}

#[tokio::test]
async fn a_full_disk_refuses_appends_keeps_reads_and_recovers() {
    let Some(fs) = Tmpfs::mount("a_full_disk_refuses_appends_keeps_reads_and_recovers", 200) else {
        return;
    };
    let mut s = Server::start_in(fs.path().join("data"), &[]);
    let c = client();
    create_topic(&c, &s, "keep", 1).await;
    create_topic(&c, &s, "big", 2).await;
    let small = json!({"records": (0..10).map(|i| json!({"key": format!("k{i}"), "value": i})).collect::<Vec<_>>()});
    assert_eq!(produce(&c, &s, "keep", &small).await.status(), 200);

    // Batches of 1 MB until the floor refuses one.
    let filler = "x".repeat(10_000);
    let batch = json!({"records": (0..100).map(|_| json!({"value": filler})).collect::<Vec<_>>()});
    let mut acked = 0;
    let mut refused = None;
    for _ in 0..400 {
        let r = produce(&c, &s, "big", &batch).await;
        match r.status().as_u16() {
            200 => acked += 100,
            507 => {
                refused = Some(r);
                break;
            }
            other => panic!("a produce got {other}: {}", r.text().await.unwrap()),
        }
    }
    let r = refused.expect("the disk never filled up");
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "insufficient_storage", "{problem}");
    assert!(acked > 0);
    let ready = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "insufficient_storage");
    assert!(
        body["detail"].as_str().unwrap().contains("bytes free"),
        "{body}"
    );
    let metrics = sluice_tests::get_text(&c, &s, "/metrics").await;
    assert!(metrics.contains("sluice_disk_free_bytes"), "{metrics}");

    // Reads, and what does not grow the store, go on.
    assert_eq!(read_all(&c, &s).await, (10, acked));
    let poll = c
        .get(s.url("/v1/groups/g/topics/keep/records?consumer=a&limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);

    // Something else takes the disk's last byte; reads still work.
    let filler = fill(fs.path());
    assert_eq!(read_all(&c, &s).await, (10, acked));
    assert_eq!(produce(&c, &s, "keep", &small).await.status(), 507);

    // A start on the full disk opens and serves.
    s.restart();
    assert_eq!(read_all(&c, &s).await, (10, acked));
    assert_eq!(produce(&c, &s, "keep", &small).await.status(), 507);
    // A delete frees space even now.
    let r = c.delete(s.url("/v1/topics/big")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        get_json(&c, &s, "/v1/topics").await["topics"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Once there is room, writes resume on their own: no restart, no command.
    std::fs::remove_file(filler).unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = produce(&c, &s, "keep", &small).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "appends did not resume");
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    let keep = fetch_all(&c, &s, "keep", 0).await;
    assert_eq!(keep.len(), 20);
}

/// When something else takes the disk's last byte and the store then has to grow
/// its file, the write that finds the disk full spends the reserve and goes
/// through: the store never meets the error, so it neither refuses writes nor
/// fails reads afterwards. The reserve is taken back once there is room.
#[test]
fn the_reserve_absorbs_the_store_meeting_a_full_disk() {
    let Some(fs) = Tmpfs::mount("the_reserve_absorbs_the_store_meeting_a_full_disk", 160) else {
        return;
    };
    let options = LogOptions {
        // Less than the reserve, once spent, leaves free.
        min_free_bytes: 48 << 20,
        reserve_bytes: 32 << 20,
        ..LogOptions::default()
    };
    let log = Log::open(&fs.path().join("data"), options).unwrap();
    assert!(log.disk().reserve_held);
    let topic = log
        .create_topic_blocking("t", sluice_log::TopicConfig::default())
        .unwrap();
    let append = |n: u64| {
        let records = (0..n)
            .map(|i| NewRecord {
                partition: 0,
                bytes: RecordParts {
                    timestamp: i,
                    kind: ValueKind::Json,
                    key: None,
                    headers: &[],
                    value: b"1",
                }
                .encode(),
            })
            .collect();
        log.append_blocking(AppendRequest {
            topic: "t".into(),
            topic_id: topic.id(),
            units: vec![AppendUnit {
                dedupe_key: None,
                records,
            }],
        })
    };
    append(100).unwrap();

    let filler = fill(fs.path());
    assert!(!log.disk().appends_allowed());
    // 8 MiB more in the file, in a state store (whose writes are not appends,
    // so the floor lets them through): the file has to grow.
    sluice_log::wait(|r| log.create_store("bulk", Vec::new(), Vec::new(), r)).unwrap();
    let writer = log.open_writer("bulk").unwrap();
    let value = vec![1u8; 64 << 10];
    let batch = sluice_log::StateBatch {
        rows: (0..128)
            .map(|i| (format!("{i:03}"), Some(value.clone())))
            .collect(),
        ..Default::default()
    };
    sluice_log::wait(|r| log.commit_state("bulk", writer, batch, r))
        .expect("the write that found the disk full went through");
    assert!(!log.is_poisoned());
    assert!(!log.disk().reserve_held, "the reserve was spent");
    let mut seen = 0;
    log.read(&topic, 0, 0, 1000, 1 << 20, |_, _| seen += 1)
        .unwrap();
    assert_eq!(seen, 100, "reads work");
    assert!(matches!(
        append(1),
        Err(sluice_log::Error::InsufficientStorage { .. })
    ));

    std::fs::remove_file(filler).unwrap();
    append(1).expect("appends resume once there is room");
    assert!(log.disk().reserve_held, "the reserve is taken back");
}
