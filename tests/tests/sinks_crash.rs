//! A sink under `kill -9`: eight producers write while the server is killed and
//! restarted again and again, and a receiver answers 503 and hangs at random and
//! refuses one key for good. Every acknowledged record must reach the receiver
//! (answered 2xx) or the dead-letter topic; a key's records are first delivered
//! in offset order; duplicates are only redeliveries of one record with its one
//! `webhook-id`, so deduplicating on it leaves each record once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use sluice_tests::receiver::{Behavior, Receiver};
use sluice_tests::{Engine, Server, client, create_topic, engine, fetch_all, get_json};

const PRODUCERS: usize = 8;
const PARTITIONS: u32 = 4;

/// Kills: over Kafka each restart waits for the killed process's shard leases
/// to expire, so fewer.
fn kills() -> usize {
    match engine() {
        Engine::Embedded => 20,
        Engine::Kafka => 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_loses_nothing_and_keeps_key_order_across_kill_9() {
    let mut server = Server::start_with(&[
        "--rate-limit-requests",
        "0",
        "--rate-limit-records",
        "0",
        "--sink-allow-net",
        "127.0.0.0/8",
    ]);
    let c = client();
    let rx = Receiver::start_with(Behavior {
        fail_rate: 0.1,
        hang_rate: 0.02,
        hang: Duration::from_millis(1500),
        refuse_key: Some("poison".into()),
        ..Behavior::default()
    })
    .await;
    create_topic(&c, &server, "events", PARTITIONS).await;
    let r = c
        .post(server.url("/v1/sinks"))
        .json(
            &json!({"name": "crash", "source": {"topic": "events"}, "url": rx.url,
            "start": "earliest", "ordering": "key", "timeout_ms": 500,
            "retry": {"initial_ms": 20, "max_ms": 200, "record_attempts": 3}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let base = Arc::new(RwLock::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    // (partition, offset) -> key of every acknowledged record.
    let acked: Arc<Mutex<HashMap<(u32, u64), String>>> = Arc::default();
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let (base, stop, acked, c) = (base.clone(), stop.clone(), acked.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = 1 + (seq % 5) as usize;
                let keys: Vec<String> = (0..batch)
                    .map(|i| {
                        let n = seq + i as u64;
                        if n % 97 == 13 {
                            "poison".to_string()
                        } else {
                            format!("k{}", n % 23)
                        }
                    })
                    .collect();
                let records: Vec<Value> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| json!({"key": k, "value": {"producer": producer, "seq": seq + i as u64}}))
                    .collect();
                seq += batch as u64;
                let url = format!("{}/v1/topics/events/records", base.read().unwrap());
                let resp = c
                    .post(url)
                    .json(&json!({ "records": records }))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let Ok(resp) = resp else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if resp.status() != 200 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let Ok(answer) = resp.json::<Value>().await else {
                    continue;
                };
                {
                let mut acked = acked.lock().unwrap();
                for (o, k) in answer["offsets"].as_array().unwrap().iter().zip(keys) {
                    let at = (
                        o["partition"].as_u64().unwrap() as u32,
                        o["offset"].as_u64().unwrap(),
                    );
                    acked.insert(at, k);
                }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let mut rng = rand::rng();
    for _ in 0..kills() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        server.restart();
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("producer task");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 300,
        "too little acknowledged: {}",
        acked.len()
    );

    // Wait until the sink has settled every record of the log.
    let start = Instant::now();
    loop {
        let info = get_json(&c, &server, "/v1/sinks/crash").await;
        let parts = info["partitions"].as_array().unwrap();
        if parts
            .iter()
            .all(|p| p["cursor"] == p["end_offset"] && p["lag_records"] == 0)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the sink did not catch up: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let got = rx.got();
    // Every 2xx delivery, in arrival order.
    let ok: Vec<_> = got.iter().filter(|r| r.status == 200).collect();
    let mut id_of: HashMap<(u32, u64), String> = HashMap::new();
    let mut place_of: HashMap<String, (u32, u64)> = HashMap::new();
    let mut first_seen: Vec<(u32, u64, Option<String>)> = Vec::new();
    for r in &ok {
        let at = (r.partition, r.offset);
        if let Some(id) = id_of.get(&at) {
            assert_eq!(id, &r.webhook_id, "a record's id never changes: {at:?}");
            continue;
        }
        assert!(
            place_of.insert(r.webhook_id.clone(), at).is_none(),
            "one id, one record"
        );
        id_of.insert(at, r.webhook_id.clone());
        first_seen.push((r.partition, r.offset, r.key.clone()));
    }
    let mut dead: BTreeSet<(u32, u64)> = BTreeSet::new();
    for p in 0..PARTITIONS {
        for d in fetch_all(&c, &server, "crash.dead-letters", p).await {
            let at = (
                d["value"]["partition"].as_u64().unwrap() as u32,
                d["value"]["offset"].as_u64().unwrap(),
            );
            assert!(dead.insert(at), "{at:?} dead-lettered twice");
            assert_eq!(d["value"]["record"]["key"], "poison");
        }
    }
    let mut lost = Vec::new();
    for (at, key) in &acked {
        let delivered = id_of.contains_key(at);
        let buried = dead.contains(at);
        if key == "poison" {
            assert!(
                buried && !delivered,
                "{at:?} (poison) should be dead-lettered only"
            );
        } else if !delivered {
            lost.push(*at);
        }
        assert!(
            !(delivered && buried),
            "{at:?} both delivered and dead-lettered"
        );
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged records never delivered: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // Per key, first deliveries in offset order.
    let mut last: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for (p, o, key) in first_seen {
        let key = key.expect("keyed records");
        if let Some(&(lp, lo)) = last.get(&key) {
            assert_eq!(lp, p, "a key stays on its partition");
            assert!(o > lo, "key {key}: offset {o} first delivered after {lo}");
        }
        last.insert(key, (p, o));
    }
    let duplicates = ok.len() - id_of.len();
    println!(
        "acknowledged {}, delivered {} ({} requests answered 2xx, {duplicates} redeliveries), \
         dead-lettered {}, {} requests in all",
        acked.len(),
        id_of.len(),
        ok.len(),
        dead.len(),
        got.len()
    );
}
