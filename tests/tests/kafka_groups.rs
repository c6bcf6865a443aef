//! Consumer groups over Kafka: two real gateways (`--backend kafka`) behind a
//! round-robin proxy, against the three-broker test cluster, so every request of
//! a consumer may reach the other instance than its last. The group lives in
//! Kafka's coordinator (KIP-848); neither gateway owns a member.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::{RoundRobin, Server, commit_body, kafka_bootstrap, one_shot_client};

/// Two gateways over the test cluster and a round-robin proxy in front of them,
/// or `None` when `SLUICE_TEST_SKIP` names kafka.
fn gateways(test: &str) -> Option<(Server, Server, RoundRobin)> {
    let bootstrap = kafka_bootstrap(test)?;
    let args = ["--backend", "kafka", "--kafka-bootstrap", &bootstrap];
    let (a, b) = (Server::start_with(&args), Server::start_with(&args));
    let proxy = RoundRobin::start(&[&a.base, &b.base]);
    Some((a, b, proxy))
}

/// Creates `topic` through the proxy; both gateways know it at once (the other
/// finds it in the cluster's catalog at the first request naming it).
async fn create(
    c: &reqwest::Client,
    p: &RoundRobin,
    gateways: [&Server; 2],
    topic: &str,
    partitions: u32,
) {
    let (status, body) = send(
        c.post(p.url("/v1/topics"))
            .json(&json!({"name": topic, "partitions": partitions})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for g in gateways {
        let (status, body) = send(c.get(g.url(&format!("/v1/topics/{topic}")))).await;
        assert_eq!(status, 200, "{} does not know {topic}: {body}", g.base);
    }
}

/// Produces `n` keyed records (keys `k0`, `k1`, ...) in one request to `url`.
async fn produce(c: &reqwest::Client, url: &str, n: u32) {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"key": format!("k{i}"), "value": {"i": i}}))
        .collect();
    let (status, body) = send(c.post(url).json(&json!({ "records": records }))).await;
    assert_eq!(status, 200, "{body}");
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One poll of `consumer`; the answer must be 200.
async fn poll(c: &reqwest::Client, p: &RoundRobin, group: &str, topic: &str, query: &str) -> Value {
    let url = p.url(&format!(
        "/v1/groups/{group}/topics/{topic}/records?{query}"
    ));
    let (status, body) = send(c.get(url)).await;
    assert_eq!(status, 200, "poll {query}: {body}");
    body
}

/// The (partition, offset) of each record a poll `answer` of `consumer`
/// returned, each checked to be of a partition the answer assigns it.
fn owned_records(consumer: &str, answer: &Value) -> Vec<(u64, u64)> {
    let owned = assignment(answer);
    let mut out = Vec::new();
    for r in answer["records"].as_array().unwrap() {
        let (part, offset) = (
            r["partition"].as_u64().unwrap(),
            r["offset"].as_u64().unwrap(),
        );
        assert!(
            owned.contains(&part),
            "{consumer} read partition {part} it does not own"
        );
        out.push((part, offset));
    }
    out
}

