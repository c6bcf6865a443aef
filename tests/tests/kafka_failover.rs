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
use sluice_tests::{Server, client, fetch_all, kafka_bootstrap, workspace_root};

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
    let leaders = cluster(&["leaders", &topic]);
    let mut led: HashMap<String, usize> = HashMap::new();
    for line in leaders.lines() {
        if let Some((_, leader)) = line.split_once(' ') {
            *led.entry(leader.to_string()).or_default() += 1;
        }
    }
    let (victim, count) = led
        .iter()
        .max_by_key(|(n, c)| (**c, n.to_string()))
        .map(|(n, c)| (n.clone(), *c))
        .expect("the topic has leaders");
    assert!(count >= 1, "leaders: {leaders}");
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
    let records: Vec<Value> = (0..80)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    let r = c
        .post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

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
    let port: u32 = coordinator.rsplit(':').next().unwrap().parse().unwrap();
    let base: u32 = bootstrap
        .split(',')
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let victim = (port - base + 1).to_string();
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
