//! The gateway over the Kafka engine: the real binary with `--backend kafka` against
//! the three-broker test cluster (`SLUICE_KAFKA_BOOTSTRAP`), over real HTTP and
//! WebSocket, and the engine's lookup of records acknowledged without an offset.
//! Each test uses topics of its own, so tests and runs share the cluster.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic, fetch, kafka_bootstrap};
use tokio_tungstenite::tungstenite::Message;

/// A gateway over the test cluster, or `None` when `SLUICE_TEST_SKIP` names kafka.
fn gateway(test: &str) -> Option<Server> {
    let bootstrap = kafka_bootstrap(test)?;
    Some(Server::start_with(&[
        "--backend",
        "kafka",
        "--kafka-bootstrap",
        &bootstrap,
    ]))
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

async fn produce(c: &reqwest::Client, s: &Server, topic: &str, body: Value) -> Value {
    let r = c
        .post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// Produce and fetch keep keys, values (JSON and bytes), tombstones and headers;
/// keyed records land where murmur2 puts them; offsets are Kafka's.
#[tokio::test]
async fn produce_and_fetch_over_kafka() {
    let Some(s) = gateway("produce_and_fetch_over_kafka") else {
        return;
    };
    let c = client();
    let t = unique("orders");
    create_topic(&c, &s, &t, 3).await;
    let answer = produce(
        &c,
        &s,
        &t,
        json!({"records": [
            {"key": "customer-1", "value": {"n": 1}, "headers": {"source": "test"}},
            {"key": "customer-1", "value": [1, 2]},
            {"key": "customer-2", "value_base64": "AP8="},
            {"key": "customer-1", "value": null},
        ]}),
    )
    .await;
    let offsets = answer["offsets"].as_array().unwrap();
    let p1 = offsets[0]["partition"].as_u64().unwrap() as u32;
    assert_eq!(
        p1,
        sluice_log::partition_for_key(b"customer-1", 3),
        "murmur2 placement"
    );
    assert_eq!(offsets[1]["partition"], p1);
    assert_eq!(
        (offsets[0]["offset"].as_u64(), offsets[1]["offset"].as_u64()),
        (Some(0), Some(1))
    );
    let got = fetch(&c, &s, &t, p1, 0, 100).await;
    let records = got["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["value"], json!({"n": 1}));
    assert_eq!(records[0]["headers"], json!({"source": "test"}));
    assert_eq!(records[1]["value"], json!([1, 2]));
    assert!(records[2]["value"].is_null() && records[2].get("value").is_some());
    assert_eq!(got["next_offset"], 3);
    let p2 = offsets[2]["partition"].as_u64().unwrap() as u32;
    let got = fetch(&c, &s, &t, p2, 0, 100).await;
    assert_eq!(got["records"][0]["value_base64"], "AP8=");
    assert!(
        got["records"][0].get("headers").is_none(),
        "the binary marker is hidden"
    );
    // Out of range and unknown things are refused as on the embedded engine.
    let r = c
        .get(s.url(&format!("/v1/topics/{t}/partitions/{p1}/records?offset=99")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = c
        .get(s.url("/v1/topics/never-made-here/partitions/0/records"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A long poll is woken by a record produced through another gateway over the
/// same cluster, and an idempotent retry through either gateway writes nothing.
#[tokio::test]
async fn two_gateways_share_the_cluster() {
    let Some(a) = gateway("two_gateways_share_the_cluster") else {
        return;
    };
    let Some(b) = gateway("two_gateways_share_the_cluster") else {
        return;
    };
    let c = client();
    let t = unique("shared");
    let r = c
        .post(a.url("/v1/topics"))
        .json(&json!({"name": t, "partitions": 1, "retention_ms": 3_600_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The other gateway finds the topic, and its settings, in the cluster at
    // the first request that names it.
    let r = c
        .get(b.url(&format!("/v1/topics/{t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the second gateway did not find the topic");
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["retention_ms"], 3_600_000, "{d}");
    let waiting = {
        let c = c.clone();
        let url = b.url(&format!(
            "/v1/topics/{t}/partitions/0/records?offset=0&wait_ms=20000"
        ));
        tokio::spawn(async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&c, &a, &t, json!({"value": {"hello": "b"}})).await;
    let got = waiting.await.unwrap();
    assert_eq!(got["records"][0]["value"], json!({"hello": "b"}));
    // Retrying with the same idempotency key writes nothing new, through the
    // same gateway or through the other one.
    let send = |s: &Server| {
        c.post(s.url(&format!("/v1/topics/{t}/records")))
            .header("idempotency-key", "order-7")
            .json(&json!({"value": 7}))
            .send()
    };
    let first: Value = send(&a).await.unwrap().json().await.unwrap();
    let again: Value = send(&a).await.unwrap().json().await.unwrap();
    assert_eq!(first, again);
    let elsewhere: Value = send(&b).await.unwrap().json().await.unwrap();
    assert_eq!(first, elsewhere, "a retry through the other gateway");
    let all = fetch(&c, &a, &t, 0, 0, 100).await;
    assert_eq!(all["records"].as_array().unwrap().len(), 2);
}

/// A WebSocket subscription and an event stream over Kafka deliver what is
/// produced after they start.
#[tokio::test]
async fn websocket_and_sse_over_kafka() {
    let Some(s) = gateway("websocket_and_sse_over_kafka") else {
        return;
    };
    let c = client();
    let t = unique("live");
    create_topic(&c, &s, &t, 2).await;
    let url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": "s", "topic": t, "from": "earliest"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let sse = c
        .get(s.url(&format!("/v1/topics/{t}/events?from=earliest")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let records: Vec<Value> = (0..6)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    produce(&c, &s, &t, json!({ "records": records })).await;
    let mut seen = 0;
    while seen < 6 {
        let f = sluice_tests::next_json(&mut ws).await;
        if f["type"] == "records" {
            seen += f["records"].as_array().unwrap().len();
        }
    }
    assert_eq!(seen, 6);
    let mut body = sse.bytes_stream();
    let mut text = String::new();
    while text.matches("event: record").count() < 6 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("events within 20 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(text.matches("event: record").count(), 6);
}

/// What the Kafka engine does not offer yet answers 501 `not_implemented`, never
/// a 500 or a hang.
#[tokio::test]
async fn what_kafka_does_not_offer_yet_is_refused_clearly() {
    let Some(s) = gateway("what_kafka_does_not_offer_yet_is_refused_clearly") else {
        return;
    };
    let c = client();
    let t = unique("later");
    create_topic(&c, &s, &t, 1).await;
    for (method, path, body) in [("GET", "/v1/backup".to_string(), None::<Value>)] {
        let mut req = c.request(method.parse().unwrap(), s.url(&path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 501, "{method} {path}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "not_implemented", "{method} {path}: {p}");
    }
}

/// A read that stopped at a partition's end, then a write, then a read from
/// there: the record is there at once (the end-of-partition event the first
/// read left behind does not end the second), every time.
#[tokio::test]
async fn reading_on_from_the_end_finds_what_was_written_since() {
    let Some(s) = gateway("reading_on_from_the_end_finds_what_was_written_since") else {
        return;
    };
    let c = client();
    let t = unique("tail");
    create_topic(&c, &s, &t, 1).await;
    for i in 0..20u64 {
        produce(&c, &s, &t, json!({"value": i, "partition": 0})).await;
        let to_end = fetch(&c, &s, &t, 0, 2 * i, 10).await;
        assert_eq!(to_end["next_offset"], 2 * i + 1, "{to_end}");
        // A client's pause between reads: the end-of-partition event arrives.
        tokio::time::sleep(Duration::from_millis(50)).await;
        produce(&c, &s, &t, json!({"value": i, "partition": 0})).await;
        let after = fetch(&c, &s, &t, 0, 2 * i + 1, 10).await;
        assert_eq!(
            after["records"].as_array().map(Vec::len),
            Some(1),
            "round {i}: {after}"
        );
    }
}

/// Records Kafka acknowledges without their offset (a retried write that a new
/// leader recognised as one already made) are found by the engine reading their
/// partition from their timestamp: each gets the offset it is at, two equal
/// records of one append get one offset each, and a record that is not there is
/// refused with 503 rather than answered with an offset.
#[test]
fn records_acknowledged_without_an_offset_are_found() {
    use sluice_kafka::UNKNOWN_OFFSET;
    use sluice_log::{
        AppendRequest, AppendUnit, Backend, Error, NewRecord, RecordParts, TopicConfig, ValueKind,
        wait,
    };
    let Some(bootstrap) = kafka_bootstrap("records_acknowledged_without_an_offset_are_found")
    else {
        return;
    };
    let mut options = sluice_kafka::KafkaOptions::new(&bootstrap);
    options.topic_prefix = format!("u{:08x}.", rand::random::<u32>());
    let kafka = sluice_kafka::Kafka::open(options).expect("open the Kafka engine");
    let config = TopicConfig {
        partitions: 2,
        ..Default::default()
    };
    let topic = wait(|r| kafka.create_topic("found", config, r)).expect("create the topic");
    let record = |partition: u32, value: &str, timestamp: u64| {
        let json = serde_json::to_vec(value).unwrap();
        let bytes = RecordParts {
            key: Some("k"),
            value: &json,
            kind: ValueKind::Json,
            timestamp,
            headers: &[],
        }
        .encode();
        NewRecord { partition, bytes }
    };
    let records = vec![
        record(0, "a", 1_000),
        record(1, "b", 1_000),
        record(0, "a", 1_000),
        record(0, "c", 2_000),
    ];
    let written = wait(|r| {
        kafka.append(
            AppendRequest {
                topic: topic.name().to_string(),
                topic_id: topic.id(),
                units: vec![AppendUnit {
                    dedupe_key: None,
                    records: records.clone(),
                }],
            },
            r,
        )
    })
    .expect("append");
    assert_eq!(written, vec![(0, 0), (1, 0), (0, 1), (0, 2)]);

    let unknown = |known: &[bool]| -> Vec<(u32, u64)> {
        written
            .iter()
            .zip(known)
            .map(|(&(p, o), &k)| (p, if k { o } else { UNKNOWN_OFFSET }))
            .collect()
    };
    let found = kafka
        .find_unknown(&topic, &records, unknown(&[false; 4]))
        .expect("every record found");
    assert_eq!(found, written);
    // The first "a" is known: the second is the other one.
    let found = kafka
        .find_unknown(&topic, &records, unknown(&[true, true, false, true]))
        .expect("the second a found");
    assert_eq!(found, written);
    let missing = vec![record(1, "never written", 1_000)];
    let refused = kafka.find_unknown(&topic, &missing, vec![(1, UNKNOWN_OFFSET)]);
    assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
    wait(|r| kafka.delete_topic("found", r)).expect("delete the topic");
}
