//! Sinks end to end: the real binary pushing a topic to real HTTP receivers in
//! this process; signatures checked by the Standard Webhooks reference library
//! (Python, from PyPI).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sluice_tests::receiver::{Behavior, Received, Receiver};
use sluice_tests::{Server, client, create_topic, fetch_all, get_json, produce_records};

const WAIT: Duration = Duration::from_secs(60);

fn server() -> Server {
    Server::start_with(&["--sink-allow-net", "127.0.0.0/8"])
}

async fn make_sink(c: &reqwest::Client, s: &Server, def: Value) -> Value {
    let r = c.post(s.url("/v1/sinks")).json(&def).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// POSTs to `path` with no body; answers the JSON of a 200.
async fn post(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    let r = c.post(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "POST {path}");
    r.json().await.unwrap()
}

async fn sink_until(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = get_json(c, s, &format!("/v1/sinks/{name}")).await;
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "sink {name} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the reference library over requests: answers, per request, whether
/// each secret verifies it.
fn verify(secrets: &[&str], got: &[Received], tamper: bool) -> Vec<Vec<bool>> {
    let cases: Vec<Value> = got
        .iter()
        .map(|r| {
            let mut body = r.body.to_vec();
            if tamper {
                body.push(b' ');
            }
            json!({
                "id": r.webhook_id, "ts": r.timestamp, "sig": r.signature,
                "body": base64::engine::general_purpose::STANDARD.encode(&body),
            })
        })
        .collect();
    let script = r#"
import base64, json, sys, time
from standardwebhooks.webhooks import Webhook
secrets, cases = json.load(sys.stdin)
out = []
for c in cases:
    row = []
    for s in secrets:
        try:
            Webhook(s).verify(base64.b64decode(c["body"]), {
                "webhook-id": c["id"], "webhook-timestamp": c["ts"], "webhook-signature": c["sig"]})
            row.append(True)
        except Exception:
            row.append(False)
    out.append(row)
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (install: apt-get install python3)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!([secrets, cases]).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Standard Webhooks library failed (install: pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_verify_with_the_reference_library_also_after_a_rotation() {
    let s = server();
    let c = client();
    let rx = Receiver::start().await;
    create_topic(&c, &s, "signed", 2).await;
    let made = make_sink(
        &c,
        &s,
        json!({"name": "signed", "source": {"topic": "signed"}, "url": rx.url, "start": "earliest"}),
    )
    .await;
    let first = made["secret"].as_str().unwrap().to_string();
    assert!(first.starts_with("whsec_"));
    // Never shown again.
    let info = get_json(&c, &s, "/v1/sinks/signed").await;
    assert!(info.get("secret").is_none(), "{info}");
    assert!(!info.to_string().contains(&first[6..]));

    let records: Vec<Value> = (0..6)
        .map(|i| json!({"key": format!("k{i}"), "value": {"i": i}}))
        .collect();
    produce_records(&c, &s, "signed", records).await;
    let got = rx.until(WAIT, |g| g.len() >= 6).await;
    assert!(verify(&[&first], &got, false).iter().all(|r| r == &[true]));
    assert!(
        verify(&[&first], &got, true).iter().all(|r| r == &[false]),
        "a tampered body must not verify"
    );
    for r in &got {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], r.webhook_id.as_str());
        assert_eq!(body["topic"], "signed");
        assert_eq!(body["offset"], r.offset);
        assert_eq!(r.records, 1);
        assert_eq!(r.attempt, 1);
    }

    let rotated = post(&c, &s, "/v1/sinks/signed/secret/rotate").await;
    let second = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    produce_records(&c, &s, "signed", vec![json!({"key": "after", "value": 1})]).await;
    let got = rx.until(WAIT, |g| g.len() >= 7).await;
    let last = &got[6..];
    assert_eq!(
        verify(&[&second, &first], last, false),
        vec![vec![true, true]],
        "the new secret signs, and the old one co-signs"
    );
    assert_eq!(
        verify(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], last, false),
        vec![vec![false]]
    );

    // A test request is signed too.
    let t = post(&c, &s, "/v1/sinks/signed/test").await;
    assert_eq!(t["ok"], true, "{t}");
    let got = rx.until(WAIT, |g| g.len() >= 8).await;
    assert_eq!(verify(&[&second], &got[7..], false), vec![vec![true]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_dead_lettered_after_its_attempts_and_its_key_goes_on() {
    let s = server();
    let c = client();
    let rx = Receiver::start_with(Behavior {
        refuse_marker: Some("poison".into()),
        ..Behavior::default()
    })
    .await;
    create_topic(&c, &s, "orders", 1).await;
    make_sink(
        &c,
        &s,
        json!({"name": "dl", "source": {"topic": "orders"}, "url": rx.url, "start": "earliest",
               "retry": {"record_attempts": 4, "initial_ms": 10}}),
    )
    .await;
    let mut records = Vec::new();
    for i in 0..20 {
        if i == 5 {
            records.push(json!({"key": "bad", "value": {"i": i, "poison": true}}));
        } else {
            let key = ["a", "b"][i % 2];
            records.push(json!({"key": key, "value": {"i": i}}));
        }
    }
    records.push(json!({"key": "bad", "value": {"i": 20}}));
    produce_records(&c, &s, "orders", records).await;
    let info = sink_until(&c, &s, "dl", |v| v["partitions"][0]["cursor"] == 21).await;
    assert_eq!(info["delivered"], 20);
    assert_eq!(info["dead_lettered"], 1, "{info}");
    let got = rx.got();
    let bad: Vec<&Received> = got.iter().filter(|r| r.offset == 5).collect();
    assert_eq!(bad.len(), 4, "exactly the configured attempts");
    assert_eq!(
        bad.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Refused records keep one id across their attempts.
    assert!(bad.iter().all(|r| r.webhook_id == bad[0].webhook_id));
    let dead = fetch_all(&c, &s, "dl.dead-letters", 0).await;
    let dead_offsets: Vec<u64> = dead
        .iter()
        .map(|d| d["value"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(dead_offsets, vec![5], "{dead:?}");
    let d = &dead[0]["value"];
    assert_eq!(d["attempts"], 4);
    assert_eq!(d["status"], 422);
    assert_eq!(d["record"]["value"]["i"], 5);
    assert_eq!(d["id"], bad[0].webhook_id.as_str());
    assert!(d["answer"].as_str().unwrap().contains("422"));
    // A dead-letter topic deleted meanwhile is made again for the next one.
    let r = c
        .delete(s.url("/v1/topics/dl.dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    produce_records(
        &c,
        &s,
        "orders",
        vec![json!({"key": "bad", "value": {"i": 21, "poison": true}})],
    )
    .await;
    sink_until(&c, &s, "dl", |v| v["dead_lettered"] == 2).await;
    let again = fetch_all(&c, &s, "dl.dead-letters", 0).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["value"]["offset"], 21);
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = |name| sluice_tests::metric(&text, name, "sink=\"dl\"");
    assert_eq!(m("sluice_sink_delivered_total"), Some(20.0), "{text}");
    assert_eq!(m("sluice_sink_dead_lettered_total"), Some(2.0));
    assert_eq!(m("sluice_sink_lag_records"), Some(0.0));
    assert_eq!(m("sluice_sink_healthy"), Some(1.0));
    // Offset 20 (the key's next record) was delivered, after offset 5 was
    // settled.
    let o20 = got
        .iter()
        .position(|r| r.offset == 20 && r.status == 200)
        .expect("offset 20 was delivered");
    let last_bad = got.iter().rposition(|r| r.offset == 5).unwrap();
    assert!(o20 > last_bad, "a key's records go in offset order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_obeyed_and_410_disables_the_sink_until_resumed() {
    let s = server();
    let c = client();
    let rx = Receiver::start_with(Behavior {
        script: [(302, None), (429, Some("2".to_string()))].into(),
        ..Behavior::default()
    })
    .await;
    create_topic(&c, &s, "ra", 1).await;
    make_sink(
        &c,
        &s,
        json!({"name": "ra", "source": {"topic": "ra"}, "url": rx.url, "start": "earliest",
               "retry": {"initial_ms": 10}}),
    )
    .await;
    produce_records(&c, &s, "ra", vec![json!({"key": "k", "value": 1})]).await;
    // A redirect is a failure (and not followed); 429's Retry-After is obeyed.
    let got = rx.until(WAIT, |g| g.len() >= 3).await;
    assert_eq!(
        (got[0].status, got[1].status, got[2].status),
        (302, 429, 200)
    );
    let gap = got[2].timestamp.parse::<u64>().unwrap() - got[1].timestamp.parse::<u64>().unwrap();
    assert!(
        gap >= 1,
        "Retry-After: 2 was not obeyed (retried {gap} s later)"
    );
    assert_eq!(got[2].attempt, 3);

    // 410: disabled, nothing more is sent, until a resume.
    rx.set(|b| b.script = [(410, None)].into());
    produce_records(&c, &s, "ra", vec![json!({"key": "k", "value": 2})]).await;
    let info = sink_until(&c, &s, "ra", |v| v["state"] == "disabled").await;
    assert!(info["disabled_reason"].as_str().unwrap().contains("410"));
    let before = rx.count();
    produce_records(&c, &s, "ra", vec![json!({"key": "k", "value": 3})]).await;
    // Other calls go through the runner's loop meanwhile; still nothing sent.
    for _ in 0..5 {
        get_json(&c, &s, "/v1/sinks/ra").await;
    }
    assert_eq!(rx.count(), before, "a disabled sink sends nothing");
    let r = c.post(s.url("/v1/sinks/ra/resume")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let info = sink_until(&c, &s, "ra", |v| v["partitions"][0]["cursor"] == 3).await;
    assert_eq!(info["state"], "running");
    let got = rx.got();
    let values: Vec<u64> = got
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["value"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(values, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_a_time_delivers_again_with_the_same_ids_and_pause_holds() {
    let s = server();
    let c = client();
    let rx = Receiver::start().await;
    create_topic(&c, &s, "replay", 2).await;
    let t0 = 1_700_000_000_000u64;
    let records: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "value": i, "timestamp": t0 + i * 1000}))
        .collect();
    produce_records(&c, &s, "replay", records).await;
    make_sink(
        &c,
        &s,
        json!({"name": "replay", "source": {"topic": "replay"}, "url": rx.url,
               "start": {"timestamp": t0}, "format": "cloudevents", "ordering": "partition",
               "batch": {"max_records": 3}}),
    )
    .await;
    let first = rx
        .until(WAIT, |g| g.iter().map(|r| r.records).sum::<u32>() >= 10)
        .await;
    let events = |got: &[Received]| -> BTreeMap<u64, String> {
        let mut out = BTreeMap::new();
        for r in got {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let list = if r.records > 1 {
                assert_eq!(r.content_type, "application/cloudevents-batch+json");
                v.as_array().unwrap().clone()
            } else {
                assert_eq!(r.content_type, "application/cloudevents+json");
                vec![v]
            };
            for e in list {
                assert_eq!(e["specversion"], "1.0");
                assert_eq!(e["source"], "/sluice/topics/replay");
                assert!(e["partitionkey"].as_str().unwrap().starts_with('k'));
                let seq: u64 = e["sequence"].as_str().unwrap().parse().unwrap();
                let _ = seq;
                out.insert(
                    e["data"].as_u64().unwrap(),
                    e["id"].as_str().unwrap().to_string(),
                );
            }
        }
        out
    };
    let ids = events(&first);
    assert_eq!(ids.len(), 10);

    let r = c
        .post(s.url("/v1/sinks/replay/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(s.url("/v1/sinks/replay/cursor/reset"))
        .json(&json!({"start": {"timestamp": t0 + 5000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let paused = get_json(&c, &s, "/v1/sinks/replay").await;
    assert_eq!(paused["state"], "paused");
    let n = rx.got().len();
    assert_eq!(n, first.len(), "a paused sink sends nothing");
    c.post(s.url("/v1/sinks/replay/resume"))
        .send()
        .await
        .unwrap();
    let all = rx
        .until(WAIT, |g| g.iter().map(|r| r.records).sum::<u32>() >= 15)
        .await;
    let again = events(&all[n..]);
    assert_eq!(
        again.keys().copied().collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    for (v, id) in &again {
        assert_eq!(&ids[v], id, "record {v} keeps its id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_allow_list_are_refused_at_creation_and_at_connect_time() {
    let mut s = server();
    let c = client();
    let rx = Receiver::start().await;
    create_topic(&c, &s, "guarded", 1).await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for url in [
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1/hook".to_string(),
        "http://[::1]:1/hook".to_string(),
    ] {
        let r = c
            .post(s.url("/v1/sinks"))
            .json(&json!({"name": "x", "source": {"topic": "guarded"}, "url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "sink_destination_not_allowed", "{url}: {p}");
    }
    // A name that resolves to loopback, allowed when made ...
    let url = format!("http://localhost:{port}/hook");
    make_sink(
        &c,
        &s,
        json!({"name": "guarded", "source": {"topic": "guarded"}, "url": url, "start": "earliest",
               "retry": {"initial_ms": 10, "max_ms": 100}}),
    )
    .await;
    produce_records(&c, &s, "guarded", vec![json!({"key": "k", "value": 1})]).await;
    rx.until(WAIT, |g| g.len() == 1).await;
    // ... and refused on connect once the gateway no longer allows loopback
    // (a graceful stop saves what the sink delivered).
    assert!(s.terminate());
    s.edit_args(|args| {
        let at = args.iter().position(|a| a == "--sink-allow-net").unwrap();
        args.drain(at..at + 2);
    });
    s.restart();
    produce_records(&c, &s, "guarded", vec![json!({"key": "k", "value": 2})]).await;
    let info = sink_until(&c, &s, "guarded", |v| {
        v["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--sink-allow-net"))
    })
    .await;
    assert_eq!(info["partitions"][0]["cursor"], 1, "{info}");
    assert_eq!(rx.got().len(), 1, "nothing reached the receiver");
    let r = c
        .post(s.url("/v1/sinks"))
        .json(&json!({"name": "y", "source": {"topic": "guarded"}, "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sink_requests_get_problems() {
    let s = server();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    let ok = json!({"name": "s", "source": {"topic": "t"}, "url": "http://127.0.0.1:9/"});
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "s"}), 400, "invalid_body"),
        (
            json!({"name": "s", "source": {"topic": "t"}, "url": "http://x/", "extra": 1}),
            400,
            "invalid_body",
        ),
        (
            json!({"name": "s", "source": {"topic": "nope"}, "url": "http://127.0.0.1:9/"}),
            404,
            "topic_not_found",
        ),
        (
            json!({"name": "s", "source": {"topic": "t"}, "url": "mailto:a@b"}),
            422,
            "invalid_sink",
        ),
        (
            json!({"name": "s", "source": {"topic": "t"}, "url": "http://127.0.0.1:9/", "filter": "a >"}),
            422,
            "invalid_sink",
        ),
        (
            json!({"name": "s", "source": {"topic": "t"}, "url": "http://127.0.0.1:9/", "rate": {"max_in_flight": 0}}),
            422,
            "invalid_sink",
        ),
        (
            json!({"name": "s", "source": {"topic": "t"}, "url": "http://127.0.0.1:9/", "ordering": "random"}),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let r = c.post(s.url("/v1/sinks")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], code, "{body}: {p}");
    }
    make_sink(&c, &s, ok.clone()).await;
    let r = c.post(s.url("/v1/sinks")).json(&ok).send().await.unwrap();
    assert_eq!(r.status(), 409);
    for path in ["/v1/sinks/none", "/v1/sinks/none/attempts"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in [
        "/v1/sinks/none/pause",
        "/v1/sinks/none/test",
        "/v1/sinks/none/secret/rotate",
    ] {
        let r = c.post(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = c
        .post(s.url("/v1/sinks/s/cursor/reset"))
        .json(&json!({"start": "sometime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let list = get_json(&c, &s, "/v1/sinks").await;
    assert_eq!(list["sinks"].as_array().unwrap().len(), 1);
    // Its source deleted, a sink says so and can still be deleted.
    let r = c.delete(s.url("/v1/topics/t")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    sink_until(&c, &s, "s", |v| {
        v["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is gone"))
    })
    .await;
    let r = c.delete(s.url("/v1/sinks/s")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.delete(s.url("/v1/sinks/s")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let list = get_json(&c, &s, "/v1/sinks").await;
    assert_eq!(list["sinks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_need_an_admin_token() {
    let secret = "0123456789abcdef0123456789abcdef";
    let s = Server::start_with(&["--jwt-secret", secret, "--sink-allow-net", "127.0.0.0/8"]);
    let c = client();
    let token = |admin: bool| {
        sluice_tests::sign(
            jsonwebtoken::Algorithm::HS256,
            None,
            secret.as_bytes(),
            &json!({"sub": "t", "exp": sluice_tests::now_secs() + 600,
                    "sluice": {"produce": ["*"], "consume": ["*"], "tables": ["*"], "admin": admin}}),
        )
    };
    let admin = token(true);
    let user = token(false);
    let r = c
        .post(s.url("/v1/topics"))
        .bearer_auth(&admin)
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let def = json!({"name": "s", "source": {"topic": "t"}, "url": "http://127.0.0.1:9/"});
    for (token, status) in [(None, 401), (Some(&user), 403), (Some(&admin), 201)] {
        let mut req = c.post(s.url("/v1/sinks")).json(&def);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), status);
    }
    for (method, path) in [
        ("GET", "/v1/sinks"),
        ("GET", "/v1/sinks/s"),
        ("GET", "/v1/sinks/s/attempts"),
        ("POST", "/v1/sinks/s/pause"),
        ("POST", "/v1/sinks/s/resume"),
        ("POST", "/v1/sinks/s/test"),
        ("POST", "/v1/sinks/s/secret/rotate"),
        ("DELETE", "/v1/sinks/s"),
    ] {
        let r = c
            .request(method.parse().unwrap(), s.url(path))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
    }
}

/// Retention by time keeps what an enabled sink has not delivered: a topic
/// with a sink and one without, the same retention; the one without is
/// trimmed, the one with keeps its records until the sink delivered them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_a_sink_has_not_delivered() {
    let s = server();
    let c = client();
    let rx = Receiver::start_with(Behavior {
        status: Some(503),
        ..Behavior::default()
    })
    .await;
    for name in ["free", "held"] {
        let r = c
            .post(s.url("/v1/topics"))
            .json(&json!({"name": name, "partitions": 1, "retention_ms": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    make_sink(
        &c,
        &s,
        json!({"name": "held", "source": {"topic": "held"}, "url": rx.url, "start": "earliest",
               "retry": {"initial_ms": 10, "max_ms": 50}}),
    )
    .await;
    let start_of = |topic: &'static str| {
        let (c, s) = (&c, &s);
        async move {
            get_json(c, s, &format!("/v1/topics/{topic}")).await["partitions"][0]["start_offset"]
                .as_u64()
                .unwrap()
        }
    };
    let records = || {
        (0..3)
            .map(|i| json!({"key": "k", "value": i}))
            .collect::<Vec<_>>()
    };
    produce_records(&c, &s, "held", records()).await;
    // Two passes of retention over "free" (so at least one whole pass over
    // "held" after its records were written).
    for end in [3, 6] {
        produce_records(&c, &s, "free", records()).await;
        let start = Instant::now();
        while start_of("free").await < end {
            assert!(start.elapsed() < WAIT, "retention never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        start_of("held").await,
        0,
        "retention deleted undelivered records"
    );
    rx.set(|b| b.status = None);
    sink_until(&c, &s, "held", |v| v["partitions"][0]["cursor"] == 3).await;
    let start = Instant::now();
    while start_of("held").await < 3 {
        assert!(
            start.elapsed() < WAIT,
            "delivered records are never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx.got().iter().filter(|r| r.status == 200).count(), 3);
}

/// A sink of a table pushes its row changes: each keyed by the row, in order,
/// the last one the row as the table has it; a deleted row comes as null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_sink_pushes_row_changes_in_order() {
    let s = server();
    let c = client();
    let rx = Receiver::start().await;
    create_topic(&c, &s, "pay", 2).await;
    for def in [
        json!({"sql": "CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM pay GROUP BY customer"}),
        json!({"name": "latest", "source": "pay", "key": "key"}),
    ] {
        let r = c.post(s.url("/v1/tables")).json(&def).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    for (name, table) in [("counts", "per_customer"), ("rows", "latest")] {
        make_sink(
            &c,
            &s,
            json!({"name": name, "source": {"table": table}, "url": format!("{}?{name}", rx.url),
                   "start": "earliest", "format": "value"}),
        )
        .await;
    }
    let mut records = Vec::new();
    for i in 0..30u64 {
        let customer = format!("c{}", i % 3);
        records.push(json!({"key": customer, "value": {"customer": customer, "amount": i}}));
    }
    produce_records(&c, &s, "pay", records).await;
    produce_records(&c, &s, "pay", vec![json!({"key": "c0", "value": null})]).await;
    // 30 changes of per_customer, 31 of latest.
    let got = rx.until(WAIT, |g| g.len() >= 61).await;
    let mut last_n: BTreeMap<String, u64> = BTreeMap::new();
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for r in &got {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        assert_eq!(r.key.as_deref(), Some(key.as_str()));
        if v["table"] == "per_customer" {
            let n = v["row"]["n"].as_u64().unwrap();
            let before = last_n.insert(key.clone(), n).unwrap_or(0);
            assert!(n >= before, "{key}: count went from {before} to {n}");
        } else {
            assert_eq!(v["table"], "latest");
            latest.insert(key, v["row"].clone());
        }
    }
    assert_eq!(
        last_n.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    assert_eq!(latest["c0"], Value::Null, "a deleted row comes as null");
    assert_eq!(latest["c1"]["amount"], 28);
    let bad = c
        .post(s.url("/v1/sinks"))
        .json(&json!({"name": "x", "source": {"table": "nope"}, "url": rx.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
    let p: Value = bad.json().await.unwrap();
    assert_eq!(p["code"], "table_not_found");
}

/// Binary CloudEvents: the value is the body, the attributes are `ce-*`
/// headers, the record's own event type kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_cloudevents_carry_their_attributes_in_headers() {
    let s = server();
    let c = client();
    let rx = Receiver::start().await;
    create_topic(&c, &s, "ce", 1).await;
    make_sink(
        &c,
        &s,
        json!({"name": "ce", "source": {"topic": "ce"}, "url": rx.url, "start": "earliest",
               "format": "cloudevents-binary"}),
    )
    .await;
    // A record that came in as a CloudEvent, and a plain one.
    let r = c
        .post(s.url("/v1/topics/ce/records"))
        .header("content-type", "application/cloudevents+json")
        .json(
            &json!({"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.placed",
                      "subject": "o-1", "data": {"total": 12}}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    produce_records(&c, &s, "ce", vec![json!({"key": "k", "value": {"n": 1}})]).await;
    // Two keys go in parallel: take them in offset order.
    let mut got = rx.until(WAIT, |g| g.len() >= 2).await;
    got.sort_by_key(|r| r.offset);
    let h = |i: usize, n: &str| got[i].headers.get(n).cloned().unwrap_or_default();
    assert_eq!(h(0, "ce-specversion"), "1.0");
    assert_eq!(h(0, "ce-type"), "order.placed");
    assert_eq!(h(0, "ce-source"), "/sluice/topics/ce");
    assert_eq!(h(0, "ce-partitionkey"), "o-1");
    assert_eq!(h(0, "ce-id"), got[0].webhook_id);
    assert_eq!(h(0, "ce-sequence"), format!("{:020}", 0));
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        json!({"total": 12})
    );
    assert_eq!(h(1, "ce-type"), "sluice.record");
    assert_eq!(h(1, "ce-sequence"), format!("{:020}", 1));
    assert_eq!(got[1].content_type, "application/json");
}
