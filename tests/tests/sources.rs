//! Event sources: signed webhooks from other systems into a topic, on the real
//! binary (and, with `SLUICE_TEST_ENGINE=kafka`, on the Kafka test cluster).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;
use sluice_tests::{Server, client, create_topic, fetch_all, get_json, now_secs};

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Standard Webhooks headers for `body`, signed with each of `secrets`.
fn standard(id: &str, ts: u64, body: &[u8], secrets: &[&str]) -> Vec<(&'static str, String)> {
    let sigs: Vec<String> = secrets
        .iter()
        .map(|s| {
            let key = STANDARD.decode(s.trim_start_matches("whsec_")).unwrap();
            let mac = hmac(
                &key,
                &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
            );
            format!("v1,{}", STANDARD.encode(mac))
        })
        .collect();
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sigs.join(" ")),
        ("content-type", "application/json".into()),
    ]
}

fn stripe(secret: &str, ts: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    let sig = hex(&hmac(
        secret.as_bytes(),
        &[ts.to_string().as_bytes(), b".", body],
    ));
    vec![("stripe-signature", format!("t={ts},v1={sig}"))]
}

fn slack(secret: &str, ts: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    let sig = hex(&hmac(
        secret.as_bytes(),
        &[b"v0:", ts.to_string().as_bytes(), b":", body],
    ));
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", format!("v0={sig}")),
    ]
}

