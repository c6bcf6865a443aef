//! Leader failover under the Kafka engine: producers keep writing through the
//! gateway while the broker that leads the most partitions is killed with
//! `kill -9` and started again. A test binary of its own, so no other test shares
//! the cluster while a broker is down.

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
