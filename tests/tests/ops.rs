//! Operations: metrics, health and readiness.

use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic};

/// The value of a metric line `name{labels} value` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

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
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        metric(&text, "sluice_produce_records_total", "topic=\"m\""),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "sluice_fetch_records_total", "topic=\"m\""),
        Some(5.0)
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
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ready".to_string())
    );
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
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
