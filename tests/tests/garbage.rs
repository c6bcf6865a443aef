//! Randomized garbage against every endpoint: malformed bodies, wrong content types,
//! odd headers and paths. No answer may be a 5xx, the server must stay up, and no
//! stored data may change.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic};

const REQUESTS: usize = 1500;

fn garbage_body(rng: &mut impl Rng) -> Vec<u8> {
    // JSON documents only: a proper prefix of one is never valid (NDJSON is, at a
    // line boundary, so broken NDJSON is among the shapes below).
    let valid: [&[u8]; 7] = [
        br#"{"key":"k","value":{"a":[1,2,{"b":null}]},"headers":{"h":"v"},"partition":0}"#,
        br#"{"records":[{"value":1},{"value_base64":"AAEC"},{"key":"x","value":null}]}"#,
        br#"{"name":"fresh-topic","partitions":3,"retention_ms":1000}"#,
        br#"{"specversion":"1.0","id":"e1","source":"/s","type":"t","data":{"x":1}}"#,
        br#"[{"specversion":"1.0","id":"e2","source":"/s","type":"t"}]"#,
        br#"{"value":"\u00e9\ud83d\ude00"}"#,
        br#"{"records":[{"value":1,"partition":4294967295}]}"#,
    ];
    match rng.random_range(0..5) {
        // A proper prefix of a valid body is never valid.
        0 | 1 => {
            let v = valid.choose(rng).unwrap();
            v[..rng.random_range(0..v.len())].to_vec()
        }
        // Random bytes.
        2 => (0..rng.random_range(0..300))
            .map(|_| rng.random())
            .collect(),
        // Valid JSON of the wrong shape.
        3 => [
            "null",
            "[]",
            "3",
            "\"s\"",
            "{\"value\":{}}x",
            "{\"records\":null}",
            "{\"value\":1,\"value\":2,\"partition\":\"0\"}",
            "{\"name\":\"..\",\"partitions\":0}",
            "{\"records\":[{}]}",
            "{\"value\":1}\n{\"value\":\n",
            "{\"value\":1}\n\u{0}\n",
        ]
        .choose(rng)
        .unwrap()
        .as_bytes()
        .to_vec(),
        // Deep nesting.
        _ => {
            let depth = rng.random_range(100..5000);
            let mut v = b"{\"value\":".to_vec();
            v.extend(std::iter::repeat_n(b'[', depth));
            v
        }
    }
}

#[tokio::test]
async fn garbage_never_gets_a_5xx_nor_changes_data() {
    let s = Server::start_with(&["--rate-limit-requests", "0", "--max-body-bytes", "65536"]);
    let c = client();
    create_topic(&c, &s, "t", 3).await;
    c.post(s.url("/v1/topics/t/records"))
        .json(&json!({"records": [{"value": 1}, {"value": 2}]}))
        .send()
        .await
        .unwrap();
    let before: Value = c
        .get(s.url("/v1/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let paths = [
        "/v1/topics",
        "/v1/topics/t",
        "/v1/topics/t/records",
        "/v1/topics/nope/records",
        "/v1/topics/t/partitions/0/records",
        "/v1/topics/t/partitions/99/records",
        "/v1/topics/t/partitions/-1/records?offset=abc",
        "/v1/topics/%00/records",
        "/v1/topics/t/partitions/0/records?limit=0&max_bytes=-1&wait_ms=x",
        "/v1/topics/t/partitions/0/records?offset=99999999999999999999999",
        "/v1/topics/..%2F..%2Fetc/records",
        "/v1/topics/t/partitions/0/records?offset=0&offset=1",
    ];
    let types = [
        "application/json",
        "application/x-ndjson",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "text/plain",
        "",
        "application/json; charset=latin1",
        "multipart/form-data; boundary=x",
    ];
    for i in 0..REQUESTS {
        let path = paths.choose(&mut rng).unwrap();
        let method = ["POST", "POST", "GET", "PUT", "PATCH"]
            .choose(&mut rng)
            .unwrap();
        let mut req = c.request(method.parse().unwrap(), s.url(path));
        let ct = types.choose(&mut rng).unwrap();
        if !ct.is_empty() {
            req = req.header("content-type", *ct);
        }
        if rng.random_bool(0.2) {
            req = req.header(
                "ce-specversion",
                ["1.0", "0.3", ""].choose(&mut rng).unwrap().to_string(),
            );
            req = req.header("ce-id", "x");
        }
        if rng.random_bool(0.2) {
            let key: String = (0..rng.random_range(0..300))
                .map(|_| rng.random_range(b' '..=b'~') as char)
                .collect();
            req = req.header("idempotency-key", key);
        }
        if rng.random_bool(0.1) {
            req = req.header("authorization", "Bearer garbage");
        }
        let r = req.body(garbage_body(&mut rng)).send().await.unwrap();
        assert!(
            r.status().as_u16() < 500,
            "request {i}: {method} {path} ({ct}) got {}",
            r.status()
        );
        if r.status().is_client_error() && r.status() != 405 && r.status() != 404 {
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(
                ct.as_deref(),
                Some("application/problem+json"),
                "request {i}: {method} {path}"
            );
        }
    }
    let after: Value = c
        .get(s.url("/v1/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before, after, "garbage changed stored data");
    assert_eq!(c.get(s.url("/livez")).send().await.unwrap().status(), 200);
}
