//! Declarative tables against the real binary: projections, state tables with and
//! without windows, backfill, queries, read-your-writes, and exactly-once under
//! `kill -9`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::produce_records as produce;
use sluice_tests::{Server, client, create_topic, table_caught_up};

async fn create_table(c: &reqwest::Client, s: &Server, def: Value) -> Value {
    let r = c.post(s.url("/v1/tables")).json(&def).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn row(c: &reqwest::Client, s: &Server, table: &str, key: &str) -> Option<Value> {
    let r = c
        .get(s.url(&format!("/v1/tables/{table}/rows/{key}")))
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    Some(r.json::<Value>().await.unwrap()["row"].clone())
}

#[tokio::test]
async fn projections_follow_updates_and_tombstones() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "customers", 2).await;
    produce(&c, &s, "customers", vec![
        json!({"key": "c1", "value": {"id": "c1", "name": "Ann", "tier": "gold", "addr": {"city": "Oslo"}}}),
        json!({"key": "c2", "value": {"id": "c2", "name": "Bo", "tier": null}}),
        json!({"key": "c1", "value": {"id": "c1", "name": "Ann B", "tier": "gold", "addr": {"city": "Bergen"}}}),
        json!({"key": "c3", "value": {"id": "c3", "name": "Cy", "tier": "silver"}}),
    ]).await;
    create_table(
        &c,
        &s,
        json!({"name": "by_key", "source": "customers", "key": "key",
        "columns": {"name": "$.name", "city": "$.addr.city"}}),
    )
    .await;
    create_table(&c, &s, json!({"sql": "CREATE TABLE tiered AS SELECT id, name, tier FROM customers WHERE tier IS NOT NULL"})).await;
    table_caught_up(&c, &s, "by_key").await;
    table_caught_up(&c, &s, "tiered").await;
    assert_eq!(
        row(&c, &s, "by_key", "c1").await,
        Some(json!({"name": "Ann B", "city": "Bergen"}))
    );
    assert_eq!(
        row(&c, &s, "by_key", "c2").await,
        Some(json!({"name": "Bo", "city": null}))
    );
    assert_eq!(
        row(&c, &s, "tiered", "c1").await,
        Some(json!({"id": "c1", "name": "Ann B", "tier": "gold"}))
    );
    assert_eq!(row(&c, &s, "tiered", "c2").await, None, "filtered out");
    // A tombstone deletes the row of a table keyed by the record key.
    produce(
        &c,
        &s,
        "customers",
        vec![json!({"key": "c1", "value": null})],
    )
    .await;
    let t = table_caught_up(&c, &s, "by_key").await;
    assert_eq!(row(&c, &s, "by_key", "c1").await, None);
    assert_eq!(t["rows"], 2);
    assert_eq!(t["definition"]["key"], "key");
    let t = table_caught_up(&c, &s, "tiered").await;
    assert_eq!(
        t["sql"],
        "CREATE TABLE tiered AS SELECT id, name, tier FROM customers WHERE tier IS NOT NULL"
    );
    assert_eq!(t["skipped"], 1, "the tombstone has no $.id to key by");
    let list: Value = c
        .get(s.url("/v1/tables"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tables"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn state_tables_match_a_straightforward_computation() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "payments", 3).await;
    // Payments 60 s apart in simulated time, spread over four customers.
    let base = 1_764_000_000_000u64;
    let mut events = Vec::new();
    for i in 0..300u64 {
        let customer = format!("c{}", i % 4);
        let amount = (i * 7) % 50 + 1;
        events.push(json!({"key": customer, "value": {"customer_id": customer, "amount": amount}, "timestamp": base + i * 1_000}));
    }
    // Records that do not fit: no amount, a string amount, a binary value.
    events.push(json!({"value": {"customer_id": "c0"}}));
    events.push(json!({"value": {"customer_id": "c0", "amount": "lots"}}));
    events.push(json!({"value_base64": "AAE="}));
    produce(&c, &s, "payments", events[..150].to_vec()).await;
    create_table(&c, &s, json!({"sql": "CREATE TABLE totals AS SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS smallest, MAX(amount) AS biggest, AVG(amount) AS mean, LATEST(amount) AS last FROM payments GROUP BY customer_id"})).await;
    create_table(&c, &s, json!({"name": "per_minute", "source": "payments", "group_by": "$.customer_id",
        "aggregates": {"n": {"count": {}}, "total": {"sum": "$.amount"}}, "window": {"tumbling_ms": 60000}})).await;
    // The rest arrives after the tables exist: backfill, then live.
    produce(&c, &s, "payments", events[150..].to_vec()).await;
    let t = table_caught_up(&c, &s, "totals").await;
    assert_eq!(t["skipped"], 3);
    table_caught_up(&c, &s, "per_minute").await;

    let mut expect: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    let mut windows: BTreeMap<(String, u64), (u64, u64)> = BTreeMap::new();
    for i in 0..300u64 {
        let customer = format!("c{}", i % 4);
        let amount = (i * 7) % 50 + 1;
        let e = expect
            .entry(customer.clone())
            .or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += amount;
        e.2 = e.2.min(amount);
        e.3 = e.3.max(amount);
        let ts = base + i * 1_000;
        let w = windows.entry((customer, ts - ts % 60_000)).or_default();
        w.0 += 1;
        w.1 += amount;
    }
    for (customer, (n, total, min, max)) in &expect {
        let r = row(&c, &s, "totals", customer).await.unwrap();
        assert_eq!(r["customer_id"], customer.as_str());
        assert_eq!(r["n"], *n, "{customer}");
        assert_eq!(r["total"], *total, "{customer}");
        assert_eq!(r["smallest"], *min);
        assert_eq!(r["biggest"], *max);
        assert!((r["mean"].as_f64().unwrap() - *total as f64 / *n as f64).abs() < 1e-9);
    }
    // Within a partition records apply in order; c3's last record is i = 299.
    assert_eq!(
        row(&c, &s, "totals", "c3").await.unwrap()["last"],
        (299 * 7) % 50 + 1
    );
    for ((customer, start), (n, total)) in &windows {
        let key = format!("{customer}@{start:013}");
        let r = row(&c, &s, "per_minute", &key)
            .await
            .unwrap_or_else(|| panic!("no window {key}"));
        assert_eq!(
            (r["n"].as_u64(), r["total"].as_u64()),
            (Some(*n), Some(*total)),
            "{key}"
        );
        assert_eq!(r["window_start"], *start);
        assert_eq!(r["window_end"], start + 60_000);
    }
    // Prefix scan with keyset pagination: all of c1's windows.
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = s.url("/v1/tables/per_minute/rows?prefix=c1@&limit=2");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = c.get(url).send().await.unwrap().json().await.unwrap();
        keys.extend(
            page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["key"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = windows
        .keys()
        .filter(|(c, _)| c == "c1")
        .map(|(c, s)| format!("{c}@{s:013}"))
        .collect();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn queries_etag_long_poll_and_read_your_writes() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "ev", 2).await;
    create_table(&c, &s, json!({"name": "counts", "source": "ev", "group_by": "key", "aggregates": {"n": {"count": {}}}})).await;
    let answer = produce(&c, &s, "ev", vec![json!({"key": "a", "value": 1})]).await;
    let o = &answer["offsets"][0];
    // Read your writes: wait until the table applied the produce.
    let url = s.url(&format!(
        "/v1/tables/counts/rows/a?after={}:{}",
        o["partition"], o["offset"]
    ));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["row"]["n"], 1);
    assert!(
        body["offsets"][o["partition"].to_string()]
            .as_u64()
            .unwrap()
            > o["offset"].as_u64().unwrap()
    );
    // Unchanged: 304.
    let r = c
        .get(s.url("/v1/tables/counts/rows/a"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Long poll: answers when the row changes.
    let (c2, u2, t2) = (
        c.clone(),
        s.url("/v1/tables/counts/rows/a?wait_ms=30000"),
        tag.clone(),
    );
    let waiting =
        tokio::spawn(async move { c2.get(u2).header("if-none-match", t2).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&c, &s, "ev", vec![json!({"key": "a", "value": 2})]).await;
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), tag);
    assert_eq!(r.json::<Value>().await.unwrap()["row"]["n"], 2);
    // Errors.
    let r = c
        .get(s.url("/v1/tables/counts/rows/zzz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["code"].clone()
        ),
        (404, json!("row_not_found"))
    );
    let r = c.get(s.url("/v1/tables/nope/rows/a")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Offsets the table can never reach are answered at once, not waited for.
    for (after, status, code) in [
        ("0:999999", 416, "offset_out_of_range"),
        ("99:0", 400, "invalid_query"),
        ("2:0", 400, "invalid_query"),
    ] {
        let r = c
            .get(s.url(&format!("/v1/tables/counts/rows/a?after={after}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "after={after}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            code,
            "after={after}"
        );
    }
    // Delete, re-create: rebuilt from the log.
    assert_eq!(
        c.delete(s.url("/v1/tables/counts"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(s.url("/v1/tables/counts"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    create_table(&c, &s, json!({"name": "counts", "source": "ev", "group_by": "key", "aggregates": {"n": {"count": {}}}})).await;
    table_caught_up(&c, &s, "counts").await;
    assert_eq!(row(&c, &s, "counts", "a").await.unwrap()["n"], 2);
}

#[tokio::test]
async fn invalid_definitions_say_what_is_wrong() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    for (def, status, code) in [
        (
            json!({"name": "x", "source": "nope", "key": "key"}),
            404,
            "topic_not_found",
        ),
        (
            json!({"name": "x", "source": "t", "key": "id"}),
            422,
            "invalid_table",
        ),
        (json!({"name": "x", "source": "t"}), 422, "invalid_table"),
        (
            json!({"name": "x", "source": "t", "key": "key", "group_by": "key"}),
            422,
            "invalid_table",
        ),
        (
            json!({"name": "x", "source": "t", "group_by": "$.a"}),
            422,
            "invalid_table",
        ),
        (
            json!({"name": "x", "source": "t", "group_by": "$.a", "aggregates": {"n": {"median": "$.b"}}}),
            400,
            "invalid_body",
        ),
        (
            json!({"name": "x", "source": "t", "key": "key", "filter": "a LIKE 'b'"}),
            422,
            "invalid_table",
        ),
        (
            json!({"name": "bad name", "source": "t", "key": "key"}),
            422,
            "invalid_table",
        ),
        (
            json!({"name": "x", "source": "t", "key": "key", "extra": 1}),
            400,
            "invalid_body",
        ),
        (
            json!({"sql": "CREATE TABLE x AS SELECT a FROM nope"}),
            404,
            "topic_not_found",
        ),
        (
            json!({"sql": "CREATE TABLE x AS SELECT a, b FROM t GROUP BY a"}),
            422,
            "invalid_table",
        ),
        (json!({"sql": "DROP TABLE t"}), 422, "invalid_table"),
        (json!({"sql": 5}), 400, "invalid_body"),
    ] {
        let r = c.post(s.url("/v1/tables")).json(&def).send().await.unwrap();
        let st = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (st, body["code"].as_str().unwrap()),
            (status, code),
            "{def}: {body}"
        );
    }
    // A key given twice, at any depth, is refused like everywhere else, rather
    // than the last one winning.
    for body in [
        r#"{"name": "x", "name": "y", "source": "t", "key": "key"}"#,
        r#"{"name": "x", "source": "t", "group_by": "$.a", "aggregates": {"n": {"count": {}}, "n": {"sum": "$.b"}}}"#,
        r#"{"name": "x", "source": "t", "key": "key", "columns": {"a": "$.a", "a": "$.b"}}"#,
        r#"{"sql": "CREATE TABLE x AS SELECT a FROM t", "sql": "CREATE TABLE y AS SELECT a FROM t"}"#,
    ] {
        let r = c
            .post(s.url("/v1/tables"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            (st, problem["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("duplicate"),
            "{problem}"
        );
    }
    let list: Value = sluice_tests::get_json(&c, &s, "/v1/tables").await;
    assert_eq!(list["tables"], json!([]), "nothing was created");
    create_table(&c, &s, json!({"name": "x", "source": "t", "key": "key"})).await;
    let r = c
        .post(s.url("/v1/tables"))
        .json(&json!({"name": "x", "source": "t", "key": "key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// Exactly once: events go to a counting table while the server is killed again and
/// again; afterwards counts and sums equal exactly what the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_kill_9_exactly() {
    let mut s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = client();
    create_topic(&c, &s, "ev", 3).await;
    create_table(&c, &s, json!({"name": "sums", "source": "ev", "group_by": "key", "aggregates": {"n": {"count": {}}, "total": {"sum": "$.v"}}})).await;
    for round in 0..8u64 {
        let records: Vec<Value> = (0..2_000u64)
            .map(|i| json!({"key": format!("k{}", i % 5), "value": {"v": i % 10 + round}}))
            .collect();
        // Some of these may fail as the server dies; what the log holds is what counts.
        let base = s.base.clone();
        let cc = c.clone();
        let send = tokio::spawn(async move {
            let _ = cc
                .post(format!("{base}/v1/topics/ev/records"))
                .json(&json!({"records": records}))
                .send()
                .await;
        });
        tokio::time::sleep(Duration::from_millis(30 + round * 20)).await;
        s.restart();
        let _ = send.await;
    }
    table_caught_up(&c, &s, "sums").await;
    // The truth, from the log.
    let mut expect: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in 0..3 {
        for r in sluice_tests::fetch_all(&c, &s, "ev", p).await {
            let e = expect
                .entry(r["key"].as_str().unwrap().to_string())
                .or_default();
            e.0 += 1;
            e.1 += r["value"]["v"].as_u64().unwrap();
        }
    }
    assert!(!expect.is_empty(), "nothing was written");
    for (k, (n, total)) in expect {
        let r = row(&c, &s, "sums", &k).await.unwrap();
        assert_eq!(
            (r["n"].as_u64(), r["total"].as_u64()),
            (Some(n), Some(total)),
            "key {k}"
        );
    }
}

#[tokio::test]
async fn row_changes_stream_over_websocket() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "people", 2).await;
    create_table(
        &c,
        &s,
        json!({"name": "people_by_key", "source": "people", "key": "key"}),
    )
    .await;
    let mut ws = sluice_tests::subscribe_rows(&s, "people_by_key", "c").await;
    produce(
        &c,
        &s,
        "people",
        vec![
            json!({"key": "x1", "value": {"n": 0}}),
            json!({"key": "c1", "value": {"n": 1}}),
        ],
    )
    .await;
    let f = sluice_tests::next_json(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["key"].as_str()),
        (Some("row"), Some("c1")),
        "{f}"
    );
    assert_eq!(f["row"], json!({"n": 1}));
    produce(&c, &s, "people", vec![json!({"key": "c1", "value": null})]).await;
    let f = sluice_tests::next_json(&mut ws).await;
    assert_eq!(
        (f["key"].as_str(), f["row"].is_null()),
        (Some("c1"), true),
        "{f}"
    );
    // A table the server does not have.
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": "u", "table": "nope"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        sluice_tests::next_json(&mut ws).await["code"],
        "table_not_found"
    );
}

#[tokio::test]
async fn closed_windows_are_dropped_after_their_retention() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "ticks", 1).await;
    create_table(&c, &s, json!({"sql": "CREATE TABLE per_min AS SELECT k, COUNT(*) AS n FROM ticks GROUP BY k WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 1 MINUTE)"})).await;
    // A minute boundary.
    let t0 = 1_764_000_000_000u64;
    produce(
        &c,
        &s,
        "ticks",
        vec![
            json!({"value": {"k": "a"}, "timestamp": t0}),
            json!({"value": {"k": "a"}, "timestamp": t0 + 1}),
        ],
    )
    .await;
    table_caught_up(&c, &s, "per_min").await;
    let old = format!("a@{t0:013}");
    assert_eq!(row(&c, &s, "per_min", &old).await.unwrap()["n"], 2);
    // Record time moves five minutes on: the first window closed four minutes ago.
    produce(
        &c,
        &s,
        "ticks",
        vec![json!({"value": {"k": "a"}, "timestamp": t0 + 300_000})],
    )
    .await;
    let mut gone = false;
    for _ in 0..200 {
        if row(&c, &s, "per_min", &old).await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the closed window was never dropped");
    let new = format!("a@{:013}", t0 + 300_000);
    assert_eq!(row(&c, &s, "per_min", &new).await.unwrap()["n"], 1);
    assert_eq!(table_caught_up(&c, &s, "per_min").await["rows"], 1);
}

/// A table whose source topic is deleted stops, and stays listed as failed with
/// the reason across a restart; it can be deleted, and then made again.
#[tokio::test]
async fn a_table_whose_source_is_gone_is_failed_listed_and_deletable() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "src", 1).await;
    let def = json!({"name": "t", "source": "src", "key": "key"});
    create_table(&c, &s, def.clone()).await;
    produce(&c, &s, "src", vec![json!({"key": "a", "value": 1})]).await;
    table_caught_up(&c, &s, "t").await;
    let r = c.delete(s.url("/v1/topics/src")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let failed = |s: &Server| {
        let (c, url) = (c.clone(), s.url("/v1/tables/t"));
        async move {
            for _ in 0..100 {
                let t: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
                if t["state"] == "failed" {
                    return t;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the table never failed");
        }
    };
    failed(&s).await;
    s.restart();
    let t = failed(&s).await;
    assert!(t["reason"].as_str().unwrap().contains("src"), "{t}");
    let list = sluice_tests::get_json(&c, &s, "/v1/tables").await;
    assert_eq!(list["tables"].as_array().unwrap().len(), 1, "{list}");
    create_topic(&c, &s, "src", 1).await;
    let r = c.post(s.url("/v1/tables")).json(&def).send().await.unwrap();
    assert_eq!(r.status(), 409, "the failed table still holds its name");
    let r = c.delete(s.url("/v1/tables/t")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    create_table(&c, &s, def).await;
    produce(&c, &s, "src", vec![json!({"key": "b", "value": 2})]).await;
    table_caught_up(&c, &s, "t").await;
    assert!(row(&c, &s, "t", "b").await.is_some());
    assert!(
        row(&c, &s, "t", "a").await.is_none(),
        "rows of the old table are gone"
    );
}
