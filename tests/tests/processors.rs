//! Processors: streams derived from topics through `/v1/processors`, on the real
//! binary (and, with `SLUICE_TEST_ENGINE=kafka`, on the Kafka test cluster).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use sluice_tests::{Engine, Server, client, create_topic, engine, fetch_all, get_json};

/// Waits (bounded) until a processor has processed everything its source holds.
async fn caught_up(c: &reqwest::Client, s: &Server, name: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        last = get_json(c, s, &format!("/v1/processors/{name}")).await;
        let ends_known = last["partitions"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0));
        if ends_known && last["state"] == "running" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("processor {name} never caught up: {last}");
}

/// What the contract's example writes for an input record: `None` when its
/// filter passes it over.
fn big_order(value: &Value) -> Option<(String, Value)> {
    let amount = value["amount"].as_f64()?;
    if amount <= 1000.0 {
        return None;
    }
    let out = json!({
        "id": value["id"],
        "customer_id": value["customer_id"],
        "cents": value["amount"].as_i64().map_or(json!(amount * 100.0), |a| json!(a * 100)),
    });
    let key = match &value["customer_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some((key, out))
}

fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["headers"][name].as_str()
}

async fn post(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> reqwest::Response {
    c.post(s.url(path)).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn a_stream_filters_reshapes_and_rekeys() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "orders", 4).await;
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"sql": "CREATE STREAM big_orders AS SELECT id, customer_id, amount * 100 AS cents \
                FROM orders WHERE amount > 1000 PARTITION BY customer_id"}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let made: Value = r.json().await.unwrap();
    assert_eq!(made["definition"]["source"], "orders");
    assert_eq!(made["definition"]["key"], "customer_id");
    assert_eq!(made["state"], "running");

    let mut records = Vec::new();
    for i in 0..200u64 {
        records.push(json!({"key": format!("o{i}"), "value": {"id": i, "customer_id": format!("c{}", i % 7), "amount": (i % 4) * 700, "note": "dropped"}}));
    }
    // A tombstone passes with its key; a binary value cannot be read as JSON.
    records.push(json!({"key": "o3", "value": null}));
    records.push(json!({"key": "raw", "value_base64": "AAEC"}));
    let r = post(
        &c,
        &s,
        "/v1/topics/orders/records",
        json!({ "records": records }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let info = caught_up(&c, &s, "big_orders").await;
    assert_eq!(info["counts"]["read"], 202, "{info}");
    assert_eq!(info["counts"]["dead_lettered"], 1, "{info}");

    // The expected outputs, per input partition in input order.
    let mut expected: BTreeMap<(u32, u64), (String, Value)> = BTreeMap::new();
    let mut tombstones = 0;
    for p in 0..4 {
        for r in fetch_all(&c, &s, "orders", p).await {
            let at = (p, r["offset"].as_u64().unwrap());
            if r.get("value_base64").is_some() {
                continue;
            }
            if r["value"].is_null() {
                tombstones += 1;
                expected.insert(at, (r["key"].as_str().unwrap().to_string(), Value::Null));
            } else if let Some(out) = big_order(&r["value"]) {
                expected.insert(at, out);
            }
        }
    }
    assert_eq!(tombstones, 1);
    let mut got: BTreeMap<(u32, u64), (String, Value)> = BTreeMap::new();
    for p in 0..4 {
        for r in fetch_all(&c, &s, "big_orders", p).await {
            assert_eq!(header(&r, "sluice-source-topic"), Some("orders"));
            let src = (
                header(&r, "sluice-source-partition")
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
                header(&r, "sluice-source-offset")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            let key = r["key"].as_str().unwrap().to_string();
            // Re-keyed records go where murmur2 puts their new key.
            assert_eq!(p, sluice_log::partition_for_key(key.as_bytes(), 4), "{r}");
            assert!(
                got.insert(src, (key, r["value"].clone())).is_none(),
                "{src:?} twice"
            );
        }
    }
    assert_eq!(got, expected);

    // The record that is not JSON went to the dead-letter topic, as it was.
    let mut dead = Vec::new();
    for p in 0..4 {
        dead.extend(fetch_all(&c, &s, "big_orders.dead-letters", p).await);
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "raw");
    assert_eq!(dead[0]["value_base64"], "AAEC");
    assert!(
        header(&dead[0], "sluice-error")
            .unwrap()
            .contains("not JSON")
    );

    // Its counters are metrics too.
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = |name, labels: &str| sluice_tests::metric(&text, name, labels);
    assert_eq!(
        m(
            "sluice_processor_records_total",
            "outcome=\"dead_lettered\""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m("sluice_processor_lag_records", "processor=\"big_orders\""),
        Some(0.0)
    );
    assert_eq!(
        m("sluice_processor_running", "processor=\"big_orders\""),
        Some(1.0)
    );

    // Only the processor writes its output.
    let r = post(
        &c,
        &s,
        "/v1/topics/big_orders/records",
        json!({"records": [{"value": 1}]}),
    )
    .await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "topic_is_derived");

    // Listed; deleted; its output is then an ordinary topic.
    let list = get_json(&c, &s, "/v1/processors").await;
    assert_eq!(list["processors"].as_array().unwrap().len(), 1);
    let r = c
        .delete(s.url("/v1/processors/big_orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(s.url("/v1/processors/big_orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "processor_not_found");
    let r = post(
        &c,
        &s,
        "/v1/topics/big_orders/records",
        json!({"records": [{"value": 1}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn definitions_are_checked() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "in", 2).await;
    create_topic(&c, &s, "taken", 1).await;
    let ok = json!({"name": "out", "source": "in", "select": {"v": "v * 2"}, "on_error": "skip"});
    let cases = [
        (
            json!({"name": "x", "source": "nowhere"}),
            404,
            "topic_not_found",
        ),
        (
            json!({"name": "in", "source": "in"}),
            422,
            "invalid_processor",
        ),
        (
            json!({"name": "taken", "source": "in"}),
            422,
            "invalid_processor",
        ),
        (
            json!({"name": "x", "source": "in", "filter": "v >"}),
            422,
            "invalid_processor",
        ),
        (
            json!({"name": "x", "source": "in", "partitions": 0}),
            422,
            "invalid_processor",
        ),
        (
            json!({"name": "x", "source": "in", "on_error": "ignore"}),
            400,
            "invalid_body",
        ),
        (
            json!({"name": "x", "source": "in", "colour": "red"}),
            400,
            "invalid_body",
        ),
        (
            json!({"sql": "CREATE TABLE x AS SELECT * FROM in"}),
            422,
            "invalid_processor",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(&c, &s, "/v1/processors", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], code, "{body}: {p}");
    }
    let r = post(&c, &s, "/v1/processors", ok.clone()).await;
    assert_eq!(r.status(), 201);
    let r = post(&c, &s, "/v1/processors", ok).await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "processor_exists");
    // Replacing may change what is derived, not the key, partitions or source.
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"sql": "CREATE OR REPLACE STREAM out AS SELECT v * 3 AS v FROM in"}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["definition"]["select"], json!({"v": "v * 3"}));
    for sql in [
        "CREATE OR REPLACE STREAM out AS SELECT * FROM in PARTITION BY v",
        "CREATE OR REPLACE STREAM out AS SELECT * FROM taken",
    ] {
        let r = post(&c, &s, "/v1/processors", json!({ "sql": sql })).await;
        assert_eq!(r.status(), 422, "{sql}");
        let p: Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains("made again"), "{p}");
    }
    // A chain is fine; it cannot feed back into its start, whose name (and
    // output topic) is taken.
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "out2", "source": "out", "partitions": 3}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let topic = get_json(&c, &s, "/v1/topics/out2").await;
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3, "{topic}");
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "out", "source": "out2"}),
    )
    .await;
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn on_error_stop_fails_before_the_record() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "in", 1).await;
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "out", "source": "in", "select": {"v": "v"}, "on_error": "stop"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let records =
        json!({"records": [{"value": {"v": 1}}, {"value_base64": "AA=="}, {"value": {"v": 3}}]});
    assert_eq!(
        post(&c, &s, "/v1/topics/in/records", records)
            .await
            .status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = get_json(&c, &s, "/v1/processors/out").await;
        if info["state"] == "failed" {
            break info;
        }
        assert!(Instant::now() < deadline, "never stopped: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        info["reason"].as_str().unwrap().contains("record 1"),
        "{info}"
    );
    assert_eq!(info["partitions"][0]["processed_offset"], 1, "{info}");
    let out = fetch_all(&c, &s, "out", 0).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["value"], json!({"v": 1}));

    // Replaced to skip such records, it goes on from where it stopped.
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "out", "source": "in", "select": {"v": "v"}, "on_error": "skip", "replace": true}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let info = caught_up(&c, &s, "out").await;
    assert_eq!(info["counts"]["skipped"], 1, "{info}");
    assert_eq!(info["counts"]["written"], 2, "{info}");
    let out: Vec<Value> = fetch_all(&c, &s, "out", 0)
        .await
        .into_iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(out, vec![json!({"v": 1}), json!({"v": 3})]);
}

