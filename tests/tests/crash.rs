//! Durability under `kill -9`: concurrent producers, the server killed at random
//! moments, restarted on the same data directory. Every acknowledged record must be
//! readable at its acknowledged offset with identical content, and offsets stay dense.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic, fetch_all};

/// A record's key and value.
type Record = (String, Value);

const PRODUCERS: usize = 6;
const KILLS: usize = 24;
const PARTITIONS: u32 = 4;

/// Padding of a record's value: one producer writes values of about 5 KB, so the
/// batches the server holds in memory fill up and move to redb between kills too,
/// not only at its periodic durable commits.
fn pad(producer: usize, seq: u64) -> usize {
    (seq % 300) as usize + if producer == PRODUCERS - 1 { 5000 } else { 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let mut server =
        Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &server, "crash", PARTITIONS).await;
    let base = Arc::new(RwLock::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    // (partition, offset) -> (key, value) of every acknowledged record.
    let acked: Arc<Mutex<HashMap<(u32, u64), Record>>> = Arc::default();

    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let (base, stop, acked, c) = (base.clone(), stop.clone(), acked.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = if producer % 2 == 0 { 1 } else { 1 + (seq % 20) as usize };
                let records: Vec<Record> = (0..batch)
                    .map(|i| {
                        (
                            format!("p{producer}-k{}", (seq + i as u64) % 13),
                            json!({"producer": producer, "seq": seq + i as u64, "pad": "x".repeat(pad(producer, seq))}),
                        )
                    })
                    .collect();
                let body = json!({"records": records.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()});
                let url = format!("{}/v1/topics/crash/records", base.read().unwrap());
                let resp = c.post(url).json(&body).timeout(Duration::from_secs(10)).send().await;
                let Ok(resp) = resp else {
                    // The server is down: nothing was acknowledged; try the next batch.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    seq += batch as u64;
                    continue;
                };
                if resp.status() != 200 {
                    panic!("unexpected status {}", resp.status());
                }
                let Ok(answer) = resp.json::<Value>().await else {
                    seq += batch as u64;
                    continue;
                };
                let offsets = answer["offsets"].as_array().expect("offsets");
                assert_eq!(offsets.len(), batch);
                let mut acked = acked.lock().unwrap();
                for (o, (k, v)) in offsets.iter().zip(records) {
                    let at = (o["partition"].as_u64().unwrap() as u32, o["offset"].as_u64().unwrap());
                    let previous = acked.insert(at, (k, v));
                    assert!(previous.is_none(), "offset {at:?} acknowledged twice");
                }
                seq += batch as u64;
            }
        }));
    }

    let mut rng = rand::rng();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        server.restart();
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("producer task");
    }
    server.restart();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 500,
        "the test acknowledged too little to mean anything: {}",
        acked.len()
    );
    let mut by_partition: BTreeMap<u32, Vec<(u64, Record)>> = BTreeMap::new();
    for ((p, o), kv) in acked {
        by_partition.entry(p).or_default().push((o, kv));
    }
    for p in 0..PARTITIONS {
        let stored = fetch_all(&c, &server, "crash", p).await;
        for (i, r) in stored.iter().enumerate() {
            assert_eq!(
                r["offset"].as_u64(),
                Some(i as u64),
                "offsets are dense in partition {p}"
            );
        }
        for (o, (k, v)) in by_partition.remove(&p).unwrap_or_default() {
            let r = stored
                .get(o as usize)
                .unwrap_or_else(|| panic!("acknowledged {p}/{o} is missing"));
            assert_eq!(r["key"], k.as_str(), "key at {p}/{o}");
            assert_eq!(r["value"], v, "value at {p}/{o}");
        }
    }
    // Some restarts had to replay the write-ahead log, so that path was tested too.
    let log = std::fs::read_to_string(server.data_dir.with_extension("log")).unwrap();
    assert!(
        log.contains("replayed the write-ahead log"),
        "no restart replayed the write-ahead log"
    );
}
