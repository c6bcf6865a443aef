//! Operations: metrics, health and readiness.

use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic, get_json, metric, table_caught_up};

/// The value of a metric line `name{labels} value` whose labels contain `labels`.
#[tokio::test]
async fn metrics_count_exactly() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "m", 1).await;
    let records: Vec<Value> = (0..7).map(|i| json!({"value": i})).collect();
    c.post(s.url("/v1/topics/m/records"))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap();
    c.get(s.url("/v1/topics/m/partitions/0/records?offset=0&limit=5"))
        .send()
        .await
        .unwrap();
    c.get(s.url("/v1/groups/g/topics/m/records?consumer=a&limit=3&auto_commit=true"))
        .send()
        .await
        .unwrap();
    c.get(s.url("/v1/groups/g/topics/m/records?consumer=a&limit=1&auto_commit=true"))
        .send()
        .await
        .unwrap();
    // A table whose grouping field no record has: it skips all 7.
    let r = c
        .post(s.url("/v1/tables"))
        .json(&json!({"name": "mt", "source": "m", "group_by": "$.g", "aggregates": {"n": {"count": {}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    table_caught_up(&c, &s, "mt").await;
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        metric(&text, "sluice_produce_records_total", "topic=\"m\""),
        Some(7.0),
        "{text}"
    );
    // Every record handed out counts: the fetch's 5 and the polls' 3 and 1.
    assert_eq!(
        metric(&text, "sluice_fetch_records_total", "topic=\"m\""),
        Some(9.0)
    );
    assert_eq!(
        metric(&text, "sluice_partition_end_offset", "topic=\"m\""),
        Some(7.0)
    );
    assert_eq!(
        metric(&text, "sluice_group_lag", "group=\"g\""),
        Some(4.0),
        "committed 3 of 7"
    );
    assert!(
        metric(
            &text,
            "sluice_http_requests_total",
            "route=\"/v1/topics/{topic}/records\""
        )
        .is_some()
    );
    assert!(metric(&text, "sluice_commit_batch_records_count", "").unwrap() >= 1.0);
    assert!(metric(&text, "sluice_storage_bytes", "").unwrap() > 0.0);
    assert_eq!(
        metric(&text, "sluice_table_skipped_records_total", "table=\"mt\""),
        Some(7.0)
    );
    assert_eq!(
        metric(&text, "sluice_table_lag_records", "table=\"mt\""),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "sluice_table_rows", "table=\"mt\""),
        Some(0.0)
    );

    // The dashboard's summary says the same.
    let stats = get_json(&c, &s, "/v1/stats").await;
    let topic = &stats["topics"][0];
    assert_eq!(topic["name"], "m", "{stats}");
    assert_eq!(topic["records"], 7);
    assert_eq!(topic["produced_total"], 7);
    assert_eq!(topic["delivered_total"], 9);
    assert_eq!(stats["groups"][0]["group"], "g");
    assert_eq!(stats["groups"][0]["lag"], 4);
    assert_eq!(stats["groups"][0]["members"], 1);
    assert!(stats["data_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn health_and_readiness() {
    let s = Server::start();
    let c = client();
    let r = c.get(s.url("/livez")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ok".to_string())
    );
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert!(body["disk_free_bytes"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["min_free_disk_bytes"], 64 << 20);
}

/// On SIGTERM readiness goes to 503 while the server still serves for the
/// configured delay; then it exits cleanly and keeps what it acknowledged.
#[tokio::test]
async fn readiness_flips_at_shutdown() {
    let mut s = Server::start_with(&["--shutdown-delay-ms", "4000"]);
    let c = client();
    create_topic(&c, &s, "r", 1).await;
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    s.send_term();
    let mut status = 200;
    let mut id = String::new();
    for _ in 0..100 {
        let r = c.get(s.url("/readyz")).send().await.unwrap();
        status = r.status().as_u16();
        if status == 503 {
            id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "not_ready");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "readiness never flipped");
    // Still serving: liveness holds and a write is acknowledged.
    assert_eq!(c.get(s.url("/livez")).send().await.unwrap().status(), 200);
    let r = c
        .post(s.url("/v1/topics/r/records"))
        .json(&json!({"value": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.wait(), "clean exit");
    // The server error is logged in its request's span: id, method and path.
    let log = std::fs::read_to_string(s.data_dir.with_extension("log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("answered with a server error"))
        .unwrap_or_else(|| panic!("no server error logged:\n{log}"));
    assert!(line.contains(&format!("id={id}")), "{line}");
    assert!(
        line.contains("method=GET") && line.contains("path=/readyz"),
        "{line}"
    );
    s.restart();
    let records = sluice_tests::fetch_all(&c, &s, "r", 0).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["value"], "late");
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let s = Server::start();
    let c = client();
    let r = c.get(s.url("/v1/topics")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!id.is_empty());
    let r2 = c.get(s.url("/v1/topics")).send().await.unwrap();
    assert_ne!(r2.headers()["x-request-id"].to_str().unwrap(), id);
    let r = c
        .get(s.url("/v1/nope"))
        .header("x-request-id", "mine-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "mine-42");
}

/// SIGTERM while producers write: every acknowledged record is there after the
/// restart, and every request either completed or failed without a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_record() {
    use std::sync::{Arc, Mutex};
    let mut s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &s, "busy", 2).await;
    let acked: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (c, url, acked) = (c.clone(), s.url("/v1/topics/busy/records"), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let v = w * 1_000_000 + i;
                let r = match c.post(&url).json(&json!({"value": v})).send().await {
                    Ok(r) => r,
                    Err(_) => return, // the server went away: a clean failure
                };
                assert!(
                    r.status().as_u16() < 500 || r.status() == 503,
                    "status {}",
                    r.status()
                );
                if r.status() != 200 {
                    return;
                }
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let o = &body["offsets"][0];
                acked.lock().unwrap().push((
                    o["partition"].as_u64().unwrap(),
                    o["offset"].as_u64().unwrap(),
                    v,
                ));
            }
        }));
    }
    // SIGTERM once enough writes were acknowledged to mean something (a count,
    // not a time: over Kafka each write waits for three brokers).
    for _ in 0..3000 {
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(s.terminate(), "graceful exit");
    for t in tasks {
        t.await.unwrap();
    }
    s.restart();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "too few writes to mean anything");
    for p in 0..2 {
        let stored = sluice_tests::fetch_all(&c, &s, "busy", p).await;
        for (_, o, v) in acked.iter().filter(|(q, _, _)| *q == u64::from(p)) {
            assert_eq!(stored[*o as usize]["value"], *v, "partition {p} offset {o}");
        }
    }
}

/// Retention by size while producers write: offsets are never reused, the start
/// only moves forward, and every record at or after the start is the one produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_under_load_keeps_what_the_policy_keeps() {
    use std::collections::HashMap;
    let s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "rolling", "partitions": 1, "retention_bytes": 50_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut produced: HashMap<u64, u64> = HashMap::new();
    let mut last_start = 0;
    let pad = "x".repeat(100);
    for batch in 0..60u64 {
        let records: Vec<Value> = (0..50u64)
            .map(|i| json!({"value": {"n": batch * 50 + i, "pad": pad}}))
            .collect();
        let r: Value = c
            .post(s.url("/v1/topics/rolling/records"))
            .json(&json!({"records": records}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (i, o) in r["offsets"].as_array().unwrap().iter().enumerate() {
            let prev = produced.insert(o["offset"].as_u64().unwrap(), batch * 50 + i as u64);
            assert!(prev.is_none(), "offset reused");
        }
        let t = get_json(&c, &s, "/v1/topics/rolling").await;
        let start = t["partitions"][0]["start_offset"].as_u64().unwrap();
        assert!(start >= last_start, "the start went back");
        last_start = start;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    // Let retention catch up, then read everything retained.
    let mut start = 0;
    for _ in 0..100 {
        let t = get_json(&c, &s, "/v1/topics/rolling").await;
        start = t["partitions"][0]["start_offset"].as_u64().unwrap();
        if t["partitions"][0]["bytes"].as_u64().unwrap() <= 50_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(start > 0, "retention never ran");
    let mut offset = start;
    loop {
        let body = get_json(
            &c,
            &s,
            &format!("/v1/topics/rolling/partitions/0/records?offset={offset}&limit=1000"),
        )
        .await;
        let records = body["records"].as_array().unwrap();
        if records.is_empty() {
            break;
        }
        for r in records {
            let o = r["offset"].as_u64().unwrap();
            assert_eq!(
                r["value"]["n"].as_u64(),
                produced.get(&o).copied(),
                "offset {o}"
            );
        }
        offset = body["next_offset"].as_u64().unwrap();
    }
    assert_eq!(offset, 3_000, "everything after the start is there");
    // A reader below the new start is told the valid range.
    let r = c
        .get(s.url("/v1/topics/rolling/partitions/0/records?offset=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "offset_out_of_range");
    assert_eq!(body["start_offset"], start);
    assert_eq!(body["end_offset"], 3_000);
}

/// A compacted topic keeps the latest record of each key at the offset it was
/// written at, drops what later records supersede, then drops tombstones once their
/// retention passes; a reader from offset 0 sees exactly that.
#[tokio::test]
async fn compaction_keeps_the_latest_record_per_key() {
    use std::collections::BTreeMap;
    let s = Server::start_with(&["--compaction-max-dirty-ms", "200"]);
    let c = client();
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "profiles", "partitions": 2, "cleanup": "compact", "tombstone_retention_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        (t["cleanup"].as_str(), t["tombstone_retention_ms"].as_u64()),
        (Some("compact"), Some(1500))
    );

    // 20 users, 10 versions each; then user u3 is deleted.
    let mut latest: BTreeMap<(u64, u64), (String, Value)> = BTreeMap::new();
    let mut by_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for version in 0..10 {
        let records: Vec<Value> = (0..20)
            .map(|u| json!({"key": format!("u{u}"), "value": {"user": u, "version": version}}))
            .chain(std::iter::once(json!({"key": "u3", "value": null})).filter(|_| version == 9))
            .collect();
        let r: Value = c
            .post(s.url("/v1/topics/profiles/records"))
            .json(&json!({"records": records}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (rec, o) in records.iter().zip(r["offsets"].as_array().unwrap()) {
            let at = (
                o["partition"].as_u64().unwrap(),
                o["offset"].as_u64().unwrap(),
            );
            let key = rec["key"].as_str().unwrap().to_string();
            if let Some(old) = by_key.insert(key.clone(), at) {
                latest.remove(&old);
            }
            latest.insert(at, (key, rec["value"].clone()));
        }
    }
    let ends: Vec<u64> = (0..2)
        .map(|p| {
            latest
                .keys()
                .filter(|(pp, _)| *pp == p)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(0)
        })
        .collect();

    // Records without a key are refused.
    let r = c
        .post(s.url("/v1/topics/profiles/records"))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("needs a key") && body.contains("key_required"),
        "{body}"
    );

    let read = || async {
        let mut got = BTreeMap::new();
        for p in 0..2u64 {
            for rec in sluice_tests::fetch_all(&c, &s, "profiles", p as u32).await {
                let at = (p, rec["offset"].as_u64().unwrap());
                got.insert(
                    at,
                    (
                        rec["key"].as_str().unwrap().to_string(),
                        rec["value"].clone(),
                    ),
                );
            }
        }
        got
    };
    // What is read once compaction has left `n` records (bounded wait).
    let settled = |n: usize| {
        let read = &read;
        async move {
            let mut got = read().await;
            for _ in 0..200 {
                if got.len() == n {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                got = read().await;
            }
            got
        }
    };
    let got = settled(latest.len()).await;
    assert_eq!(got, latest, "the latest record of each key, at its offset");
    // The end offsets do not move.
    let t = get_json(&c, &s, "/v1/topics/profiles").await;
    for p in 0..2 {
        assert_eq!(t["partitions"][p]["end_offset"], ends[p]);
        assert_eq!(t["partitions"][p]["start_offset"], 0);
    }
    // Then the tombstone goes.
    latest.retain(|_, (k, _)| k != "u3");
    let got = settled(latest.len()).await;
    assert_eq!(got, latest, "the tombstone is gone after its retention");

    // A setting for compaction on a topic that does not compact is refused.
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "plain", "tombstone_retention_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