async fn hook(
    c: &reqwest::Client,
    s: &Server,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.insert(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let r = c
        .post(s.url(&format!("/v1/hooks/{source}")))
        .headers(h)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn make(c: &reqwest::Client, s: &Server, def: Value) -> Value {
    let r = c
        .post(s.url("/v1/sources"))
        .json(&def)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn all(c: &reqwest::Client, s: &Server, topic: &str, partitions: u32) -> Vec<Value> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.extend(fetch_all(c, s, topic, p).await);
    }
    out
}

/// Each scheme's published or specified signatures: only the valid requests
/// are accepted, and only they are written.
#[tokio::test]
async fn each_scheme_takes_only_what_its_sender_signed() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "in", 1).await;
    for (name, verify) in [
        (
            "sw",
            json!({"scheme": "standard-webhooks", "secret": WHSEC}),
        ),
        (
            "gh",
            json!({"scheme": "github", "secret": "It's a Secret to Everybody"}),
        ),
        (
            "st",
            json!({"scheme": "stripe", "secret": "whsec_stripe_test"}),
        ),
        (
            "sl",
            json!({"scheme": "slack", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}),
        ),
        (
            "hm",
            json!({"scheme": "hmac", "secret": "k3y", "header": "x-body-signature"}),
        ),
        ("tk", json!({"scheme": "token", "secret": "s3cret-token"})),
    ] {
        let info = make(
            &c,
            &s,
            json!({"name": name, "topic": "in", "verify": verify}),
        )
        .await;
        assert_eq!(info["hook_path"], format!("/v1/hooks/{name}"));
        assert!(
            info["definition"]["verify"].get("secret").is_none(),
            "{info}"
        );
    }
    let now = now_secs();
    let body = br#"{"id": "evt_1", "event_id": "Ev1", "type": "test", "n": 1}"#;
    let tampered = br#"{"id": "evt_1", "event_id": "Ev1", "type": "test", "n": 2}"#;
    let mut accepted = Vec::new();
    let mut expect = |status: u16, code: Option<&str>, got: (u16, Value), what: &str| {
        assert_eq!(got.0, status, "{what}: {}", got.1);
        match code {
            Some(code) => assert_eq!(got.1["code"], code, "{what}"),
            None => accepted.push(what.to_string()),
        }
    };

    // Standard Webhooks: valid; rotated multi-signature; tampered; wrong
    // secret; outside the tolerance either way; missing headers.
    let ok = standard("msg_1", now, body, &[WHSEC]);
    expect(
        200,
        None,
        hook(&c, &s, "sw", &ok, body).await,
        "standard-webhooks",
    );
    let multi = standard(
        "msg_2",
        now,
        body,
        &["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", WHSEC],
    );
    expect(
        200,
        None,
        hook(&c, &s, "sw", &multi, body).await,
        "standard-webhooks rotated",
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(&c, &s, "sw", &ok, tampered).await,
        "sw tampered",
    );
    let wrong = standard(
        "msg_3",
        now,
        body,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"],
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(&c, &s, "sw", &wrong, body).await,
        "sw wrong secret",
    );
    for ts in [now - 400, now + 400] {
        let stale = standard("msg_4", ts, body, &[WHSEC]);
        expect(
            401,
            Some("signature_stale"),
            hook(&c, &s, "sw", &stale, body).await,
            "sw stale",
        );
    }
    expect(
        401,
        Some("signature_missing"),
        hook(&c, &s, "sw", &ok[..2], body).await,
        "sw missing",
    );

    // GitHub's documented example, exactly as published.
    let gh = vec![(
        "x-hub-signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string(),
    )];
    expect(
        200,
        None,
        hook(&c, &s, "gh", &gh, b"Hello, World!").await,
        "github",
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(&c, &s, "gh", &gh, b"Hello, World?").await,
        "gh tampered",
    );
    expect(
        401,
        Some("signature_missing"),
        hook(&c, &s, "gh", &[], b"Hello, World!").await,
        "gh missing",
    );

    // Stripe and Slack, signed now.
    expect(
        200,
        None,
        hook(&c, &s, "st", &stripe("whsec_stripe_test", now, body), body).await,
        "stripe",
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(&c, &s, "st", &stripe("whsec_other", now, body), body).await,
        "st wrong",
    );
    expect(
        401,
        Some("signature_stale"),
        hook(
            &c,
            &s,
            "st",
            &stripe("whsec_stripe_test", now - 301, body),
            body,
        )
        .await,
        "st stale",
    );
    let sl_body = br#"{"type": "event_callback", "event_id": "Ev9"}"#;
    expect(
        200,
        None,
        hook(
            &c,
            &s,
            "sl",
            &slack("8f742231b10e8888abcd99yyyzzz85a5", now, sl_body),
            sl_body,
        )
        .await,
        "slack",
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(
            &c,
            &s,
            "sl",
            &slack("8f742231b10e8888abcd99yyyzzz85a6", now, sl_body),
            sl_body,
        )
        .await,
        "sl wrong",
    );

    // HMAC in a named header, hex; a token.
    let hm = vec![(
        "x-body-signature",
        format!("sha256={}", hex(&hmac(b"k3y", &[body]))),
    )];
    expect(200, None, hook(&c, &s, "hm", &hm, body).await, "hmac");
    expect(
        401,
        Some("signature_invalid"),
        hook(&c, &s, "hm", &hm, tampered).await,
        "hmac tampered",
    );
    expect(
        200,
        None,
        hook(
            &c,
            &s,
            "tk",
            &[("authorization", "Bearer s3cret-token".into())],
            body,
        )
        .await,
        "token",
    );
    expect(
        401,
        Some("signature_invalid"),
        hook(
            &c,
            &s,
            "tk",
            &[("authorization", "Bearer nope".into())],
            body,
        )
        .await,
        "token wrong",
    );
    expect(
        401,
        Some("signature_missing"),
        hook(&c, &s, "tk", &[], body).await,
        "token missing",
    );

    // An unknown source.
    expect(
        404,
        Some("source_not_found"),
        hook(&c, &s, "nobody", &ok, body).await,
        "unknown",
    );

    // Only the accepted requests were written; JSON as JSON, the rest as bytes.
    let records = all(&c, &s, "in", 1).await;
    assert_eq!(records.len(), accepted.len(), "{accepted:?}: {records:?}");
    let raw: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("value_base64").is_some())
        .collect();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["value_base64"], STANDARD.encode("Hello, World!"));
    assert_eq!(records[0]["value"]["type"], "test");
    assert_eq!(records[0]["headers"]["webhook-id"], "msg_1");
    let info = get_json(&c, &s, "/v1/sources/sw").await;
    assert_eq!(info["counts"]["accepted"], 2, "{info}");
    assert_eq!(info["counts"]["refused"], 5, "{info}");
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sluice_tests::metric(
            &text,
            "sluice_source_requests_total",
            "source=\"sw\",outcome=\"refused\""
        ),
        Some(5.0),
        "{text}"
    );
}