fn assignment(answer: &Value) -> Vec<u64> {
    answer["assignment"]
        .as_array()
        .expect("assignment")
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

/// Polls `consumers` (on a topic with nothing new to read) until each has
/// partitions and together they hold all `partitions`, none twice; answers
/// each one's generation and partitions.
async fn settle(
    c: &reqwest::Client,
    p: &RoundRobin,
    group: &str,
    topic: &str,
    consumers: &[&str],
    partitions: u64,
) -> BTreeMap<String, (u64, Vec<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen = BTreeMap::new();
        for consumer in consumers {
            let answer = poll(c, p, group, topic, &format!("consumer={consumer}&limit=1")).await;
            assert!(
                answer["records"].as_array().unwrap().is_empty(),
                "settling reads nothing: {answer}"
            );
            let generation = answer["generation"].as_u64().unwrap();
            seen.insert(consumer.to_string(), (generation, assignment(&answer)));
        }
        let all: Vec<u64> = seen.values().flat_map(|(_, a)| a.clone()).collect();
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        let each = seen.values().all(|(_, a)| !a.is_empty());
        if each && all.len() == distinct.len() && distinct == (0..partitions).collect() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "assignments never settled: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn commit(c: &reqwest::Client, p: &RoundRobin, group: &str, body: Value) -> (u16, Value) {
    send(
        c.post(p.url(&format!("/v1/groups/{group}/offsets")))
            .json(&body),
    )
    .await
}

/// Three consumers polling through alternating gateways share a 6-partition
/// topic (disjoint, covering); they read every record once and commit; a commit
/// at another epoch is refused; a leave moves partitions at the others' next
/// heartbeats, a consumer that stops polling loses them after the session
/// timeout; reset and delete are refused while members live and work after.
#[tokio::test]
async fn groups_over_kafka_any_gateway_serves_any_member() {
    let Some((a, b, p)) = gateways("groups_over_kafka_any_gateway_serves_any_member") else {
        return;
    };
    let c = one_shot_client();
    let (topic, group) = (unique("orders"), unique("billing"));
    create(&c, &p, [&a, &b], &topic, 6).await;
    // The first poll sets the group's session timeout (within the test
    // brokers' bounds).
    poll(
        &c,
        &p,
        &group,
        &topic,
        "consumer=c1&session_timeout_ms=4000",
    )
    .await;
    let settled = settle(&c, &p, &group, &topic, &["c1", "c2", "c3"], 6).await;

    produce(&c, &p.url(&format!("/v1/topics/{topic}/records")), 120).await;

    // Every record is read once, by the consumer that owns its partition.
    let mut read: BTreeSet<(u64, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.len() < 120 {
        assert!(Instant::now() < deadline, "read {} of 120", read.len());
        for consumer in ["c1", "c2", "c3"] {
            let answer = poll(
                &c,
                &p,
                &group,
                &topic,
                &format!("consumer={consumer}&limit=25"),
            )
            .await;
            for (part, offset) in owned_records(consumer, &answer) {
                assert!(read.insert((part, offset)), "({part}, {offset}) read twice");
            }
            let Some(body) = commit_body(consumer, &topic, &answer) else {
                continue;
            };
            let (status, body) = commit(&c, &p, &group, body).await;
            assert_eq!(status, 204, "commit: {body}");
        }
    }

    // A commit at an epoch that is not the member's is refused.
    let (generation, owned) = settled["c1"].clone();
    let (status, body) = commit(
        &c,
        &p,
        &group,
        json!({"consumer": "c1", "generation": generation + 7,
               "offsets": [{"topic": topic, "partition": owned[0], "offset": 0}]}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("stale_generation")),
        "{body}"
    );

    // The group as the cluster has it: three members, everything committed.
    let (status, described) = send(c.get(p.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(
        described["members"].as_array().unwrap().len(),
        3,
        "{described}"
    );
    assert_eq!(described["topics"][0]["lag"], 0, "{described}");
    let committed: u64 = described["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 120, "{described}");

    // A leave: the other two take its partitions at their next heartbeats.
    let (status, body) = send(c.delete(p.url(&format!("/v1/groups/{group}/consumers/c3")))).await;
    assert_eq!(status, 204, "{body}");
    settle(&c, &p, &group, &topic, &["c1", "c2"], 6).await;

    // Reset is refused while the group has members on the topic.
    let reset = json!({"topic": topic, "to": "earliest"});
    let (status, body) = send(
        c.post(p.url(&format!("/v1/groups/{group}/offsets/reset")))
            .json(&reset),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("group_active")),
        "{body}"
    );

    // c2 stops polling: after the session timeout c1 owns everything.
    settle(&c, &p, &group, &topic, &["c1"], 6).await;

    let (status, body) = send(c.delete(p.url(&format!("/v1/groups/{group}/consumers/c1")))).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = send(
        c.post(p.url(&format!("/v1/groups/{group}/offsets/reset")))
            .json(&reset),
    )
    .await;
    assert_eq!(status, 200, "reset of an empty group: {body}");
    assert!(
        body["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["offset"] == 0),
        "{body}"
    );
    let (status, described) = send(c.get(p.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["topics"][0]["lag"], 120, "{described}");
    let (status, listed) = send(c.get(p.url("/v1/groups"))).await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == group.as_str()),
        "{listed}"
    );
    let (status, body) = send(c.delete(p.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = send(c.get(p.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("group_not_found")),
        "{body}"
    );
}

/// `kill -9` of one of the two gateways while three consumers poll and commit
/// through the proxy and a producer writes: the consumers carry on through the
/// other instance (a request cut off by the kill is sent again); no partition is
/// in two consumers' assignments within a round of their polls (each round polls
/// them one after the other, and a partition moves only after its last owner's
/// next heartbeat); every produced record is read, and the committed offsets end
/// at every partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_leaves_the_group_whole() {
    let Some((mut a, b, p)) = gateways("a_gateway_killed_mid_run_leaves_the_group_whole") else {
        return;
    };
    let c = one_shot_client();
    let (topic, group) = (unique("events"), unique("workers"));
    create(&c, &p, [&a, &b], &topic, 6).await;
    let consumers = ["w1", "w2", "w3"];
    settle(&c, &p, &group, &topic, &consumers, 6).await;

    let mut produced: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut read: BTreeSet<(u64, u64)> = BTreeSet::new();
    let url = |path: String| p.url(&path);
    // Retries a request the kill cut off (on another connection, so through
    // the gateway that lives).
    async fn again(req: impl Fn() -> reqwest::RequestBuilder) -> (u16, Value) {
        for _ in 0..20 {
            if let Ok(r) = req().send().await {
                let status = r.status().as_u16();
                if let Ok(text) = r.text().await {
                    return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no gateway answered 20 times in a row");
    }
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0.. {
        assert!(
            Instant::now() < deadline,
            "read {} of {}",
            read.len(),
            produced.len()
        );
        if round < 30 {
            let records: Vec<Value> = (0..12)
                .map(|i| json!({"key": format!("r{round}-{i}"), "value": i}))
                .collect();
            let body = json!({ "records": records });
            let (status, answer) = again(|| {
                c.post(url(format!("/v1/topics/{topic}/records")))
                    .json(&body)
            })
            .await;
            assert_eq!(status, 200, "{answer}");
            for o in answer["offsets"].as_array().unwrap() {
                produced.insert((
                    o["partition"].as_u64().unwrap(),
                    o["offset"].as_u64().unwrap(),
                ));
            }
        }
        if round == 10 && !killed {
            a.kill();
            killed = true;
        }
        let mut owners: BTreeMap<u64, &str> = BTreeMap::new();
        for consumer in consumers {
            let (status, answer) = again(|| {
                c.get(url(format!(
                    "/v1/groups/{group}/topics/{topic}/records?consumer={consumer}&limit=40"
                )))
            })
            .await;
            assert_eq!(status, 200, "{answer}");
            let owned = assignment(&answer);
            for part in &owned {
                if let Some(other) = owners.insert(*part, consumer) {
                    panic!("partition {part} held by {other} and {consumer} in round {round}");
                }
            }
            read.extend(owned_records(consumer, &answer));
            let Some(body) = commit_body(consumer, &topic, &answer) else {
                continue;
            };
            let (status, answer) = again(|| {
                c.post(url(format!("/v1/groups/{group}/offsets")))
                    .json(&body)
            })
            .await;
            // A rebalance between the poll and its commit refuses the commit;
            // the records come again.
            assert!(status == 204 || status == 409, "commit: {status} {answer}");
        }
        if round >= 30 && read.is_superset(&produced) {
            break;
        }
    }
    assert!(killed);
    // The committed offsets end at every partition's end once each consumer
    // commits what it was last handed (a commit refused by a rebalance above
    // left some behind).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, described) = send(c.get(b.url(&format!("/v1/groups/{group}")))).await;
        assert_eq!(status, 200, "{described}");
        if described["topics"][0]["lag"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag never reached 0: {described}"
        );
        for consumer in consumers {
            let query = format!("consumer={consumer}&limit=1000&auto_commit=true");
            poll(&c, &p, &group, &topic, &query).await;
        }
    }
}

/// A Kafka consumer (the console consumer of the test cluster's own jars, with
/// `group.protocol=consumer`) and a Sluice consumer in one group share the
/// topic's partitions: each holds some, none both, and together they read every
/// record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_and_a_sluice_consumer_share_a_group() {
    let Some(bootstrap) = kafka_bootstrap("a_kafka_consumer_and_a_sluice_consumer_share_a_group")
    else {
        return;
    };
    let s = Server::start_with(&["--backend", "kafka", "--kafka-bootstrap", &bootstrap]);
    let c = one_shot_client();
    let (topic, group) = (unique("shared"), unique("mixed"));
    let (status, body) = send(
        c.post(s.url("/v1/topics"))
            .json(&json!({"name": topic, "partitions": 4})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let url = |query: &str| {
        s.url(&format!(
            "/v1/groups/{group}/topics/{topic}/records?{query}"
        ))
    };
    let (status, body) = send(c.get(url("consumer=s1"))).await;
    assert_eq!(status, 200, "{body}");

    let mut java =
        std::process::Command::new(sluice_tests::workspace_root().join("tests/kafka/cluster"))
            .args([
                "run",
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                "--bootstrap-server",
                &bootstrap,
                "--topic",
                &topic,
                "--group",
                &group,
                "--consumer-property",
                "group.protocol=consumer",
                "--consumer-property",
                "auto.offset.reset=earliest",
                "--property",
                "print.partition=true",
                "--property",
                "print.offset=true",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run the console consumer (tests/kafka/cluster run)");
    let printed: std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Default::default();
    let stdout = java.stdout.take().expect("stdout");
    let sink = printed.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // "Partition:2\tOffset:5\t{...}"
            let mut fields = line.split('\t');
            let p = fields
                .next()
                .and_then(|f| f.strip_prefix("Partition:")?.parse().ok());
            let o = fields
                .next()
                .and_then(|f| f.strip_prefix("Offset:")?.parse().ok());
            if let (Some(p), Some(o)) = (p, o) {
                sink.lock().unwrap().push((p, o));
            }
        }
    });

    // The Kafka consumer joins: the Sluice one gives partitions up to it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mine = loop {
        let (status, answer) = send(c.get(url("consumer=s1&limit=1"))).await;
        assert_eq!(status, 200, "{answer}");
        let (_, described) = send(c.get(s.url(&format!("/v1/groups/{group}")))).await;
        let members = described["members"].as_array().map_or(0, Vec::len);
        let mine = assignment(&answer);
        if members == 2 && !mine.is_empty() && mine.len() < 4 {
            break mine;
        }
        assert!(
            Instant::now() < deadline,
            "never shared: {answer} {described}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    produce(&c, &s.url(&format!("/v1/topics/{topic}/records")), 40).await;
    let mut ours: BTreeSet<(u64, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = send(c.get(url("consumer=s1&limit=100&auto_commit=true"))).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(assignment(&answer), mine, "the assignment held still");
        for r in answer["records"].as_array().unwrap() {
            let (p, o) = (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            );
            assert!(mine.contains(&p), "read partition {p} it does not own");
            assert!(ours.insert((p, o)), "({p}, {o}) read twice");
        }
        let theirs: BTreeSet<(u64, u64)> = printed.lock().unwrap().iter().copied().collect();
        assert!(
            theirs.iter().all(|(p, _)| !mine.contains(p)),
            "the Kafka consumer read a partition of the Sluice one: {theirs:?} {mine:?}"
        );
        if ours.len() + theirs.len() == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read {} and {} of 40",
            ours.len(),
            theirs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = java.kill();
    let _ = java.wait();
}

/// The churn run of the embedded groups suite (consumers joining, leaving and
/// dying while producers write) through the two gateways: every produced record
/// is processed, in order within a member's generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_through_two_gateways_loses_nothing() {
    let Some((a, b, p)) = gateways("churn_through_two_gateways_loses_nothing") else {
        return;
    };
    let c = one_shot_client();
    let (topic, group) = (unique("churn"), unique("churners"));
    create(&c, &p, [&a, &b], &topic, 6).await;
    sluice_tests::churn(c, &p.base, &topic, &group).await;
}
