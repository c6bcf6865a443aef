//! Every bad input of the contract's topic, produce and fetch sections gets its 4xx
//! problem+json, and none of them changes stored data.

use reqwest::{Method, Response};
use serde_json::{Value, json};
use sluice_tests::{Server, client, create_topic, get_json};

/// Asserts a problem+json answer with the given status and code.
async fn problem(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status for {code}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json",
        "content type for {code}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(!body["detail"].as_str().unwrap().is_empty());
    assert_eq!(body["type"], format!("/problems#{code}"), "{body}");
    body
}

#[tokio::test]
async fn topic_errors() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "orders", 2).await;
    let post = |body: String| {
        c.post(s.url("/v1/topics"))
            .header("content-type", "application/json")
            .body(body)
    };
    let long_name = format!(r#"{{"name":"{}"}}"#, "x".repeat(250));
    for (body, status, code) in [
        (r#"{"name":"orders","partitions":2}"#, 409, "topic_exists"),
        (
            r#"{"name":"bad name","partitions":1}"#,
            400,
            "invalid_request",
        ),
        (long_name.as_str(), 400, "invalid_request"),
        (r#"{"name":"","partitions":1}"#, 400, "invalid_request"),
        (r#"{"name":"z","partitions":0}"#, 400, "invalid_request"),
        (r#"{"name":"z","partitions":5000}"#, 400, "invalid_request"),
        (r#"{"name":"z","partitions":-1}"#, 400, "invalid_body"),
        (r#"{"name":"z","partitions":"3"}"#, 400, "invalid_body"),
        (r#"{"name":"z","retention_ms":0}"#, 400, "invalid_request"),
        (
            r#"{"name":"z","retention_bytes":9223372036854775808}"#,
            400,
            "invalid_request",
        ),
        (r#"["z", 3]"#, 400, "invalid_body"),
        (r#"{"name":"z","partitons":3}"#, 400, "invalid_body"),
        (r#"{"name":"z""#, 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ("[]", 400, "invalid_body"),
    ] {
        problem(post(body.to_string()).send().await.unwrap(), status, code).await;
    }
    problem(
        c.get(s.url("/v1/topics/nope")).send().await.unwrap(),
        404,
        "topic_not_found",
    )
    .await;
    problem(
        c.delete(s.url("/v1/topics/nope")).send().await.unwrap(),
        404,
        "topic_not_found",
    )
    .await;
    problem(
        c.get(s.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    problem(
        c.request(Method::PUT, s.url("/v1/topics"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    let list: Value = c
        .get(s.url("/v1/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["topics"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn produce_errors() {
    let s = Server::start_with(&["--max-body-bytes", "4096"]);
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    let url = s.url("/v1/topics/t/records");
    let post = |body: &str| {
        c.post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    for (body, code) in [
        (r#"{"value":1"#, "invalid_json"),
        ("not json", "invalid_json"),
        (r#"{"vaule":1}"#, "invalid_body"),
        (r#"{"key":5,"value":1}"#, "invalid_body"),
        (r#"{"value":1,"headers":{"a":1}}"#, "invalid_body"),
        (r#"{"value":1,"headers":[]}"#, "invalid_body"),
        (r#"{"value":1,"partition":-1}"#, "invalid_body"),
        (r#"{"value":1,"timestamp":"now"}"#, "invalid_body"),
        (r#"{"records":{"value":1}}"#, "invalid_body"),
        (r#"{"records":[{"value":1}],"key":"k"}"#, "invalid_body"),
        (r#"[{"value":1}]"#, "invalid_body"),
        (r#"{"key":"k"}"#, "invalid_record"),
        (r#"{"value":1,"value_base64":"AA=="}"#, "invalid_record"),
        (r#"{"value_base64":"%%%"}"#, "invalid_record"),
        (r#"{"records":[[null,null]]}"#, "invalid_body"),
        (
            r#"{"value":1,"timestamp":9223372036854775808}"#,
            "invalid_record",
        ),
        (r#"{"value":1,"timestamp":1.5}"#, "invalid_body"),
    ] {
        let b = problem(post(body).send().await.unwrap(), 400, code).await;
        assert!(!b["detail"].as_str().unwrap().is_empty(), "{body}");
    }
    problem(
        post(r#"{"value":1,"partition":2}"#).send().await.unwrap(),
        404,
        "partition_not_found",
    )
    .await;
    problem(
        post(r#"{"records":[{"value":1},{"value":2,"partition":9}]}"#)
            .send()
            .await
            .unwrap(),
        404,
        "partition_not_found",
    )
    .await;
    let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(5000));
    problem(post(&big).send().await.unwrap(), 413, "payload_too_large").await;
    problem(
        c.post(s.url("/v1/topics/nope/records"))
            .json(&json!({"value": 1}))
            .send()
            .await
            .unwrap(),
        404,
        "topic_not_found",
    )
    .await;
    problem(
        c.post(&url)
            .header("Idempotency-Key", "")
            .json(&json!({"value": 1}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_idempotency_key",
    )
    .await;
    problem(
        c.post(&url)
            .header("Idempotency-Key", "x".repeat(300))
            .json(&json!({"value": 1}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_idempotency_key",
    )
    .await;
    // NDJSON names the bad line.
    let b = problem(
        c.post(&url)
            .header("content-type", "application/x-ndjson")
            .body("{\"value\":1}\n{\"value\":\n")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_record",
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("line 2"), "{b}");
    // CloudEvents without required attributes, or with a bad version.
    let ce = |body: Value| {
        c.post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(body.to_string())
    };
    problem(
        ce(json!({"specversion": "1.0", "source": "/s", "type": "t"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        ce(json!({"specversion": "1.0", "id": "1", "type": "t"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        ce(json!({"specversion": "1.0", "id": "1", "source": "/s"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        ce(json!({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        ce(json!({"id": "1", "source": "/s", "type": "t"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(ce(json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="})).send().await.unwrap(), 400, "invalid_cloudevent").await;
    problem(
        ce(json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "Bad-Name": "x"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(ce(json!([1])).send().await.unwrap(), 400, "invalid_body").await;
    problem(
        c.post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(r#"[{"specversion":"1.0"}]"#)
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        c.post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-type", "t")
            .body("{}")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cloudevent",
    )
    .await;
    problem(
        c.post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-source", "/s")
            .header("ce-type", "t")
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;

    // A compacted topic keeps one record per key: a record without one is refused,
    // and so is the rest of its request.
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "ct", "partitions": 1, "cleanup": "compact"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b = problem(
        c.post(s.url("/v1/topics/ct/records"))
            .json(&json!({"records": [{"key": "a", "value": 1}, {"value": 2}]}))
            .send()
            .await
            .unwrap(),
        422,
        "key_required",
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("ct"), "{b}");

    for topic in ["t", "ct"] {
        let t = get_json(&c, &s, &format!("/v1/topics/{topic}")).await;
        assert_eq!(t["records"], 0, "no bad request wrote anything to {topic}");
    }
}

#[tokio::test]
async fn fetch_errors() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    for i in 0..3 {
        c.post(s.url("/v1/topics/t/records"))
            .json(&json!({"value": i, "partition": 0}))
            .send()
            .await
            .unwrap();
    }
    let get = |q: &str| c.get(s.url(&format!("/v1/topics/t/partitions/{q}")));
    let b = problem(
        get("0/records?offset=4").send().await.unwrap(),
        416,
        "offset_out_of_range",
    )
    .await;
    assert_eq!(
        (b["start_offset"].as_u64(), b["end_offset"].as_u64()),
        (Some(0), Some(3))
    );
    problem(
        get("2/records").send().await.unwrap(),
        404,
        "partition_not_found",
    )
    .await;
    problem(get("x/records").send().await.unwrap(), 400, "invalid_path").await;
    problem(get("-1/records").send().await.unwrap(), 400, "invalid_path").await;
    for q in [
        "offset=-1",
        "offset=abc",
        "limit=0",
        "limit=10001",
        "limit=x",
        "max_bytes=0",
        "wait_ms=999999999",
        "wait_ms=-5",
    ] {
        problem(
            get(&format!("0/records?{q}")).send().await.unwrap(),
            400,
            "invalid_query",
        )
        .await;
    }
    problem(
        c.get(s.url("/v1/topics/nope/partitions/0/records"))
            .send()
            .await
            .unwrap(),
        404,
        "topic_not_found",
    )
    .await;
}

#[tokio::test]
async fn retention_moves_the_start_and_old_offsets_are_out_of_range() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "r", "partitions": 1, "retention_bytes": 2000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "old", "partitions": 1, "retention_ms": 60000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..100 {
        c.post(s.url("/v1/topics/r/records"))
            .json(&json!({"value": format!("{i:0>80}")}))
            .send()
            .await
            .unwrap();
    }
    // Ten records stamped two minutes ago, then five fresh ones.
    let old_ts = sluice_log::now_ms() - 120_000;
    let old: Vec<Value> = (0..10)
        .map(|i| json!({"value": i, "timestamp": old_ts}))
        .collect();
    c.post(s.url("/v1/topics/old/records"))
        .json(&json!({"records": old}))
        .send()
        .await
        .unwrap();
    let fresh: Vec<Value> = (10..15).map(|i| json!({"value": i})).collect();
    c.post(s.url("/v1/topics/old/records"))
        .json(&json!({"records": fresh}))
        .send()
        .await
        .unwrap();

    // Retention runs in the background; wait (bounded) for it to act.
    let mut size_start = 0;
    let mut time_start = 0;
    for _ in 0..300 {
        let t: Value = c
            .get(s.url("/v1/topics/r"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        size_start = t["partitions"][0]["start_offset"].as_u64().unwrap();
        let t: Value = c
            .get(s.url("/v1/topics/old"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        time_start = t["partitions"][0]["start_offset"].as_u64().unwrap();
        if size_start > 0 && time_start > 0 {
            assert!(t["partitions"][0]["bytes"].as_u64().unwrap() > 0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t: Value = c
        .get(s.url("/v1/topics/r"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(size_start > 0, "size retention never ran: {t}");
    assert!(t["partitions"][0]["bytes"].as_u64().unwrap() <= 2000);
    assert_eq!(
        t["partitions"][0]["end_offset"], 100,
        "offsets are never reused"
    );
    assert_eq!(time_start, 10, "exactly the old records go");

    let b = problem(
        c.get(s.url("/v1/topics/r/partitions/0/records?offset=0"))
            .send()
            .await
            .unwrap(),
        416,
        "offset_out_of_range",
    )
    .await;
    assert_eq!(b["start_offset"].as_u64(), Some(size_start));
    let body: Value = c
        .get(s.url(&format!(
            "/v1/topics/r/partitions/0/records?offset={size_start}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["records"][0]["offset"].as_u64(), Some(size_start));
    assert_eq!(body["records"][0]["value"], format!("{size_start:0>80}"));
}

/// Each problem's `type` is an anchor on `/problems`, a page the server serves,
/// which describes every code.
#[tokio::test]
async fn problem_types_point_at_the_served_codes_page() {
    let s = Server::start();
    let c = client();
    let r = c.get(s.url("/v1/topics/nope")).send().await.unwrap();
    let body = problem(r, 404, "topic_not_found").await;
    let page_url = s.url(body["type"].as_str().unwrap());
    let r = c.get(&page_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    for code in [
        "topic_not_found",
        "stale_generation",
        "unsupported_media_type",
        "insufficient_storage",
    ] {
        assert!(
            page.contains(&format!("id=\"{code}\"")),
            "{code} is not on the page"
        );
    }
}

/// A body type the produce route does not read is a 415 that lists those it does;
/// nothing is written.
#[tokio::test]
async fn produce_with_an_unsupported_content_type_is_415() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    for content_type in ["text/plain", "application/xml", "application/octet-stream"] {
        let r = c
            .post(s.url("/v1/topics/t/records"))
            .header("content-type", content_type)
            .body(r#"{"value":1}"#)
            .send()
            .await
            .unwrap();
        let body = problem(r, 415, "unsupported_media_type").await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("application/json") && detail.contains("application/x-ndjson"),
            "{detail}"
        );
    }
    // curl's default for `-d` is read as the JSON it holds.
    let r = c
        .post(s.url("/v1/topics/t/records"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"value":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = get_json(&c, &s, "/v1/topics/t").await;
    assert_eq!(t["records"], 1, "only the readable request wrote");
}
