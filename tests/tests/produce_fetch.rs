//! Topics, produce in every form, and fetch, against the real binary.

use serde_json::{Value, json};
use sluice_log::partition_for_key;
use sluice_tests::{Server, client, create_topic, fetch, fetch_all};

#[tokio::test]
async fn topic_lifecycle() {
    let s = Server::start();
    let c = client();
    let t = create_topic(&c, &s, "orders", 3).await;
    assert_eq!(t["name"], "orders");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(
        t["partitions"][2],
        json!({"partition": 2, "start_offset": 0, "end_offset": 0, "bytes": 0})
    );
    let epoch = t["log_epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 16);

    create_topic(&c, &s, "clicks", 1).await;
    let list: Value = c
        .get(s.url("/v1/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["clicks", "orders"]);

    let r = c.delete(s.url("/v1/topics/clicks")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(s.url("/v1/topics/clicks")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A re-created topic starts empty, even though the old records are purged lazily.
    c.post(s.url("/v1/topics/orders/records"))
        .json(&json!({"value": 1, "partition": 0}))
        .send()
        .await
        .unwrap();
    c.delete(s.url("/v1/topics/orders")).send().await.unwrap();
    create_topic(&c, &s, "orders", 3).await;
    let body = fetch(&c, &s, "orders", 0, 0, 10).await;
    assert_eq!(body["records"], json!([]));
    assert_eq!(body["high_watermark"], 0);
}

#[tokio::test]
async fn produce_and_fetch_every_field() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    let r: Value = c
        .post(s.url("/v1/topics/t/records"))
        .json(&json!({"key": "c-42", "value": {"amount": 12.5, "tags": ["a"]}, "headers": {"h1": "v1", "h0": "v0"}, "timestamp": 1764000000000u64}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"offsets": [{"partition": 0, "offset": 0}]}));
    let r: Value = c
        .post(s.url("/v1/topics/t/records"))
        .json(&json!({"records": [{"value": "text"}, {"key": "gone", "value": null}, {"value_base64": "AAEC/w=="}]}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(
        r["offsets"],
        json!([{"partition": 0, "offset": 1}, {"partition": 0, "offset": 2}, {"partition": 0, "offset": 3}])
    );

    // An empty batch, in any form, writes nothing and answers no offsets.
    for (ct, body) in [
        ("application/json", r#"{"records":[]}"#),
        ("application/x-ndjson", "\n\n"),
        ("application/cloudevents-batch+json", "[]"),
    ] {
        let r: Value = c
            .post(s.url("/v1/topics/t/records"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r, json!({"offsets": []}), "{ct}");
    }
    let body = fetch(&c, &s, "t", 0, 0, 100).await;
    let recs = body["records"].as_array().unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["key"], "c-42");
    assert_eq!(recs[0]["value"], json!({"amount": 12.5, "tags": ["a"]}));
    assert_eq!(recs[0]["headers"], json!({"h1": "v1", "h0": "v0"}));
    assert_eq!(recs[0]["timestamp"], 1764000000000u64);
    assert_eq!(recs[0]["offset"], 0);
    assert_eq!(recs[0]["partition"], 0);
    assert_eq!(recs[1]["value"], "text");
    assert!(
        recs[1]["timestamp"].as_u64().unwrap() > 1764000000000u64,
        "append time"
    );
    assert!(
        recs[2].get("value").is_some() && recs[2]["value"].is_null(),
        "tombstone"
    );
    assert_eq!(recs[3]["value_base64"], "AAEC/w==");
    assert!(recs[3].get("value").is_none());
    assert_eq!(body["next_offset"], 4);
    assert_eq!(body["high_watermark"], 4);
    assert_eq!(body["start_offset"], 0);

    // limit and max_bytes page through; the first record always comes back.
    let body = fetch(&c, &s, "t", 0, 1, 2).await;
    assert_eq!(body["records"].as_array().unwrap().len(), 2);
    assert_eq!(body["next_offset"], 3);
    let body: Value = c
        .get(s.url("/v1/topics/t/partitions/0/records?offset=0&max_bytes=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    assert_eq!(body["next_offset"], 1);
    // At the end: empty, not an error.
    let body = fetch(&c, &s, "t", 0, 4, 10).await;
    assert_eq!(body["records"], json!([]));
    assert_eq!(body["next_offset"], 4);
    // Offset defaults to the start.
    let body: Value = c
        .get(s.url("/v1/topics/t/partitions/0/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["records"][0]["offset"], 0);

    let t: Value = c
        .get(s.url("/v1/topics/t"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["records"], 4);
    assert_eq!(t["partitions"][0]["end_offset"], 4);
    assert!(t["partitions"][0]["bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn keyed_records_land_where_kafka_puts_them_and_unkeyed_spread() {
    let s = Server::start();
    let c = client();
    let n = 7;
    create_topic(&c, &s, "keys", n).await;
    let keys: Vec<String> = (0..200).map(|i| format!("customer-{i}")).collect();
    let records: Vec<Value> = keys.iter().map(|k| json!({"key": k, "value": k})).collect();
    let r: Value = c
        .post(s.url("/v1/topics/keys/records"))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (k, o) in keys.iter().zip(r["offsets"].as_array().unwrap()) {
        assert_eq!(
            o["partition"].as_u64().unwrap() as u32,
            partition_for_key(k.as_bytes(), n),
            "key {k}"
        );
    }
    // Kafka's own vector: murmur2("foobar") & 0x7fffffff % 50 == 16.
    create_topic(&c, &s, "fifty", 50).await;
    let r: Value = c
        .post(s.url("/v1/topics/fifty/records"))
        .json(&json!({"key": "foobar", "value": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["partition"], 16);

    create_topic(&c, &s, "rr", 4).await;
    let records: Vec<Value> = (0..40).map(|i| json!({"value": i})).collect();
    let r: Value = c
        .post(s.url("/v1/topics/rr/records"))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut counts = [0; 4];
    for o in r["offsets"].as_array().unwrap() {
        counts[o["partition"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(counts, [10, 10, 10, 10]);
    // An explicit partition wins over the key.
    let r: Value = c
        .post(s.url("/v1/topics/rr/records"))
        .json(&json!({"key": "x", "partition": 3, "value": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0], json!({"partition": 3, "offset": 10}));
}

#[tokio::test]
async fn ndjson_bulk_load() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "bulk", 2).await;
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            "{{\"key\":\"k{}\",\"value\":{{\"i\":{i}}}}}\n",
            i % 10
        ));
    }
    body.push('\n');
    let r: Value = c
        .post(s.url("/v1/topics/bulk/records"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"].as_array().unwrap().len(), 1000);
    let total = fetch_all(&c, &s, "bulk", 0).await.len() + fetch_all(&c, &s, "bulk", 1).await.len();
    assert_eq!(total, 1000);
    // Per key, order is preserved.
    let p = partition_for_key(b"k3", 2);
    let is: Vec<u64> = fetch_all(&c, &s, "bulk", p)
        .await
        .iter()
        .filter(|r| r["key"] == "k3")
        .map(|r| r["value"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..100).map(|j| j * 10 + 3).collect::<Vec<u64>>());
}

#[tokio::test]
async fn cloudevents_in_all_three_modes_with_dedupe() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "ce", 1).await;
    let ev = json!({"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created", "subject": "c-9", "time": "2026-11-25T10:00:00Z", "data": {"total": 3}, "traceparent": "00-abc"});
    let r: Value = c
        .post(s.url("/v1/topics/ce/records"))
        .header("content-type", "application/cloudevents+json")
        .body(ev.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"], json!([{"partition": 0, "offset": 0}]));
    // Redelivery of the same source+id: same offset, nothing written.
    let r: Value = c
        .post(s.url("/v1/topics/ce/records"))
        .header("content-type", "application/cloudevents+json")
        .body(ev.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"], json!([{"partition": 0, "offset": 0}]));

    let batch = json!([
        {"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created", "data": {"total": 3}},
        {"specversion": "1.0", "id": "e2", "source": "/shop", "type": "order.created", "data_base64": "AQI="},
        {"specversion": "1.0", "id": "e1", "source": "/other", "type": "order.created"},
    ]);
    let r: Value = c
        .post(s.url("/v1/topics/ce/records"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["offsets"],
        json!([{"partition": 0, "offset": 0}, {"partition": 0, "offset": 1}, {"partition": 0, "offset": 2}])
    );

    let r: Value = c
        .post(s.url("/v1/topics/ce/records"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b1")
        .header("ce-source", "/sensor")
        .header("ce-type", "reading")
        .header("content-type", "application/json")
        .body(r#"{"celsius":21.5}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"], json!([{"partition": 0, "offset": 3}]));
    let r: Value = c
        .post(s.url("/v1/topics/ce/records"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b2")
        .header("ce-source", "/sensor")
        .header("ce-type", "blob")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"], json!([{"partition": 0, "offset": 4}]));

    let recs = fetch_all(&c, &s, "ce", 0).await;
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0]["key"], "c-9", "subject is the key");
    assert_eq!(recs[0]["value"], json!({"total": 3}));
    assert_eq!(recs[0]["headers"]["ce_id"], "e1");
    assert_eq!(recs[0]["headers"]["ce_type"], "order.created");
    assert_eq!(recs[0]["headers"]["ce_time"], "2026-11-25T10:00:00Z");
    assert_eq!(recs[0]["headers"]["ce_traceparent"], "00-abc");
    assert_eq!(recs[1]["key"], "e2", "id is the key without a subject");
    assert_eq!(recs[1]["value_base64"], "AQI=");
    assert!(recs[2]["value"].is_null());
    assert_eq!(recs[3]["value"], json!({"celsius": 21.5}));
    assert_eq!(recs[3]["headers"]["content-type"], "application/json");
    assert_eq!(recs[4]["value_base64"], "AAEC");
}

#[tokio::test]
async fn idempotency_key_survives_restart() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "pay", 3).await;
    let body = json!({"records": [{"key": "a", "value": 1}, {"key": "b", "value": 2}]});
    let first: Value = c
        .post(s.url("/v1/topics/pay/records"))
        .header("Idempotency-Key", "req-1")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = c
        .post(s.url("/v1/topics/pay/records"))
        .header("Idempotency-Key", "req-1")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, again);
    s.restart();
    let after: Value = c
        .post(s.url("/v1/topics/pay/records"))
        .header("Idempotency-Key", "req-1")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, after);
    let t: Value = c
        .get(s.url("/v1/topics/pay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["records"], 2, "the retries wrote nothing");
    // Another key writes again.
    let other: Value = c
        .post(s.url("/v1/topics/pay/records"))
        .header("Idempotency-Key", "req-2")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(first, other);
}

#[tokio::test]
async fn long_poll_is_woken_by_an_append() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "live", 2).await;
    let url = s.url("/v1/topics/live/partitions/1/records?offset=0&wait_ms=30000");
    let c2 = c.clone();
    let poll = tokio::spawn(async move {
        c2.get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    // A record on another partition does not answer the poll; one on partition 1 does.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.post(s.url("/v1/topics/live/records"))
        .json(&json!({"value": "other", "partition": 0}))
        .send()
        .await
        .unwrap();
    c.post(s.url("/v1/topics/live/records"))
        .json(&json!({"value": "wake", "partition": 1}))
        .send()
        .await
        .unwrap();
    let body = poll.await.unwrap();
    assert_eq!(body["records"][0]["value"], "wake");
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    // With nothing to read, a short wait answers empty.
    let body: Value = c
        .get(s.url("/v1/topics/live/partitions/1/records?offset=1&wait_ms=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["records"], json!([]));
}

#[tokio::test]
async fn restart_keeps_topics_offsets_and_epoch() {
    let mut s = Server::start();
    let c = client();
    let epoch = create_topic(&c, &s, "keep", 2).await["log_epoch"].clone();
    for i in 0..50 {
        c.post(s.url("/v1/topics/keep/records"))
            .json(&json!({"value": i}))
            .send()
            .await
            .unwrap();
    }
    let before: Value = c
        .get(s.url("/v1/topics/keep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s.restart();
    let after: Value = c
        .get(s.url("/v1/topics/keep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(after["log_epoch"], epoch);
    let r: Value = c
        .post(s.url("/v1/topics/keep/records"))
        .json(&json!({"value": 50, "partition": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 25, "offsets continue densely");
    // A different data directory has a different epoch.
    let other = Server::start();
    assert_ne!(
        create_topic(&c, &other, "keep", 1).await["log_epoch"],
        epoch
    );
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "bye", 1).await;
    c.post(s.url("/v1/topics/bye/records"))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert!(s.terminate(), "exit status 0 after SIGTERM");
    s.restart();
    assert_eq!(fetch_all(&c, &s, "bye", 0).await.len(), 1);
}
