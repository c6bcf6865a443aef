//! Tables and sinks over Kafka with two gateways on the same cluster (the same
//! topic prefix): a table made through one is served by both, writes are read
//! through either, and a restarted gateway goes on from its local copy; a
//! sink's partitions are delivered by one gateway each, and taken over when it
//! dies.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::produce_records as produce;
use sluice_tests::{
    Server, all_rows, client, create_topic, get_json, kafka_bootstrap, leases_until, shards_of,
    shared_kafka_args, subscribe_rows, table_caught_up, table_known,
};

/// Two gateways sharing one topic prefix in the test cluster.
fn pair(test: &str) -> Option<(Server, Server)> {
    pair_with(test, &[])
}

/// [`pair`], with extra flags for both.
fn pair_with(test: &str, extra: &[&str]) -> Option<(Server, Server)> {
    let bootstrap = kafka_bootstrap(test)?;
    let prefix = format!("kt{:08x}.", rand::random::<u32>());
    let args = shared_kafka_args(&bootstrap, &prefix);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Some((Server::start_with(&args), Server::start_with(&args)))
}

/// `GET` of one row with `after=` the given produce answer's offsets.
async fn row_after(
    c: &reqwest::Client,
    s: &Server,
    table: &str,
    key: &str,
    produced: &Value,
) -> (u16, Value) {
    let after: Vec<String> = produced["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{}:{}", o["partition"], o["offset"]))
        .collect();
    let r = c
        .get(s.url(&format!(
            "/v1/tables/{table}/rows/{key}?after={}",
            after.join(",")
        )))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// A projection made through one gateway reads the same on both, updates and
