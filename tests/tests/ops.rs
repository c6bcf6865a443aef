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
