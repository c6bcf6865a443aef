//! Server-managed consumer groups over plain HTTP, against the real binary.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic};

async fn poll(c: &reqwest::Client, s: &Server, group: &str, topic: &str, query: &str) -> Value {
    let r = c
        .get(s.url(&format!(
            "/v1/groups/{group}/topics/{topic}/records?{query}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "poll {group}/{topic}?{query}");
    r.json().await.unwrap()
}

async fn produce(c: &reqwest::Client, s: &Server, topic: &str, n: usize) {
    let records: Vec<Value> = (0..n).map(|i| json!({"value": i})).collect();
    let r = c
        .post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn assignment(v: &Value) -> Vec<u64> {
    v["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn three_consumers_split_six_partitions() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 6).await;
    for id in ["a", "b", "c"] {
        poll(&c, &s, "g", "t", &format!("consumer={id}")).await;
    }
    // Partitions move once their owner has been told it lost them: a second round
    // of polls settles the group.
    let mut all = Vec::new();
    let mut generations = BTreeSet::new();
    for id in ["a", "b", "c"] {
        let v = poll(&c, &s, "g", "t", &format!("consumer={id}")).await;
        let a = assignment(&v);
        assert_eq!(a.len(), 2, "{id}: {a:?}");
        all.extend(a);
        generations.insert(v["generation"].as_u64().unwrap());
    }
    assert_eq!(
        generations.len(),
        3,
        "each consumer has a generation of its own"
    );
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    let d: Value = c
        .get(s.url("/v1/groups/g"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["members"].as_array().unwrap().len(), 3);
    assert_eq!(d["topics"][0]["partitions"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn partitions_move_on_session_expiry_and_at_once_on_leave() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 4).await;
    let q = |id: &str| format!("consumer={id}&session_timeout_ms=1000");
    poll(&c, &s, "g", "t", &q("a")).await;
    poll(&c, &s, "g", "t", &q("b")).await;
    assert_eq!(assignment(&poll(&c, &s, "g", "t", &q("a")).await).len(), 2);
    // b stops polling; within a few session timeouts a owns everything.
    let mut owned = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        owned = assignment(&poll(&c, &s, "g", "t", &q("a")).await).len();
        if owned == 4 {
            break;
        }
    }
    assert_eq!(owned, 4, "b's partitions never moved to a");

    // A leave moves them at once, without waiting for a timeout.
    let long = "session_timeout_ms=60000";
    poll(&c, &s, "g", "t", &format!("consumer=b&{long}")).await;
    let before = poll(&c, &s, "g", "t", &format!("consumer=a&{long}")).await;
    assert_eq!(assignment(&before).len(), 2);
    let r = c
        .delete(s.url("/v1/groups/g/consumers/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = poll(&c, &s, "g", "t", &format!("consumer=a&{long}")).await;
    assert_eq!(assignment(&after), vec![0, 1, 2, 3]);
    assert!(after["generation"].as_u64() > before["generation"].as_u64());
    let r = c
        .delete(s.url("/v1/groups/g/consumers/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn commits_are_fenced_durable_and_lag_is_exact() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    produce(&c, &s, "t", 10).await; // 5 per partition, round-robin
    let v = poll(&c, &s, "g", "t", "consumer=a&limit=100").await;
    assert_eq!(v["records"].as_array().unwrap().len(), 10);
    let generation = v["generation"].as_u64().unwrap();
    // Polling again returns nothing new: the position moved on.
    let again = poll(&c, &s, "g", "t", "consumer=a").await;
    assert_eq!(again["records"], json!([]));
    let commit = |generation: u64, offsets: Value| {
        c.post(s.url("/v1/groups/g/offsets"))
            .json(&json!({"consumer": "a", "generation": generation, "offsets": offsets}))
    };
    let r = commit(generation, json!([{"topic": "t", "partition": 0, "offset": 3}, {"topic": "t", "partition": 1, "offset": 5}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // Beyond the end.
    let r = commit(
        generation,
        json!([{"topic": "t", "partition": 0, "offset": 6}]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "offset_out_of_range"
    );
    // A stale generation, and a partition not owned, are refused.
    poll(&c, &s, "g", "t", "consumer=b").await;
    let r = commit(
        generation,
        json!([{"topic": "t", "partition": 0, "offset": 4}]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "stale_generation");
    let v = poll(&c, &s, "g", "t", "consumer=a").await;
    let generation = v["generation"].as_u64().unwrap();
    let mine = assignment(&v)[0];
    let theirs = 1 - mine;
    let r = commit(
        generation,
        json!([{"topic": "t", "partition": theirs, "offset": 1}]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 409);

    let lag = |d: &Value| -> Vec<(Option<u64>, u64)> {
        d["topics"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["committed"].as_u64(), p["lag"].as_u64().unwrap()))
            .collect()
    };
    let d: Value = c
        .get(s.url("/v1/groups/g"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lag(&d), vec![(Some(3), 2), (Some(5), 0)]);
    s.restart();
    let d: Value = c
        .get(s.url("/v1/groups/g"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        lag(&d),
        vec![(Some(3), 2), (Some(5), 0)],
        "committed offsets survive kill -9"
    );
    assert_eq!(d["members"], json!([]), "membership does not");
    // A new member resumes from the committed offsets: the 2 uncommitted come again.
    let v = poll(&c, &s, "g", "t", "consumer=z&limit=100").await;
    let offsets: Vec<(u64, u64)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, vec![(0, 3), (0, 4)]);
}

#[tokio::test]
async fn auto_commit_reset_and_delete() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    produce(&c, &s, "t", 5).await;
    // A `latest` group starts at the end and skips what was there.
    let v = poll(&c, &s, "late", "t", "consumer=x&reset=latest").await;
    assert_eq!(v["records"], json!([]));
    produce(&c, &s, "t", 1).await;
    let v = poll(&c, &s, "late", "t", "consumer=x&reset=latest").await;
    assert_eq!(v["records"][0]["offset"], 5);

    let v = poll(&c, &s, "g", "t", "consumer=a&limit=2&auto_commit=true").await;
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
    poll(&c, &s, "g", "t", "consumer=a&limit=2&auto_commit=true").await;
    let d: Value = c
        .get(s.url("/v1/groups/g"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d["topics"][0]["partitions"][0]["committed"], 2,
        "the first poll's records were committed by the second"
    );

    // Reset is refused while members are live: it would move offsets under them.
    let reset = |to: Value| {
        c.post(s.url("/v1/groups/g/offsets/reset"))
            .json(&json!({"topic": "t", "to": to}))
    };
    let r = reset(json!("earliest")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "group_active");
    let forced = c
        .post(s.url("/v1/groups/g/offsets/reset"))
        .json(&json!({"topic": "t", "to": "earliest", "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 400, "there is no forcing it");
    // Once the member has left, it goes through, and the next poll reads from there.
    let leave = || c.delete(s.url("/v1/groups/g/consumers/a"));
    assert_eq!(leave().send().await.unwrap().status(), 204);
    let r: Value = reset(json!("earliest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["offsets"],
        json!([{"topic": "t", "partition": 0, "offset": 0}])
    );
    let v = poll(&c, &s, "g", "t", "consumer=a&limit=1").await;
    assert_eq!(
        v["records"][0]["offset"], 0,
        "members read from the reset offset"
    );
    assert_eq!(leave().send().await.unwrap().status(), 204);
    let r: Value = reset(json!({"offset": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 3);
    let r: Value = reset(json!({"offset": 999}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 6, "clamped to the end");
    let r: Value = reset(json!("latest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 6);
    let r: Value = reset(json!({"timestamp": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 0);
    let r: Value = reset(json!({"timestamp": 9_000_000_000_000u64}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["offsets"][0]["offset"], 6);
    // A member again, for deleting a group with live members below.
    poll(&c, &s, "g", "t", "consumer=a&limit=1").await;

    let list: Value = c
        .get(s.url("/v1/groups"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["g", "late"]);
    assert_eq!(
        c.delete(s.url("/v1/groups/g"))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        c.delete(s.url("/v1/groups/g?force=true"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(s.url("/v1/groups/g")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.delete(s.url("/v1/groups/g"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn group_errors() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    let code = |r: reqwest::Response| async move {
        let st = r.status().as_u16();
        (
            st,
            r.json::<Value>().await.unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let get = |p: &str| c.get(s.url(p)).send();
    assert_eq!(
        code(get("/v1/groups/nope").await.unwrap()).await,
        (404, "group_not_found".into())
    );
    assert_eq!(
        code(
            get("/v1/groups/g/topics/t/records?consumer=bad%20id")
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_consumer".into())
    );
    assert_eq!(
        code(get("/v1/groups/g/topics/t/records").await.unwrap()).await,
        (400, "invalid_query".into())
    );
    assert_eq!(
        code(
            get("/v1/groups/g/topics/t/records?consumer=a&session_timeout_ms=5")
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_query".into())
    );
    assert_eq!(
        code(
            get("/v1/groups/g/topics/nope/records?consumer=a")
                .await
                .unwrap()
        )
        .await,
        (404, "topic_not_found".into())
    );
    assert_eq!(
        code(
            get("/v1/groups/g/topics/t/records?consumer=a&reset=middle")
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_query".into())
    );
    let commit = |body: Value| c.post(s.url("/v1/groups/g/offsets")).json(&body).send();
    assert_eq!(code(commit(json!({"consumer": "a", "generation": 1, "offsets": [{"topic": "t", "partition": 0, "offset": 0}]})).await.unwrap()).await, (409, "stale_generation".into()));
    assert_eq!(code(commit(json!({"consumer": "a", "generation": 1, "offsets": [{"topic": "t", "partition": 3, "offset": 0}]})).await.unwrap()).await, (404, "partition_not_found".into()));
    assert_eq!(code(commit(json!({"consumer": "a", "generation": 1, "offsets": [{"topic": "x", "partition": 0, "offset": 0}]})).await.unwrap()).await, (404, "topic_not_found".into()));
    assert_eq!(
        code(
            commit(json!({"consumer": "a", "offsets": []}))
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_body".into())
    );
    assert_eq!(
        code(
            commit(json!({"consumer": "a", "generation": -1, "offsets": []}))
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_body".into())
    );
    assert_eq!(
        code(
            c.post(s.url("/v1/groups/g/offsets/reset"))
                .json(&json!({"topic": "t", "to": "sideways"}))
                .send()
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_body".into())
    );
    assert_eq!(
        code(
            c.post(s.url("/v1/groups/g/offsets/reset"))
                .json(&json!({"topic": "x", "to": "earliest"}))
                .send()
                .await
                .unwrap()
        )
        .await,
        (404, "topic_not_found".into())
    );
}

#[tokio::test]
async fn long_poll_wakes_on_produce() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 3).await;
    poll(&c, &s, "g", "t", "consumer=a").await;
    let (c2, url) = (
        c.clone(),
        s.url("/v1/groups/g/topics/t/records?consumer=a&wait_ms=30000"),
    );
    let waiting = tokio::spawn(async move {
        c2.get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&c, &s, "t", 1).await;
    let v = waiting.await.unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
}

/// Consumers join, leave and die while producers write; each consumer commits after
/// processing. In the end every produced record was processed, and within a
/// generation each member saw each partition's offsets in increasing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_loses_nothing() {
    let s = Server::start_with(&["--rate-limit-requests", "0"]);
    let c = client();
    create_topic(&c, &s, "churn", 6).await;
    sluice_tests::churn(c, &s.base, "churn", "g").await;
}

/// A generation is a fencing token that never repeats for a group: a commit made
/// with a token from before the group emptied, or from before a restart, is
/// refused even when the numbers of the group's later generations would line up.
#[tokio::test]
async fn tokens_from_before_the_group_emptied_or_a_restart_are_refused() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    produce(&c, &s, "t", 40).await;
    let commit = |who: &str, generation: u64, offset: u64| {
        c.post(s.url("/v1/groups/g/offsets")).json(&json!({
            "consumer": who,
            "generation": generation,
            "offsets": [{"topic": "t", "partition": 0, "offset": offset}]
        }))
    };
    let leave = |who: &str| c.delete(s.url(&format!("/v1/groups/g/consumers/{who}")));
    let short = "session_timeout_ms=1000";
    // A joins, X joins and leaves; A reads offsets 0..=4 without committing.
    poll(&c, &s, "g", "t", &format!("consumer=a&{short}&limit=1")).await;
    poll(&c, &s, "g", "t", &format!("consumer=x&{short}")).await;
    assert_eq!(leave("x").send().await.unwrap().status(), 204);
    let a = poll(&c, &s, "g", "t", &format!("consumer=a&{short}&limit=4")).await;
    assert_eq!(a["records"].as_array().unwrap().len(), 4);
    let stale = a["generation"].as_u64().unwrap();

    // A's session runs out and the group is empty; B takes over and commits 30.
    let mut b = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        b = poll(&c, &s, "g", "t", "consumer=b&limit=1").await;
        if assignment(&b) == vec![0] {
            break;
        }
    }
    assert_eq!(assignment(&b), vec![0], "a's session never ran out");
    let r = commit("b", b["generation"].as_u64().unwrap(), 30)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // A comes back, B leaves: A owns partition 0 again, as it did with `stale`.
    poll(&c, &s, "g", "t", "consumer=a&limit=1").await;
    assert_eq!(leave("b").send().await.unwrap().status(), 204);
    let r = commit("a", stale, 5).send().await.unwrap();
    assert_eq!(r.status(), 409, "a token from before the group emptied");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "stale_generation");
    let committed = |d: Value| d["topics"][0]["partitions"][0]["committed"].clone();
    let d = sluice_tests::get_json(&c, &s, "/v1/groups/g").await;
    assert_eq!(committed(d), json!(30));

    // Across a kill -9: A owns partition 0 before and after, and its token from
    // before the restart is refused after it.
    let a = poll(&c, &s, "g", "t", "consumer=a&limit=1").await;
    assert_eq!(assignment(&a), vec![0]);
    let before = a["generation"].as_u64().unwrap();
    s.restart();
    let commit = |who: &str, generation: u64, offset: u64| {
        c.post(s.url("/v1/groups/g/offsets")).json(&json!({
            "consumer": who,
            "generation": generation,
            "offsets": [{"topic": "t", "partition": 0, "offset": offset}]
        }))
    };
    let mut tokens = vec![before];
    for who in ["a", "y"] {
        tokens.push(
            poll(&c, &s, "g", "t", &format!("consumer={who}")).await["generation"]
                .as_u64()
                .unwrap(),
        );
    }
    let r = c
        .delete(s.url("/v1/groups/g/consumers/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let a = poll(&c, &s, "g", "t", "consumer=a").await;
    assert_eq!(assignment(&a), vec![0]);
    tokens.push(a["generation"].as_u64().unwrap());
    assert!(
        tokens[1..].iter().all(|t| *t > before),
        "tokens after the restart are all new: {tokens:?}"
    );
    for old in [stale, before] {
        let r = commit("a", old, 6).send().await.unwrap();
        assert_eq!(r.status(), 409, "token {old} from before the restart");
    }
    let d = sluice_tests::get_json(&c, &s, "/v1/groups/g").await;
    assert_eq!(committed(d), json!(30));
}

/// The session timeout belongs to the group: the poll that makes the group sets
/// it, every answer carries the value in effect, and a later poll cannot change it
/// for the others.
#[tokio::test]
async fn the_session_timeout_belongs_to_the_group() {
    let s = Server::start_with(&["--group-session-timeout-ms", "20000"]);
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    let a = poll(&c, &s, "g", "t", "consumer=a&session_timeout_ms=5000").await;
    assert_eq!(a["session_timeout_ms"], 5000);
    let b = poll(&c, &s, "g", "t", "consumer=b&session_timeout_ms=60000").await;
    assert_eq!(
        b["session_timeout_ms"], 5000,
        "a later poll gets the value in effect"
    );
    let d = sluice_tests::get_json(&c, &s, "/v1/groups/g").await;
    for m in d["members"].as_array().unwrap() {
        assert_eq!(m["session_timeout_ms"], 5000, "{m}");
    }
    // A group made without a value takes the server's default.
    let other = poll(&c, &s, "h", "t", "consumer=a").await;
    assert_eq!(other["session_timeout_ms"], 20000);
    // Out of range is still refused.
    let r = c
        .get(s.url("/v1/groups/h/topics/t/records?consumer=a&session_timeout_ms=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Revoke before assign: a partition moves to a new member only once its owner's
/// poll has been answered without it; until then the newcomer waits, and no
/// partition is ever in two members' assignments.
#[tokio::test]
async fn a_partition_moves_only_after_its_owner_is_told() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 4).await;
    produce(&c, &s, "t", 40).await;
    let a = poll(&c, &s, "g", "t", "consumer=a&limit=1").await;
    assert_eq!(assignment(&a), vec![0, 1, 2, 3]);
    let b = poll(&c, &s, "g", "t", "consumer=b").await;
    assert_eq!(assignment(&b), Vec::<u64>::new(), "a has not been told yet");
    assert_eq!(b["records"], json!([]));
    let a = poll(&c, &s, "g", "t", "consumer=a&limit=1").await;
    let kept = assignment(&a);
    assert_eq!(kept.len(), 2);
    let b = poll(&c, &s, "g", "t", "consumer=b&limit=100").await;
    let moved = assignment(&b);
    assert_eq!(moved.len(), 2);
    assert!(
        moved.iter().all(|p| !kept.contains(p)),
        "{kept:?} {moved:?}"
    );
    // b reads its new partitions from the committed offsets.
    assert!(!b["records"].as_array().unwrap().is_empty());
    // a, told, can no longer commit what it gave up.
    let commit = json!({"consumer": "a", "generation": a["generation"], "offsets": [{"topic": "t", "partition": moved[0], "offset": 1}]});
    let r = c
        .post(s.url("/v1/groups/g/offsets"))
        .json(&commit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}
