//! Broker failover under the Kafka engine: producers keep writing through the
//! gateway while the broker that leads the most partitions is killed with
//! `kill -9` and started again, and a group goes on when its coordinator's broker
//! is killed. A test binary of its own, so no other test shares the cluster
//! while a broker is down (and its tests take turns).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{
    Server, all_rows, client, create_topic, fetch_all, get_json, kafka_bootstrap, leases_until,
    shards_of, shared_kafka_args, table_caught_up, table_known, table_until, workspace_root,
};

fn cluster(args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("tests/kafka/cluster"))
        .args(args)
        .output()
        .expect("run tests/kafka/cluster");
    assert!(
        out.status.success(),
        "tests/kafka/cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 8 producers on a 6-partition, replication-factor-3 topic; the leader of the
/// most partitions is killed mid-way and restarted. Every acknowledged record is
/// there exactly once, at the offset it was acknowledged with; every answer was a
/// 2xx, a 503 with `Retry-After`, or a timeout problem; none hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_produce_loses_no_acknowledged_record() {
    let Some(bootstrap) =
        kafka_bootstrap("a_leader_killed_mid_produce_loses_no_acknowledged_record")
    else {
        return;
    };
    let _down = BROKER_DOWN.lock().await;
    let status = cluster(&["status"]);
    assert_eq!(
        status.matches("running").count(),
        3,
        "this test kills brokers of the local test cluster (tests/kafka/cluster start): {status}"
    );
    let s = Server::start_with(&["--backend", "kafka", "--kafka-bootstrap", &bootstrap]);
    let c = client();
    let topic = format!("failover-{:08x}", rand::random::<u32>());
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": topic, "partitions": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..8u32 {
        let (c, url, stop) = (
            c.clone(),
            s.url(&format!("/v1/topics/{topic}/records")),
            stop.clone(),
        );
        producers.push(tokio::spawn(async move {
            // (value, partition, offset) of each acknowledged record; other answers.
            let mut acked = Vec::new();
            let mut other: Vec<(u16, String)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let value = format!("p{p}-{i}");
                let r = tokio::time::timeout(
                    Duration::from_secs(120),
                    c.post(&url)
                        .json(&json!({"key": value, "value": value}))
                        .send(),
                )
                .await
                .expect("no produce request hangs")
                .unwrap();
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let body: Value = r.json().await.unwrap_or_default();
                match status {
                    200 => {
                        let o = &body["offsets"][0];
                        acked.push((
                            value,
                            o["partition"].as_u64().unwrap() as u32,
                            o["offset"].as_u64().unwrap(),
                        ));
                    }
                    503 if retry_after => other.push((status, body["code"].to_string())),
                    408 => other.push((status, body["code"].to_string())),
                    _ => panic!("produce answered {status} {body} while the leader moved"),
                }
                i += 1;
            }
            (acked, other)
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (victim, count) = busiest_leader(&topic);
    cluster(&["kill", &victim]);
    // The cluster moves the victim's partitions to other leaders while it is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = cluster(&["leaders", &topic]);
        let still = now
            .lines()
            .filter(|l| l.split_once(' ').is_some_and(|(_, n)| n == victim))
            .count();
        if still == 0 && now.lines().count() == 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the partitions never moved off node {victim}: {now}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster(&["restart", &victim]);
    cluster(&["wait"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);

    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for p in producers {
        let (a, o) = p.await.unwrap();
        acked.extend(a);
        refused.extend(o);
    }
    assert!(
        acked.len() > 100,
        "only {} records were acknowledged",
        acked.len()
    );

    // Read every partition back in full.
    let mut stored: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for p in 0..6u32 {
        for rec in fetch_all(&c, &s, &topic, p).await {
            stored.insert(
                (p, rec["offset"].as_u64().unwrap()),
                rec["value"].as_str().unwrap().to_string(),
            );
        }
    }
    for (value, p, o) in &acked {
        assert_eq!(
            stored.get(&(*p, *o)),
            Some(value),
            "acknowledged {value} at {p}/{o} is not there"
        );
    }
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for v in stored.values() {
        *copies.entry(v.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "written twice: {doubled:?}");
    eprintln!(
        "failover: killed node {victim} (leader of {count} of 6 partitions, which moved to the others); {} acknowledged, {} refused ({:?})",
        acked.len(),
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
}

/// The node that leads the most partitions of a Kafka topic, and how many.
fn busiest_leader(topic: &str) -> (String, usize) {
    let leaders = cluster(&["leaders", topic]);
    let mut led: HashMap<String, usize> = HashMap::new();
    for line in leaders.lines() {
        if let Some((_, leader)) = line.split_once(' ') {
            *led.entry(leader.to_string()).or_default() += 1;
        }
    }
    led.iter()
        .max_by_key(|(n, c)| (**c, n.to_string()))
        .map(|(n, c)| (n.clone(), *c))
        .unwrap_or_else(|| panic!("{topic} has no leaders: {leaders}"))
}

/// Only one test of this binary takes a broker down at a time.
static BROKER_DOWN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends a request until it is answered with something other than 503 (the
/// group's coordinator moving answers 503 with `Retry-After` for a moment).
async fn until_answered(req: impl Fn() -> reqwest::RequestBuilder) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = req().send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        if status != 503 {
            return (status, body);
        }
        assert!(std::time::Instant::now() < deadline, "503 for 90 s: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Two consumers of a group read and commit; the broker that coordinates the
/// group is killed with `kill -9`. The group goes on once the coordinator moved:
/// the offsets committed before are all there, the consumers read the rest, and
/// no record is read twice (each was committed before the kill or read after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_coordinator_killed_keeps_its_committed_offsets() {
    let Some(bootstrap) =
        kafka_bootstrap("the_groups_coordinator_killed_keeps_its_committed_offsets")
    else {
        return;
    };
    let _down = BROKER_DOWN.lock().await;
    let s = Server::start_with(&["--backend", "kafka", "--kafka-bootstrap", &bootstrap]);
    let c = client();
    let run = format!("{:08x}", rand::random::<u32>());
    let (topic, group) = (format!("coord-{run}"), format!("coord-group-{run}"));
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": topic, "partitions": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let records = (0..80)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    sluice_tests::produce_records(&c, &s, &topic, records).await;

    // Reads up to `limit` records as `consumer` and commits them; answers them.
    let read = |consumer: &'static str, limit: u32| {
        let (c, poll, commit, topic) = (
            c.clone(),
            s.url(&format!(
                "/v1/groups/{group}/topics/{topic}/records?consumer={consumer}&limit={limit}"
            )),
            s.url(&format!("/v1/groups/{group}/offsets")),
            topic.clone(),
        );
        async move {
            let (status, answer) = until_answered(|| c.get(&poll)).await;
            assert_eq!(status, 200, "{answer}");
            let mut got = Vec::new();
            for r in answer["records"].as_array().unwrap() {
                got.push((
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                ));
            }
            if let Some(body) = sluice_tests::commit_body(consumer, &topic, &answer) {
                let (status, answer) = until_answered(|| c.post(&commit).json(&body)).await;
                assert_eq!(status, 204, "{answer}");
            }
            got
        }
    };
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    // Both members join and settle before reading.
    for _ in 0..20 {
        for consumer in ["a", "b"] {
            for r in read(consumer, 1).await {
                *seen.entry(r).or_default() += 1;
            }
        }
    }
    for consumer in ["a", "b"] {
        for r in read(consumer, 15).await {
            *seen.entry(r).or_default() += 1;
        }
    }
    let before: Value = c
        .get(s.url(&format!("/v1/groups/{group}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed_before: Vec<Value> = before["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].clone())
        .collect();

    let wire = sluice_kafka::wire::Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let coordinator = wire
        .find_coordinator(&bootstrap, &group)
        .expect("coordinator");
    let victim = broker_of(&bootstrap, &coordinator);
    cluster(&["kill", &victim]);

    // The group carries on: what was committed is there, the rest is read.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < 80 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of 80 after the kill",
            seen.len()
        );
        for consumer in ["a", "b"] {
            for r in read(consumer, 20).await {
                *seen.entry(r).or_default() += 1;
            }
        }
    }
    let (status, after) = until_answered(|| c.get(s.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(status, 200, "{after}");
    cluster(&["restart", &victim]);
    cluster(&["wait"]);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    assert_eq!(after["topics"][0]["lag"], 0, "{after}");
    for (p, was) in after["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&committed_before)
    {
        assert!(
            p["committed"].as_u64() >= was.as_u64(),
            "committed went back: {was} then {p}"
        );
    }
}

/// The port's broker number in the local test cluster (1 for the first address of
/// `bootstrap`).
fn broker_of(bootstrap: &str, addr: &str) -> String {
    let port = |a: &str| -> u32 { a.trim().rsplit(':').next().unwrap().parse().unwrap() };
    (port(addr) - port(bootstrap.split(',').next().unwrap()) + 1).to_string()
}

/// While the broker coordinating a group is down (killed with `kill -9`, not yet
/// replaced in the cluster's eyes), what the dashboard reads goes on answering:
/// the overview (`/v1/stats`, which lists the groups of every broker) and the
/// group's description (its coordinator's), each 200 with the group's committed
/// offsets as they were, while the cluster moves the broker's groups; the group
/// is listed again once they moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_answers_while_a_broker_is_down() {
    let Some(bootstrap) = kafka_bootstrap("the_overview_answers_while_a_broker_is_down") else {
        return;
    };
    let _down = BROKER_DOWN.lock().await;
    let s = Server::start_with(&["--backend", "kafka", "--kafka-bootstrap", &bootstrap]);
    let c = client();
    let run = format!("{:08x}", rand::random::<u32>());
    let (topic, group) = (format!("overview-{run}"), format!("overview-group-{run}"));
    create_topic(&c, &s, &topic, 2).await;
    let records = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    sluice_tests::produce_records(&c, &s, &topic, records).await;
    let poll = format!("/v1/groups/{group}/topics/{topic}/records?consumer=a&limit=100");
    let answer = get_json(&c, &s, &poll).await;
    let body = sluice_tests::commit_body("a", &topic, &answer).expect("records to commit");
    let r = c
        .post(s.url(&format!("/v1/groups/{group}/offsets")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(s.url(&format!("/v1/groups/{group}/consumers/a")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let before = get_json(&c, &s, &format!("/v1/groups/{group}")).await;
    // What a description says of the group's progress: each partition's
    // committed offset and lag.
    let offsets = |d: &Value| -> Vec<(Value, Value)> {
        d["topics"][0]["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("no partitions: {d}"))
            .iter()
            .map(|p| (p["committed"].clone(), p["lag"].clone()))
            .collect()
    };
    assert_eq!(offsets(&before).len(), 2, "{before}");

    let wire = sluice_kafka::wire::Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let victim = broker_of(
        &bootstrap,
        &wire
            .find_coordinator(&bootstrap, &group)
            .expect("coordinator"),
    );
    cluster(&["kill", &victim]);
    let mut answers = Vec::new();
    for _ in 0..12 {
        for path in ["/v1/stats".to_string(), format!("/v1/groups/{group}")] {
            let r = c.get(s.url(&path)).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            answers.push((path, status, body));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster(&["restart", &victim]);
    cluster(&["wait"]);
    for (path, status, body) in &answers {
        assert_eq!(
            *status, 200,
            "{path} while broker {victim} was down: {body}"
        );
        if path.starts_with("/v1/groups/") {
            assert_eq!(offsets(body), offsets(&before), "{path}: {body}");
        }
    }
    // The listing leaves out the groups of a coordinator partition while it has
    // no leader (Kafka's ListGroups answers for loaded partitions only); once
    // the group's new coordinator has loaded it, it is listed again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = get_json(&c, &s, "/v1/stats").await;
        let listed = stats["groups"].as_array().unwrap();
        if listed.iter().any(|g| g["group"] == group.as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/v1/stats does not list the group: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Producers that write batches through whichever of the gateways in `bases`
/// answers until `stop`: a refused or failed request goes to the other gateway
/// (it may have been written all the same; the test recounts the topic).
fn keep_producing(
    bases: Arc<std::sync::RwLock<Vec<String>>>,
    topic: &str,
    stop: Arc<AtomicBool>,
    producers: u32,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..producers)
        .map(|p| {
            let (bases, topic, stop) = (bases.clone(), topic.to_string(), stop.clone());
            tokio::spawn(async move {
                let c = client();
                let (mut acked, mut i, mut turn) = (0u64, 0u64, p as usize);
                while !stop.load(Ordering::Acquire) {
                    let records: Vec<Value> = (0..20)
                        .map(|j| {
                            let n = i * 20 + j;
                            json!({"key": format!("k{}", n % 50), "value": {"amount": n % 10 + 1}})
                        })
                        .collect();
                    let base = {
                        let bases = bases.read().unwrap();
                        bases[turn % bases.len()].clone()
                    };
                    let sent = c
                        .post(format!("{base}/v1/topics/{topic}/records"))
                        .timeout(Duration::from_secs(30))
                        .json(&json!({"records": records}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acked += 20,
                        _ => {
                            turn += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acked
            })
        })
        .collect()
}

/// A count+sum table over 6 partitions, and a count grouped by a field of the
/// value (whose rows every partition adds to), while 4 producers write through
/// two gateways that share the folding of their partitions: one gateway is
/// killed with `kill -9` mid-backfill, the other (which took its partitions
/// over) later while live, and a broker is killed and restarted once. At the
/// end every row of both tables, on both gateways, equals a recount of the
/// source topic done here: nothing lost, nothing counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_table_counts_exactly_through_gateway_and_broker_kills() {
    let Some(bootstrap) =
        kafka_bootstrap("a_state_table_counts_exactly_through_gateway_and_broker_kills")
    else {
        return;
    };
    let _down = BROKER_DOWN.lock().await;
    let prefix = format!("kx{:08x}.", rand::random::<u32>());
    let args = shared_kafka_args(&bootstrap, &prefix);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateways = [Server::start_with(&args), Server::start_with(&args)];
    let c = client();
    let topic = "payments";
    create_topic(&c, &gateways[0], topic, 6).await;
    // What the table backfills from.
    for round in 0..40u64 {
        let records: Vec<Value> = (0..1_000u64)
            .map(|j| {
                let n = round * 1_000 + j;
                json!({"key": format!("k{}", n % 50), "value": {"amount": n % 7}})
            })
            .collect();
        sluice_tests::produce_records(&c, &gateways[0], topic, records).await;
    }
    let bases = Arc::new(std::sync::RwLock::new(
        gateways.iter().map(|g| g.base.clone()).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let producers = keep_producing(bases.clone(), topic, stop.clone(), 4);
    for def in [
        json!({"name": "totals", "source": topic, "group_by": "key",
            "aggregates": {"n": {"count": {}}, "total": {"sum": "$.amount"}}}),
        json!({"name": "by_amount", "source": topic, "group_by": "$.amount",
            "aggregates": {"n": {"count": {}}}}),
    ] {
        let r = c
            .post(gateways[0].url("/v1/tables"))
            .json(&def)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    // Mid-backfill, with both gateways folding some of the tables' partitions
    // (the cluster's assignor balances their number): once the one killed has
    // applied something.
    leases_until(&[&gateways[0], &gateways[1]], "shared by both", |h| {
        h.iter().all(|h| !h.is_empty())
            && ["totals", "by_amount"]
                .iter()
                .all(|t| shards_of(&h[0], t) + shards_of(&h[1], t) == 6)
    })
    .await;
    let w = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let t = get_json(&c, &gateways[w], "/v1/tables/totals").await;
        let applied: u64 = t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["applied_offset"].as_u64().unwrap_or(0))
            .sum();
        if applied > 0 {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "nothing applied: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gateways[w].kill();
    let other = 1 - w;
    leases_until(&[&gateways[other]], "taken over", |h| {
        shards_of(&h[0], "totals") == 6 && shards_of(&h[0], "by_amount") == 6
    })
    .await;
    for t in ["totals", "by_amount"] {
        table_until(&c, &gateways[other], t, "became live", |_, t| {
            t["state"] == "live"
        })
        .await;
    }
    gateways[w].restart();
    bases.write().unwrap()[w] = gateways[w].base.clone();
    table_known(&c, &gateways[w], "totals").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Live: the gateway that took over.
    gateways[other].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateways[other].restart();
    bases.write().unwrap()[other] = gateways[other].base.clone();
    table_until(&c, &gateways[w], "totals", "became live", |_, t| {
        t["state"] == "live"
    })
    .await;

    // A broker.
    let (victim, _) = busiest_leader(&format!("{prefix}{topic}"));
    cluster(&["kill", &victim]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster(&["restart", &victim]);
    cluster(&["wait"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    let mut acked = 0;
    for p in producers {
        acked += p.await.unwrap();
    }

    // The recount, from the topic itself.
    let mut expect: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut by_amount: BTreeMap<String, Value> = BTreeMap::new();
    let mut records = 0;
    for p in 0..6u32 {
        for rec in fetch_all(&c, &gateways[0], topic, p).await {
            let e = expect
                .entry(rec["key"].as_str().unwrap().to_string())
                .or_default();
            e.0 += 1;
            let amount = rec["value"]["amount"].as_u64().unwrap();
            e.1 += amount;
            let n = by_amount
                .entry(amount.to_string())
                .or_insert_with(|| json!({"n": 0}));
            n["n"] = json!(n["n"].as_u64().unwrap() + 1);
            records += 1;
        }
    }
    assert!(
        records >= 40_000 + acked,
        "{records} records, {acked} acknowledged live"
    );
    let expect: BTreeMap<String, Value> = expect
        .into_iter()
        .map(|(k, (n, total))| (k, json!({"n": n, "total": total})))
        .collect();
    for s in &gateways {
        let t = table_caught_up(&c, s, "totals").await;
        assert_eq!(t["skipped"], 0, "{t}");
        let rows: BTreeMap<String, Value> = all_rows(&c, s, "totals")
            .await
            .into_iter()
            .map(|(k, r)| (k, json!({"n": r["n"], "total": r["total"]})))
            .collect();
        let wrong: Vec<_> = expect
            .iter()
            .filter(|(k, v)| rows.get(*k) != Some(v))
            .map(|(k, v)| (k, v, rows.get(k)))
            .collect();
        assert!(
            wrong.is_empty() && rows.len() == expect.len(),
            "rows on {} differ from the recount: {wrong:?}",
            s.base
        );
        let t = table_caught_up(&c, s, "by_amount").await;
        assert_eq!(t["rows"], by_amount.len(), "{t}");
        let rows: BTreeMap<String, Value> = all_rows(&c, s, "by_amount")
            .await
            .into_iter()
            .map(|(k, r)| (k, json!({"n": r["n"]})))
            .collect();
        assert_eq!(rows, by_amount, "by_amount on {}", s.base);
    }
    eprintln!(
        "table failover: {records} records ({acked} acknowledged while gateways and node {victim} were killed), \
         the first kill at {} of 40000 applied; every row of both tables on both gateways equals the recount",
        at_kill["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["applied_offset"].as_u64().unwrap_or(0))
            .sum::<u64>()
    );
}