/// Kills: each restart over Kafka waits for the killed process's leases.
fn kills() -> usize {
    match engine() {
        Engine::Embedded => 200,
        Engine::Kafka => 6,
    }
}

/// Exactly once under `kill -9`: four producers write while the server is
/// killed again and again; the output equals the computation over the input
/// log (each input record's output once, in input order per input partition),
/// and no reader ever saw an offset's record change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_exact_across_kill_9() {
    let mut s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &s, "orders", 4).await;
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "big", "source": "orders", "filter": "amount > 1000",
               "select": {"id": "id", "customer_id": "customer_id", "cents": "amount * 100"},
               "key": "customer_id", "partitions": 3}),
    )
    .await;
    assert_eq!(r.status(), 201);

    let base = Arc::new(RwLock::new(s.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for producer in 0..4u64 {
        let (base, stop, c) = (base.clone(), stop.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let records: Vec<Value> = (0..20)
                    .map(|i| {
                        let n = seq + i;
                        json!({"key": format!("o{producer}-{n}"),
                               "value": {"id": n, "customer_id": format!("c{}", n % 11), "amount": (n % 3) * 900}})
                    })
                    .collect();
                seq += 20;
                let url = format!("{}/v1/topics/orders/records", base.read().unwrap());
                let _ = c
                    .post(url)
                    .json(&json!({ "records": records }))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    // A reader that notes every (partition, offset) of the output it sees, with
    // the record's hash, across the restarts.
    let seen: Arc<Mutex<HashMap<(u32, u64), String>>> = Arc::default();
    let changed: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (base, stop, c, seen, changed) = (
            base.clone(),
            stop.clone(),
            c.clone(),
            seen.clone(),
            changed.clone(),
        );
        tokio::spawn(async move {
            let mut next = [0u64; 3];
            while !stop.load(Ordering::Relaxed) {
                for p in 0..3u32 {
                    let url = format!(
                        "{}/v1/topics/big/partitions/{p}/records?offset={}&max_records=500",
                        base.read().unwrap(),
                        next[p as usize]
                    );
                    let Ok(r) = c.get(url).timeout(Duration::from_secs(5)).send().await else {
                        continue;
                    };
                    let Ok(body) = r.json::<Value>().await else {
                        continue;
                    };
                    let Some(records) = body["records"].as_array() else {
                        continue;
                    };
                    for r in records {
                        let at = (p, r["offset"].as_u64().unwrap());
                        let hash = format!("{}|{}|{}", r["key"], r["value"], r["headers"]);
                        let mut seen = seen.lock().unwrap();
                        if let Some(before) = seen.insert(at, hash.clone())
                            && before != hash
                        {
                            changed
                                .lock()
                                .unwrap()
                                .push(format!("{at:?}: {before} then {hash}"));
                        }
                    }
                    if let Some(n) = body["next_offset"].as_u64() {
                        next[p as usize] = n;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut rng = rand::rng();
    for _ in 0..kills() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        s.restart();
        *base.write().unwrap() = s.base.clone();
    }
    // The last stretch runs without kills, so there is plenty to compare
    // however slow the machine was between them.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("producer");
    }
    reader.await.expect("reader");
    caught_up(&c, &s, "big").await;

    // The truth, computed from the input log.
    let mut expected: BTreeMap<(u32, u64), (String, Value)> = BTreeMap::new();
    let mut inputs = 0;
    for p in 0..4 {
        for r in fetch_all(&c, &s, "orders", p).await {
            inputs += 1;
            if let Some(out) = big_order(&r["value"]) {
                expected.insert((p, r["offset"].as_u64().unwrap()), out);
            }
        }
    }
    assert!(inputs > 200, "too little was written: {inputs}");
    let mut got: BTreeMap<(u32, u64), (String, Value)> = BTreeMap::new();
    let mut finals: HashMap<(u32, u64), String> = HashMap::new();
    for p in 0..3u32 {
        let mut last_per_input: HashMap<u32, u64> = HashMap::new();
        for r in fetch_all(&c, &s, "big", p).await {
            let src = (
                header(&r, "sluice-source-partition")
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
                header(&r, "sluice-source-offset")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            // Per input partition, outputs keep input order.
            if let Some(before) = last_per_input.insert(src.0, src.1) {
                assert!(before < src.1, "input order broken at {src:?}");
            }
            let key = r["key"].as_str().unwrap().to_string();
            finals.insert(
                (p, r["offset"].as_u64().unwrap()),
                format!("{}|{}|{}", r["key"], r["value"], r["headers"]),
            );
            assert!(
                got.insert(src, (key, r["value"].clone())).is_none(),
                "{src:?} was written twice"
            );
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "outputs and inputs that pass the filter"
    );
    assert!(
        got == expected,
        "the output differs from the computation over the input"
    );
    let changed = changed.lock().unwrap();
    assert!(
        changed.is_empty(),
        "records changed under readers: {changed:?}"
    );
    for (at, hash) in seen.lock().unwrap().iter() {
        assert_eq!(
            finals.get(at),
            Some(hash),
            "{at:?} read then changed or lost"
        );
    }
}

/// Folds a changelog topic: the last change per key, deletes removing it.
async fn fold_changelog(
    c: &reqwest::Client,
    s: &Server,
    topic: &str,
    partitions: u32,
) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    for p in 0..partitions {
        for r in fetch_all(c, s, topic, p).await {
            let change = &r["value"];
            let key = change["key"].as_str().unwrap().to_string();
            assert_eq!(
                r["key"].as_str(),
                Some(key.as_str()),
                "keyed by the row key"
            );
            match change["op"].as_str().unwrap() {
                "upsert" => {
                    rows.insert(key, change["row"].clone());
                }
                "delete" => {
                    rows.remove(&key);
                }
                other => panic!("op {other}"),
            }
        }
    }
    rows
}

/// A table's changelog, folded, is the table, across restarts; only the table
/// writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_folds_into_its_table() {
    let mut s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &s, "people", 3).await;
    for body in [
        json!({"name": "latest", "source": "people", "key": "key", "changelog": "latest.changes"}),
        json!({"sql": "CREATE TABLE visits AS SELECT COUNT(*) AS n, SUM(v) AS total FROM people GROUP BY round",
               "changelog": "visits.changes"}),
    ] {
        let r = post(&c, &s, "/v1/tables", body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    for round in 0..6u64 {
        let mut records = Vec::new();
        for i in 0..300u64 {
            let key = format!("p{}", (i * 7 + round) % 40);
            if i % 13 == 5 {
                records.push(json!({"key": key, "value": null}));
            } else {
                records.push(json!({"key": key, "value": {"v": i, "round": round}}));
            }
        }
        let r = post(
            &c,
            &s,
            "/v1/topics/people/records",
            json!({ "records": records }),
        )
        .await;
        assert_eq!(r.status(), 200);
        if round % 2 == 1 {
            s.restart();
        }
    }
    for table in ["latest", "visits"] {
        let info = sluice_tests::table_caught_up(&c, &s, table).await;
        let want = sluice_tests::all_rows(&c, &s, table).await;
        assert!(!want.is_empty(), "{info}");
        let got = fold_changelog(&c, &s, &format!("{table}.changes"), 3).await;
        assert_eq!(got, want, "the changelog of {table}");
    }
    let r = post(
        &c,
        &s,
        "/v1/topics/latest.changes/records",
        json!({"records": [{"key": "x", "value": 1}]}),
    )
    .await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "topic_is_derived");
    // A changelog names a new topic.
    let r = post(
        &c,
        &s,
        "/v1/tables",
        json!({"name": "again", "source": "people", "key": "key", "changelog": "people"}),
    )
    .await;
    assert_eq!(r.status(), 422);
}

/// A stream–table join needs no co-partitioning; with `wait_ms`, a row written
/// before the stream record is always found, even while the table is updated
/// concurrently; an inner join passes over records without a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joins_a_table_and_the_wait_closes_the_race() {
    let s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &s, "customers", 3).await;
    create_topic(&c, &s, "orders", 5).await;
    let r = post(
        &c,
        &s,
        "/v1/tables",
        json!({"name": "customers_by_id", "source": "customers", "key": "$.id"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"sql": "CREATE STREAM enriched AS SELECT o.id AS id, amount, c.name AS name, c.id AS cid \
                       FROM orders o LEFT JOIN customers_by_id c ON o.customer_id = c.id",
               "wait_ms": 10000}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = post(
        &c,
        &s,
        "/v1/processors",
        json!({"name": "known", "source": "orders", "select": {"id": "id", "who": "c.name"},
               "join": {"table": "customers_by_id", "as": "c", "on": "customer_id", "type": "inner"}}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The customer is renamed, then an order is placed: the order must see
    // that name or a later one, never an earlier one (it sees the table as it
    // is when the order is processed, at least as new as when it was placed).
    let mut expected = BTreeMap::new();
    for i in 0..60u64 {
        let id = format!("c{}", i % 4);
        let name = format!("name-{i}");
        let r = post(
            &c,
            &s,
            "/v1/topics/customers/records",
            json!({"records": [{"key": id, "value": {"id": id, "name": name}}]}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = post(
            &c,
            &s,
            "/v1/topics/orders/records",
            json!({"records": [{"key": format!("o{i}"), "value": {"id": i, "customer_id": id, "amount": i}}]}),
        )
        .await;
        assert_eq!(r.status(), 200);
        expected.insert(i, json!({"id": i, "amount": i, "name": name, "cid": id}));
    }
    // An order whose customer does not exist.
    let r = post(
        &c,
        &s,
        "/v1/topics/orders/records",
        json!({"records": [{"key": "o-x", "value": {"id": 999, "customer_id": "nobody", "amount": 1}}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    expected.insert(
        999,
        json!({"id": 999, "amount": 1, "name": null, "cid": null}),
    );
    caught_up(&c, &s, "enriched").await;
    caught_up(&c, &s, "known").await;
    let mut got = BTreeMap::new();
    for p in 0..5 {
        for r in fetch_all(&c, &s, "enriched", p).await {
            got.insert(r["value"]["id"].as_u64().unwrap(), r["value"].clone());
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, want) in &expected {
        let have = &got[id];
        for field in ["id", "amount", "cid"] {
            assert_eq!(have[field], want[field], "order {id}");
        }
        match (want["name"].as_str(), have["name"].as_str()) {
            (None, None) => {}
            (Some(w), Some(h)) => {
                let n = |s: &str| s.trim_start_matches("name-").parse::<u64>().unwrap();
                assert!(
                    n(h) >= n(w) && n(h) % 4 == n(w) % 4,
                    "order {id} placed after {w} saw {h}"
                );
            }
            other => panic!("order {id}: {other:?}"),
        }
    }
    let mut inner = 0;
    for p in 0..5 {
        for r in fetch_all(&c, &s, "known", p).await {
            assert!(
                r["value"]["who"].as_str().unwrap().starts_with("name-"),
                "{r}"
            );
            inner += 1;
        }
    }
    assert_eq!(inner, 60);
    let info = get_json(&c, &s, "/v1/processors/known").await;
    assert_eq!(info["counts"]["filtered"], 1, "{info}");
    assert_eq!(info["definition"]["join"]["type"], "inner", "{info}");
    // A join names a table that exists, by what keys it.
    for (body, status, code) in [
        (
            json!({"name": "x1", "source": "orders", "join": {"table": "nope", "on": "customer_id"}}),
            404,
            "table_not_found",
        ),
        (
            json!({"sql": "CREATE STREAM x2 AS SELECT * FROM orders o JOIN customers_by_id c ON o.customer_id = c.name"}),
            422,
            "invalid_processor",
        ),
        (
            json!({"sql": "CREATE STREAM x3 AS SELECT * FROM orders o RIGHT JOIN customers_by_id c ON o.customer_id = c.id"}),
            422,
            "invalid_processor",
        ),
    ] {
        let r = post(&c, &s, "/v1/processors", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], code, "{body}");
    }
}