/// tombstones included; what is produced through one is read through the other
/// with `after=`; a delete through one removes the table from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_reads_the_same_on_both_gateways() {
    let Some((a, b)) = pair("a_projection_reads_the_same_on_both_gateways") else {
        return;
    };
    let c = client();
    create_topic(&c, &a, "customers", 3).await;
    let mut records = Vec::new();
    for i in 0..300u32 {
        let key = format!("c{}", i % 40);
        records.push(json!({"key": key, "value": {"name": format!("n{i}"), "tier": i % 3}}));
    }
    // Every fifth customer is deleted again.
    for i in (0..40u32).step_by(5) {
        records.push(json!({"key": format!("c{i}"), "value": null}));
    }
    produce(&c, &a, "customers", records).await;
    let r = c
        .post(a.url("/v1/tables"))
        .json(
            &json!({"name": "by_key", "source": "customers", "key": "key",
            "columns": {"name": "$.name", "tier": "$.tier"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    table_known(&c, &b, "by_key").await;
    table_caught_up(&c, &a, "by_key").await;
    table_caught_up(&c, &b, "by_key").await;
    let on_a = all_rows(&c, &a, "by_key").await;
    let on_b = all_rows(&c, &b, "by_key").await;
    assert_eq!(on_a.len(), 32, "40 customers, 8 deleted: {on_a:?}");
    assert_eq!(on_a, on_b);
    assert_eq!(on_a["c1"], json!({"name": "n281", "tier": 2}));
    assert!(!on_a.contains_key("c5"));

    // A row subscription on the gateway that does not write hears of changes.
    let mut ws = subscribe_rows(&b, "by_key", "c3").await;

    // Read your writes through the other gateway, both ways.
    let produced = produce(
        &c,
        &a,
        "customers",
        vec![json!({"key": "c1", "value": {"name": "renamed", "tier": 9}})],
    )
    .await;
    let (status, body) = row_after(&c, &b, "by_key", "c1", &produced).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row"], json!({"name": "renamed", "tier": 9}));
    let produced = produce(
        &c,
        &b,
        "customers",
        vec![json!({"key": "c2", "value": null})],
    )
    .await;
    let (status, body) = row_after(&c, &a, "by_key", "c2", &produced).await;
    assert_eq!(status, 404, "the tombstone deleted the row: {body}");
    assert_eq!(body["code"], "row_not_found");
    let (status, _) = row_after(&c, &b, "by_key", "c2", &produced).await;
    assert_eq!(status, 404);
    produce(
        &c,
        &a,
        "customers",
        vec![json!({"key": "c3", "value": {"name": "moved", "tier": 1}})],
    )
    .await;
    let f = sluice_tests::next_json(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["key"].as_str()),
        (Some("row"), Some("c3")),
        "{f}"
    );
    assert_eq!(f["row"], json!({"name": "moved", "tier": 1}));

    // Deleted through one, gone from both.
    let r = c.delete(b.url("/v1/tables/by_key")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.get(a.url("/v1/tables/by_key")).send().await.unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still listed on the other gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last figure a gateway's log gave for `field=` on a line containing
/// `marker`.
fn logged(s: &Server, marker: &str, field: &str) -> Option<u64> {
    let log = std::fs::read_to_string(s.data_dir.with_extension("log")).unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| l.contains(marker))
        .and_then(|l| {
            let at = l.find(&format!("{field}="))? + field.len() + 1;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// A gateway killed with `kill -9` and started again serves the table from its
/// local copy: it reads only the changelog records written while it was down,
/// not the changelog from its start, and answers the same rows as the other
/// (which goes on meanwhile, folding the killed one's partitions too once its
/// session ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_goes_on_from_its_copy() {
    let Some((a, b)) = pair("a_restarted_gateway_goes_on_from_its_copy") else {
        return;
    };
    let mut gateways = [a, b];
    let c = client();
    create_topic(&c, &gateways[0], "clicks", 4).await;
    let r = c
        .post(gateways[0].url("/v1/tables"))
        .json(
            &json!({"name": "per_page", "source": "clicks", "group_by": "key",
            "aggregates": {"n": {"count": {}}, "ms": {"sum": "$.ms"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // A round of 1,000 clicks at a time through `s`, applied before the next, so
    // that the changelog holds several batches.
    let clicks = async |s: &Server, rounds: std::ops::Range<u32>| {
        for round in rounds {
            let records = (0..1_000)
                .map(|i| round * 1_000 + i)
                .map(|i| json!({"key": format!("page-{}", i % 2_000), "value": {"ms": i % 100}}))
                .collect();
            produce(&c, s, "clicks", records).await;
            table_caught_up(&c, s, "per_page").await;
        }
    };
    clicks(&gateways[0], 0..10).await;
    table_known(&c, &gateways[1], "per_page").await;
    table_caught_up(&c, &gateways[1], "per_page").await;

    let w = 0;
    gateways[1 - w].kill();
    clicks(&gateways[w], 10..12).await;
    let started = Instant::now();
    let restarted = &mut gateways[1 - w];
    restarted.restart();
    let restarted = &gateways[1 - w];
    let t = table_caught_up(&c, restarted, "per_page").await;
    let serving = started.elapsed();
    assert_eq!(t["rows"], 2_000);
    let replay = logged(restarted, "table copies resume", "replay").expect("the resume figures");
    let full = logged(restarted, "table copies resume", "full").expect("the resume figures");
    assert!(
        replay < full / 2,
        "a restart read {replay} of {full} changelog records"
    );
    assert_eq!(
        all_rows(&c, &gateways[w], "per_page").await,
        all_rows(&c, restarted, "per_page").await
    );
    let row = get_json(&c, restarted, "/v1/tables/per_page/rows/page-7").await;
    assert_eq!(row["row"]["n"], 6);
    eprintln!(
        "restart: the copy read {replay} changelog records of {full} and served the table caught up {} ms after the restart",
        serving.as_millis()
    );
}

/// A gateway stopped with SIGTERM hands the partitions it folds to the other
/// gateway at once: with leases of 60 s, the other applies what is produced
/// after the stop, on every partition, well before the stopped one's leases
/// would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_hands_its_tables_over_at_once() {
    let Some(bootstrap) = kafka_bootstrap("a_stopped_gateway_hands_its_tables_over_at_once") else {
        return;
    };
    const SESSION: Duration = Duration::from_secs(60);
    let prefix = format!("kh{:08x}.", rand::random::<u32>());
    let mut args = shared_kafka_args(&bootstrap, &prefix);
    let at = args
        .iter()
        .position(|a| a == "--group-session-timeout-ms")
        .unwrap()
        + 1;
    args[at] = SESSION.as_millis().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateways = [Server::start_with(&args), Server::start_with(&args)];
    let c = client();
    create_topic(&c, &gateways[0], "orders", 3).await;
    let r = c
        .post(gateways[0].url("/v1/tables"))
        .json(
            &json!({"name": "per_customer", "source": "orders", "group_by": "key",
            "aggregates": {"n": {"count": {}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let records = (0..100)
        .map(|i| json!({"key": format!("c-{}", i % 5), "value": {"amount": i}}))
        .collect();
    produce(&c, &gateways[0], "orders", records).await;
    for g in &gateways {
        table_known(&c, g, "per_customer").await;
        table_caught_up(&c, g, "per_customer").await;
    }

    leases_until(&[&gateways[0], &gateways[1]], "shared by both", |h| {
        shards_of(&h[0], "per_customer") + shards_of(&h[1], "per_customer") == 3
            && h.iter().all(|h| shards_of(h, "per_customer") > 0)
    })
    .await;
    let w = 0;
    let stopped_at = Instant::now();
    assert!(gateways[w].terminate(), "the writer did not stop cleanly");
    let log = std::fs::read_to_string(gateways[w].data_dir.with_extension("log")).unwrap();
    assert!(
        log.contains("handed the table over"),
        "the stopped writer did not hand the table over:\n{log}"
    );
    let other = &gateways[1 - w];
    // Every customer: their partitions were folded by either gateway.
    let records = (0..50)
        .map(|i| json!({"key": format!("c-{}", i % 5), "value": {"amount": i}}))
        .collect();
    let produced = produce(&c, other, "orders", records).await;
    let deadline = stopped_at + SESSION / 2;
    for customer in 0..5 {
        let key = format!("c-{customer}");
        let row = loop {
            let (status, body) = row_after(&c, other, "per_customer", &key, &produced).await;
            if status == 200 {
                break body;
            }
            assert_eq!(status, 503, "{body}");
            assert!(
                Instant::now() < deadline,
                "the other gateway had not taken the table over {:?} after the stop: {body}",
                SESSION / 2
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(row["row"]["n"], 30, "{key}: {row}");
    }
    eprintln!(
        "hand-over: the other gateway applied what was produced after the stop {} ms after it",
        stopped_at.elapsed().as_millis()
    );
}

/// The work of one table is spread over both gateways: a state table's source
/// partitions are folded, each by one gateway, some by each, and a projection is
/// folded by one of them. Rows grouped by a field of the value come from
/// records of every partition, so their parts, kept by the shards of both
/// gateways, add up to the same rows on both, for a point read and a paged
/// browse. When one gateway is killed, the other folds every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_s_partitions_are_spread_over_the_gateways() {
    let Some((a, mut b)) = pair("a_table_s_partitions_are_spread_over_the_gateways") else {
        return;
    };
    let c = client();
    create_topic(&c, &a, "visits", 6).await;
    for def in [
        json!({"name": "per_page", "source": "visits", "group_by": "$.page",
            "aggregates": {"n": {"count": {}}, "ms": {"sum": "$.ms"},
                "slowest": {"max": "$.ms"}, "last_ms": {"latest": "$.ms"}}}),
        json!({"name": "last_visit", "source": "visits", "key": "key"}),
    ] {
        let r = c.post(a.url("/v1/tables")).json(&def).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let held = leases_until(&[&a, &b], "spread over both gateways", |h| {
        h.iter().all(|h| shards_of(h, "per_page") > 0)
            && shards_of(&h[0], "per_page") + shards_of(&h[1], "per_page") == 6
            && shards_of(&h[0], "last_visit") + shards_of(&h[1], "last_visit") == 1
    })
    .await;
    eprintln!("spread: {held:?}");
    // Each gateway's answers say the same: each partition is folded by one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let here = |t: Value| -> Vec<bool> {
            t["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["folded_here"] == json!(true))
                .collect()
        };
        let ta = get_json(&c, &a, "/v1/tables/per_page").await;
        let tb = get_json(&c, &b, "/v1/tables/per_page").await;
        let (ha, hb) = (here(ta.clone()), here(tb.clone()));
        let split = ha.len() == 6
            && ha.iter().zip(&hb).all(|(x, y)| x != y)
            && ha.contains(&true)
            && hb.contains(&true)
            && ta["written_here"] == json!(true)
            && tb["written_here"] == json!(true);
        if split {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions folded here: {ha:?} on one, {hb:?} on the other"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Produced through either gateway, on every partition: 12 pages, each
    // visited from many users (keys), so from every partition.
    let visits = |from: u32, n: u32| -> Vec<Value> {
        (from..from + n)
            .map(|i| {
                json!({"key": format!("user-{}", i % 97),
                    "value": {"page": format!("page-{:02}", i % 12), "ms": i % 100}})
            })
            .collect()
    };
    produce(&c, &a, "visits", visits(0, 600)).await;
    produce(&c, &b, "visits", visits(600, 600)).await;
    let expect = |n: u32| -> std::collections::BTreeMap<String, (u64, u64, u64)> {
        let mut e = std::collections::BTreeMap::new();
        for i in 0..n {
            let row = e
                .entry(format!("page-{:02}", i % 12))
                .or_insert((0u64, 0u64, 0u64));
            row.0 += 1;
            row.1 += u64::from(i % 100);
            row.2 = row.2.max(u64::from(i % 100));
        }
        e
    };
    let check = async |s: &Server, n: u32| {
        let t = table_caught_up(&c, s, "per_page").await;
        assert_eq!(t["rows"], 12, "each page once, however many parts: {t}");
        let rows = all_rows(&c, s, "per_page").await;
        let got: std::collections::BTreeMap<String, (u64, u64, u64)> = rows
            .iter()
            .map(|(k, r)| {
                let v = |f: &str| r[f].as_u64().unwrap_or(u64::MAX);
                (k.clone(), (v("n"), v("ms"), v("slowest")))
            })
            .collect();
        assert_eq!(got, expect(n), "rows on {}", s.base);
        // A page of 5 at a time, after a row: the same rows.
        let page = get_json(
            &c,
            s,
            "/v1/tables/per_page/rows?prefix=page-&after=page-03&limit=5",
        )
        .await;
        let keys: Vec<&str> = page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["page-04", "page-05", "page-06", "page-07", "page-08"],
            "{page}"
        );
        let one = get_json(&c, s, "/v1/tables/per_page/rows/page-07").await;
        assert_eq!(one["row"]["n"], expect(n)["page-07"].0, "{one}");
        assert_eq!(one["row"]["page"], "page-07", "{one}");
    };
    check(&a, 1_200).await;
    check(&b, 1_200).await;
    table_caught_up(&c, &a, "last_visit").await;
    assert_eq!(
        all_rows(&c, &a, "last_visit").await,
        all_rows(&c, &b, "last_visit").await
    );

    // The other gateway folds every partition once the killed one's session ends.
    b.kill();
    leases_until(&[&a], "all taken over", |h| {
        shards_of(&h[0], "per_page") == 6 && shards_of(&h[0], "last_visit") == 1
    })
    .await;
    produce(&c, &a, "visits", visits(1_200, 600)).await;
    check(&a, 1_800).await;
}

/// With `--kafka-table-shards 2`, a state table over 4 partitions is split into
/// 2 shards of 2 partitions each (`p % 2`): each gateway folds one shard, so
/// the partitions it folds are both of that shard's, and the rows still count
/// every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_has_at_most_the_shards_it_is_given() {
    let Some(bootstrap) = kafka_bootstrap("a_table_has_at_most_the_shards_it_is_given") else {
        return;
    };
    let prefix = format!("ks{:08x}.", rand::random::<u32>());
    let mut args = shared_kafka_args(&bootstrap, &prefix);
    args.extend(["--kafka-table-shards".to_string(), "2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = (Server::start_with(&args), Server::start_with(&args));
    let c = client();
    create_topic(&c, &a, "taps", 4).await;
    let r = c
        .post(a.url("/v1/tables"))
        .json(
            &json!({"name": "per_user", "source": "taps", "group_by": "key",
            "aggregates": {"n": {"count": {}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    leases_until(&[&a, &b], "one shard each", |h| {
        h.iter().all(|h| shards_of(h, "per_user") == 1)
    })
    .await;
    let records = (0..80)
        .map(|i| json!({"key": format!("u-{}", i % 8), "value": {}}))
        .collect();
    produce(&c, &b, "taps", records).await;
    for s in [&a, &b] {
        let t = table_caught_up(&c, s, "per_user").await;
        let here: Vec<u64> = t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["folded_here"] == json!(true))
            .map(|p| p["partition"].as_u64().unwrap())
            .collect();
        assert!(
            here == [0, 2] || here == [1, 3],
            "one shard's partitions on {}: {t}",
            s.base
        );
        let rows = all_rows(&c, s, "per_user").await;
        assert_eq!(rows.len(), 8);
        assert!(rows.values().all(|r| r["n"] == 10), "{rows:?}");
    }
}

/// Which partitions of sink `name` gateway `s` delivers, as it says.
async fn delivered_here(c: &reqwest::Client, s: &Server, name: &str) -> Vec<bool> {
    get_json(c, s, &format!("/v1/sinks/{name}")).await["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["delivered_here"] == json!(true))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_s_partitions_are_shared_and_taken_over_when_a_gateway_dies() {
    let Some((a, mut b)) = pair_with(
        "a_sink_s_partitions_are_shared_and_taken_over_when_a_gateway_dies",
        &["--sink-allow-net", "127.0.0.0/8"],
    ) else {
        return;
    };
    let c = client();
    let rx = sluice_tests::receiver::Receiver::start().await;
    create_topic(&c, &a, "events", 4).await;
    let r = c
        .post(a.url("/v1/sinks"))
        .json(
            &json!({"name": "out", "source": {"topic": "events"}, "url": rx.url,
            "start": "earliest", "retry": {"initial_ms": 20, "max_ms": 200}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Each partition is delivered by one gateway, and each gateway delivers some.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ha, hb) = (
            delivered_here(&c, &a, "out").await,
            delivered_here(&c, &b, "out").await,
        );
        if ha.len() == 4
            && hb.len() == 4
            && ha.iter().zip(&hb).all(|(x, y)| x != y)
            && ha.contains(&true)
            && hb.contains(&true)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered here: {ha:?} on one, {hb:?} on the other"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = |from: u32| -> Vec<Value> {
        (from..from + 200)
            .map(|i| json!({"key": format!("k{}", i % 31), "value": {"i": i}}))
            .collect()
    };
    produce(&c, &b, "events", records(0)).await;
    let unique = |got: &[sluice_tests::receiver::Received]| {
        got.iter()
            .filter(|r| r.status == 200)
            .map(|r| r.webhook_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    rx.until(Duration::from_secs(60), |g| unique(g) == 200)
        .await;

    // One gateway dies; the other takes over its partitions and delivers the rest.
    b.kill();
    produce(&c, &a, "events", records(200)).await;
    let got = rx
        .until(Duration::from_secs(120), |g| unique(g) == 400)
        .await;
    let here = delivered_here(&c, &a, "out").await;
    assert_eq!(here, vec![true; 4], "the survivor delivers every partition");
    // A key's records were first delivered in offset order, across the takeover.
    let mut seen = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for r in got.iter().filter(|r| r.status == 200) {
        if !seen.insert(r.webhook_id.clone()) {
            continue;
        }
        let key = r.key.clone().unwrap();
        if let Some(&before) = last.get(&key) {
            assert!(r.offset > before, "{key}: {} after {before}", r.offset);
        }
        last.insert(key, r.offset);
    }
    // What the dead gateway delivered without committing yet is delivered
    // again (with the same ids), and the sink catches up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = get_json(&c, &a, "/v1/sinks/out").await;
        if info["lag_records"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unique(&rx.got()), 400);
}
