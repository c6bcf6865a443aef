//! `sluice backup` while producers write, and `sluice restore`: the restored data is
//! a prefix of what the server acknowledged, record for record, holds everything
//! acknowledged before the backup began, and its table agrees with its topic.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{Server, binary, client, create_topic, fetch_all, get_json, table_caught_up};

const PARTITIONS: u32 = 4;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).output().unwrap()
}

/// `sluice backup` of the server into `file`; asserts it succeeded.
async fn backup_to(s: &Server, file: &std::path::Path) -> std::process::Output {
    let (base, out) = (s.base.clone(), file.to_string_lossy().into_owned());
    let backup =
        tokio::task::spawn_blocking(move || run(&["backup", "--url", &base, "--out", &out]))
            .await
            .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    backup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_writing_restores_a_consistent_prefix() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "orders", PARTITIONS).await;
    let r = c
        .post(s.url("/v1/tables"))
        .json(&json!({"sql": "CREATE TABLE per_key AS SELECT k, COUNT(*) AS n FROM orders GROUP BY k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Producers: every acknowledged (partition, offset) is kept.
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, url, acked, stop) = (
            c.clone(),
            s.url("/v1/topics/orders/records"),
            acked.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let records: Vec<Value> = (0..20)
                    .map(|j| json!({"key": format!("k{}", (i + j) % 7), "value": {"k": format!("k{}", (i + j) % 7), "w": w, "i": i + j}}))
                    .collect();
                i += 20;
                let r = c.post(&url).json(&json!({"records": records})).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.unwrap();
                let mut a = acked.lock().unwrap();
                for o in body["offsets"].as_array().unwrap() {
                    a.push((o["partition"].as_u64().unwrap(), o["offset"].as_u64().unwrap()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before: Vec<(u64, u64)> = acked.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.redb");
    let backup = backup_to(&s, &file).await;
    assert!(String::from_utf8_lossy(&backup.stdout).contains("backup written to"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(!before.is_empty());

    let restored_dir = dir.path().join("restored");
    let restore = run(&[
        "restore",
        "--from",
        &file.to_string_lossy(),
        "--data-dir",
        &restored_dir.to_string_lossy(),
    ]);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    // A second restore into the same directory is refused.
    let again = run(&[
        "restore",
        "--from",
        &file.to_string_lossy(),
        "--data-dir",
        &restored_dir.to_string_lossy(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));

    let r = Server::start_in(restored_dir, &[]);
    let mut restored_total = 0;
    for p in 0..PARTITIONS {
        let original = fetch_all(&c, &s, "orders", p).await;
        let copy = fetch_all(&c, &r, "orders", p).await;
        for (i, rec) in copy.iter().enumerate() {
            assert_eq!(rec["offset"], i as u64, "dense offsets in partition {p}");
            assert_eq!(rec, &original[i], "partition {p} offset {i}");
        }
        let acked_before = before.iter().filter(|(bp, _)| *bp == p as u64);
        for (_, o) in acked_before {
            assert!(
                (*o as usize) < copy.len(),
                "partition {p}: offset {o}, acknowledged before the backup, is missing"
            );
        }
        restored_total += copy.len() as u64;
    }
    assert!(restored_total <= acked.lock().unwrap().len() as u64);

    // The table in the copy counts exactly the records the copy holds once it has
    // caught up: it neither lost nor double counted what was in flight.
    table_caught_up(&c, &r, "per_key").await;
    let rows = get_json(&c, &r, "/v1/tables/per_key/rows?limit=100").await;
    let counted: u64 = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["row"]["n"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, restored_total);

    // A restore starts a new epoch.
    let epoch = |t: Value| t["log_epoch"].as_str().unwrap().to_string();
    let a = get_json(&c, &s, "/v1/topics/orders").await;
    let b = get_json(&c, &r, "/v1/topics/orders").await;
    assert_ne!(epoch(a), epoch(b));
}

#[test]
fn backup_needs_an_admin_token_when_auth_is_on() {
    let secret = "backup-test-secret-long-enough-for-hs256";
    let s = Server::start_with(&["--jwt-secret", secret]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.redb");
    let out_s = out.to_string_lossy();
    let refused = run(&["backup", "--url", &s.base, "--out", &out_s]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(!out.exists() && !dir.path().join("b.redb.partial").exists());
    let admin = sluice_tests::sign(
        jsonwebtoken::Algorithm::HS256,
        None,
        secret.as_bytes(),
        &json!({"sub": "ops", "exp": sluice_tests::now_secs() + 600, "sluice": {"admin": true}}),
    );
    let ok = run(&[
        "backup", "--url", &s.base, "--out", &out_s, "--token", &admin,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.exists());
}

/// Restoring over a directory that held data replaces all of it: the write-ahead
/// log of the data it replaces is not replayed onto the restored copy.
#[tokio::test]
async fn restore_over_a_directory_replaces_its_write_ahead_log_too() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    let produce = |n: usize| {
        let (c, url) = (c.clone(), s.url("/v1/topics/t/records"));
        async move {
            for i in 0..n {
                let r = c
                    .post(&url)
                    .json(&json!({"value": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    produce(10).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.redb");
    backup_to(&s, &file).await;
    // Single records go through the write-ahead log.
    produce(8).await;
    s.kill();
    let restore = run(&[
        "restore",
        "--from",
        &file.to_string_lossy(),
        "--data-dir",
        &s.data_dir.to_string_lossy(),
        "--replace",
    ]);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let r = Server::start_in(s.data_dir.clone(), &[]);
    let t = get_json(&c, &r, "/v1/topics/t").await;
    assert_eq!(t["partitions"][0]["end_offset"], 10, "{t}");
    let values: Vec<Value> = fetch_all(&c, &r, "t", 0)
        .await
        .into_iter()
        .map(|rec| rec["value"].clone())
        .collect();
    assert_eq!(values, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
}