/// A redelivery (the same delivery id) answers the first offsets and writes
/// nothing, also after `kill -9`; a Debezium Server–shaped stream of change
/// events (CloudEvents, retried) is ingested once per event id, keyed by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_write_nothing_across_kill_9() {
    let mut s = Server::start();
    let c = client();
    create_topic(&c, &s, "gh-events", 2).await;
    create_topic(&c, &s, "cdc", 3).await;
    make(
        &c,
        &s,
        json!({"name": "sw", "topic": "gh-events", "verify": {"scheme": "standard-webhooks", "secret": WHSEC},
               "key": "$.repo"}),
    )
    .await;
    make(
        &c,
        &s,
        json!({"name": "pg", "topic": "cdc", "verify": {"scheme": "token", "secret": "dbz-token"},
               "dedupe": "$.id", "key": "$.data.after.id", "headers": ["x-debezium-source"]}),
    )
    .await;
    let body = br#"{"repo": "acme/api", "action": "opened"}"#;
    let first = hook(
        &c,
        &s,
        "sw",
        &standard("msg_A", now_secs(), body, &[WHSEC]),
        body,
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    // Redelivered, freshly signed: the same offsets.
    let again = hook(
        &c,
        &s,
        "sw",
        &standard("msg_A", now_secs(), body, &[WHSEC]),
        body,
    )
    .await;
    assert_eq!((again.0, &again.1["offsets"]), (200, &first.1["offsets"]));

    // Debezium Server, CloudEvents format, with retries of some events.
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let id = format!("name:dbserver1;lsn:{};txId:{}", 1000 + i, 500 + i / 4);
        let event = json!({
            "id": id, "source": "/debezium/postgresql/dbserver1", "specversion": "1.0",
            "type": "io.debezium.connector.postgresql.DataChangeEvent",
            "datacontenttype": "application/json", "iodebeziumop": if i % 5 == 0 { "u" } else { "c" },
            "data": {"before": null, "after": {"id": format!("row-{}", i % 13), "qty": i}, "op": "c"}
        });
        let bytes = serde_json::to_vec(&event).unwrap();
        let headers = vec![
            ("authorization", "Bearer dbz-token".to_string()),
            ("content-type", "application/cloudevents+json".to_string()),
            ("x-debezium-source", "dbserver1".to_string()),
        ];
        let tries = if i % 3 == 0 { 3 } else { 1 };
        let mut offsets = None;
        for _ in 0..tries {
            let (st, answer) = hook(&c, &s, "pg", &headers, &bytes).await;
            assert_eq!(st, 200, "{answer}");
            match &offsets {
                None => offsets = Some(answer["offsets"].clone()),
                Some(o) => assert_eq!(o, &answer["offsets"], "a retry answers the first offsets"),
            }
        }
        ids.push((id, format!("row-{}", i % 13)));
    }
    s.restart();
    // After kill -9: redeliveries still write nothing.
    let after = hook(
        &c,
        &s,
        "sw",
        &standard("msg_A", now_secs(), body, &[WHSEC]),
        body,
    )
    .await;
    assert_eq!((after.0, &after.1["offsets"]), (200, &first.1["offsets"]));
    let (st, _) = hook(
        &c,
        &s,
        "pg",
        &[("authorization", "Bearer dbz-token".to_string())],
        &serde_json::to_vec(&json!({"id": ids[7].0, "data": {"after": {"id": ids[7].1}}})).unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    let gh = all(&c, &s, "gh-events", 2).await;
    assert_eq!(gh.len(), 1);
    assert_eq!(gh[0]["key"], "acme/api");
    let cdc = all(&c, &s, "cdc", 3).await;
    assert_eq!(cdc.len(), ids.len(), "one record per event id");
    let mut seen: Vec<(String, String)> = cdc
        .iter()
        .map(|r| {
            assert_eq!(r["headers"]["x-debezium-source"], "dbserver1");
            assert_eq!(r["headers"]["content-type"], "application/cloudevents+json");
            (
                r["value"]["id"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
}

/// The CloudEvents validation handshake, Slack's URL verification, rotation,
/// and definitions that cannot be kept.
#[tokio::test]
async fn handshakes_rotation_and_definitions() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "in", 1).await;
    make(
        &c,
        &s,
        json!({"name": "ce", "topic": "in", "verify": {"scheme": "token", "secret": "t1"}}),
    )
    .await;
    let r = c
        .request(reqwest::Method::OPTIONS, s.url("/v1/hooks/ce"))
        .header("WebHook-Request-Origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
    assert_eq!(r.headers()["webhook-allowed-rate"], "*");
    let r = c
        .request(reqwest::Method::OPTIONS, s.url("/v1/hooks/ce"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request(reqwest::Method::OPTIONS, s.url("/v1/hooks/nope"))
        .header("WebHook-Request-Origin", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Slack's URL verification is answered, not written.
    make(
        &c,
        &s,
        json!({"name": "sl", "topic": "in", "verify": {"scheme": "slack", "secret": "sig"}}),
    )
    .await;
    let body = br#"{"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#;
    let (st, answer) = hook(&c, &s, "sl", &slack("sig", now_secs(), body), body).await;
    assert_eq!(
        (st, &answer["challenge"]),
        (
            200,
            &json!("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        )
    );
    assert!(all(&c, &s, "in", 1).await.is_empty());

    // Rotation: both secrets work until the old one expires.
    let r = c
        .post(s.url("/v1/sources/ce/secret/rotate"))
        .json(&json!({"secret": "t2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["secrets"].as_array().unwrap().len(), 2, "{info}");
    for t in ["t1", "t2"] {
        let (st, _) = hook(
            &c,
            &s,
            "ce",
            &[("authorization", format!("Bearer {t}"))],
            b"{}",
        )
        .await;
        assert_eq!(st, 200, "{t}");
    }
    let r = c
        .post(s.url("/v1/sources/ce/secret/rotate"))
        .json(&json!({"secret": "t3", "keep_old_s": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (t, want) in [("t1", 401), ("t2", 401), ("t3", 200)] {
        let (st, _) = hook(
            &c,
            &s,
            "ce",
            &[("authorization", format!("Bearer {t}"))],
            b"{}",
        )
        .await;
        assert_eq!(st, want, "{t}");
    }

    // Definitions that cannot be kept.
    for (def, status, code) in [
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "ftp", "secret": "s"}}),
            422,
            "invalid_source",
        ),
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "github"}}),
            422,
            "invalid_source",
        ),
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "github", "secret": "s", "header": "x-a"}}),
            422,
            "invalid_source",
        ),
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "token", "secret": "s"}, "key": "id"}),
            422,
            "invalid_source",
        ),
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "token", "secret": "s"}, "dedupe_window_s": 999_999_999u64}),
            422,
            "invalid_source",
        ),
        (
            json!({"name": "x", "topic": "nope", "verify": {"scheme": "token", "secret": "s"}}),
            404,
            "topic_not_found",
        ),
        (
            json!({"name": "ce", "topic": "in", "verify": {"scheme": "token", "secret": "s"}}),
            409,
            "source_exists",
        ),
        (
            json!({"name": "x", "topic": "in", "verify": {"scheme": "token", "secret": "s"}, "extra": 1}),
            400,
            "invalid_body",
        ),
    ] {
        let r = c
            .post(s.url("/v1/sources"))
            .json(&def)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{def}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], code, "{def}: {p}");
    }
    let list = get_json(&c, &s, "/v1/sources").await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 2);
    let r = c.delete(s.url("/v1/sources/ce")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (st, p) = hook(
        &c,
        &s,
        "ce",
        &[("authorization", "Bearer t3".into())],
        b"{}",
    )
    .await;
    assert_eq!((st, &p["code"]), (404, &json!("source_not_found")));
}
