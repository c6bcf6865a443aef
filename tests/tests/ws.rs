//! WebSocket subscriptions and Server-Sent Events, with a real WebSocket client
//! against the real binary.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sluice_tests::{Server, Ws, client, create_topic, fetch_all, next_json, rss_bytes};
use tokio_tungstenite::tungstenite::Message;

async fn connect(s: &Server) -> Ws {
    let url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON frame, skipping pings; panics after 20 s of silence.
async fn next(ws: &mut Ws) -> Value {
    next_json(ws).await
}

/// Reads `records` frames of subscription `id` until `n` records arrived.
async fn records(ws: &mut Ws, id: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = next(ws).await;
        if f["type"] == "records" && f["id"] == id {
            out.extend(f["records"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

async fn produce(c: &reqwest::Client, s: &Server, topic: &str, values: Vec<Value>) {
    let records: Vec<Value> = values.into_iter().map(|v| json!({"value": v})).collect();
    let r = c
        .post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn live_tail_replay_and_resume() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    produce(&c, &s, "t", (0..10).map(|i| json!(i)).collect()).await;

    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "live", "topic": "t", "from": "latest"}),
    )
    .await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "replay", "topic": "t", "from": {"offset": {"0": 3}}}),
    )
    .await;
    let mut epoch = None;
    for _ in 0..2 {
        let f = next(&mut ws).await;
        assert_eq!(f["type"], "subscribed", "{f}");
        epoch = Some(f["log_epoch"].clone());
    }
    let replay = records(&mut ws, "replay", 7).await;
    let offsets: Vec<u64> = replay
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (3..10).collect::<Vec<_>>());
    produce(&c, &s, "t", vec![json!("new")]).await;
    let mut got_live = false;
    let mut got_replay = false;
    while !(got_live && got_replay) {
        let f = next(&mut ws).await;
        if f["type"] == "records" {
            assert_eq!(f["records"][0]["value"], "new");
            assert_eq!(f["records"][0]["offset"], 10);
            got_live |= f["id"] == "live";
            got_replay |= f["id"] == "replay";
        }
    }
    drop(ws);

    // Resume: reconnect with the last offset seen + 1; no gap, no duplicate.
    produce(&c, &s, "t", (11..15).map(|i| json!(i)).collect()).await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "r", "topic": "t", "from": {"offset": {"0": 11}}}),
    )
    .await;
    let f = next(&mut ws).await;
    assert_eq!(f["log_epoch"], epoch.unwrap(), "same store, same epoch");
    let resumed = records(&mut ws, "r", 4).await;
    let offsets: Vec<u64> = resumed
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![11, 12, 13, 14]);
    // Unsubscribe stops the flow.
    send(&mut ws, json!({"op": "unsubscribe", "id": "r"})).await;
    assert_eq!(next(&mut ws).await["type"], "unsubscribed");
}

#[tokio::test]
async fn produce_over_websocket() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"op": "produce", "ref": "r1", "topic": "t", "records": [{"key": "a", "value": 1}, {"value_base64": "AAE="}]})).await;
    let f = next(&mut ws).await;
    assert_eq!(f["type"], "produced", "{f}");
    assert_eq!(f["ref"], "r1");
    assert_eq!(f["offsets"].as_array().unwrap().len(), 2);
    let total = fetch_all(&c, &s, "t", 0).await.len() + fetch_all(&c, &s, "t", 1).await.len();
    assert_eq!(total, 2);
    send(
        &mut ws,
        json!({"op": "produce", "ref": 7, "topic": "nope", "records": [{"value": 1}]}),
    )
    .await;
    let f = next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str(), f["ref"].as_i64()),
        (Some("error"), Some("topic_not_found"), Some(7))
    );
    send(
        &mut ws,
        json!({"op": "produce", "ref": "bad", "topic": "t", "records": [{"key": "k"}]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "invalid_record");
}

#[tokio::test]
async fn group_subscription_splits_and_rebalances_when_a_socket_closes() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 4).await;
    let mut a = connect(&s).await;
    let mut b = connect(&s).await;
    send(
        &mut a,
        json!({"op": "subscribe", "id": "g", "topic": "t", "group": "grp", "consumer": "a"}),
    )
    .await;
    send(
        &mut b,
        json!({"op": "subscribe", "id": "g", "topic": "t", "group": "grp", "consumer": "b"}),
    )
    .await;
    // Each side learns its assignment; wait until both hold two partitions.
    let mut assigned_a = wait_assigned(&mut a, 2).await;
    let assigned_b = wait_assigned(&mut b, 2).await;
    let mut all: Vec<u64> = assigned_a
        .iter()
        .chain(assigned_b.iter())
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3]);
    // Records of every partition reach exactly their owner.
    produce(&c, &s, "t", (0..8).map(|i| json!(i)).collect()).await;
    let got_a = records(&mut a, "g", 4).await;
    assert!(
        got_a
            .iter()
            .all(|r| assigned_a.contains(&r["partition"].as_u64().unwrap()))
    );
    // Commit over the socket.
    let last = got_a
        .iter()
        .filter(|r| r["partition"].as_u64() == Some(assigned_a[0]))
        .map(|r| r["offset"].as_u64().unwrap())
        .max()
        .unwrap();
    send(
        &mut a,
        json!({"op": "commit", "id": "g", "offsets": {assigned_a[0].to_string(): last + 1}}),
    )
    .await;
    loop {
        let f = next(&mut a).await;
        if f["type"] == "committed" {
            break;
        }
        assert_ne!(f["type"], "error", "{f}");
    }
    // b's socket closes: a member leaving. a gets all four.
    drop(b);
    assigned_a = wait_assigned(&mut a, 4).await;
    assert_eq!(assigned_a, vec![0, 1, 2, 3]);
    let d: Value = c
        .get(s.url("/v1/groups/grp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["members"].as_array().unwrap().len(), 1);
}

async fn wait_assigned(ws: &mut Ws, n: usize) -> Vec<u64> {
    loop {
        let f = next(ws).await;
        if f["type"] == "assigned" && f["assignment"].as_array().unwrap().len() == n {
            return f["assignment"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
        }
    }
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_break_nothing() {
    let s = Server::start_with(&[
        "--ws-max-subscriptions",
        "3",
        "--ws-max-message-bytes",
        "4096",
    ]);
    let c = client();
    create_topic(&c, &s, "t", 1).await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "ok", "topic": "t", "from": "latest"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("not json".into()), "invalid_frame"),
        (Message::Text("{}".into()), "invalid_frame"),
        (
            Message::Text(r#"{"op":"dance","id":"x"}"#.into()),
            "invalid_frame",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":"x"}"#.into()),
            "invalid_frame",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":"x","topic":"nope"}"#.into()),
            "topic_not_found",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":"x","topic":"t","partitions":[5]}"#.into()),
            "partition_not_found",
        ),
        (
            Message::Text(
                r#"{"op":"subscribe","id":"x","topic":"t","from":{"offset":{"0":99}}}"#.into(),
            ),
            "offset_out_of_range",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":"ok","topic":"t"}"#.into()),
            "duplicate_subscription",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":"x","topic":"t","group":"bad name"}"#.into()),
            "invalid_frame",
        ),
        (
            Message::Text(r#"{"op":"unsubscribe","id":"nope"}"#.into()),
            "unknown_subscription",
        ),
        (
            Message::Text(r#"{"op":"commit","id":"ok","offsets":{"0":1}}"#.into()),
            "unknown_subscription",
        ),
        (
            Message::Text(r#"{"op":"produce","topic":"t","records":"x"}"#.into()),
            "invalid_frame",
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            "binary_not_supported",
        ),
    ];
    for (m, code) in cases {
        ws.send(m.clone()).await.unwrap();
        let f = next(&mut ws).await;
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str()),
            (Some("error"), Some(code)),
            "{m:?}: {f}"
        );
    }
    for i in 0..2 {
        send(
            &mut ws,
            json!({"op": "subscribe", "id": format!("s{i}"), "topic": "t"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["type"], "subscribed");
    }
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s9", "topic": "t"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "too_many_subscriptions");
    // The first subscription still works.
    produce(&c, &s, "t", vec![json!("still")]).await;
    assert_eq!(records(&mut ws, "ok", 1).await[0]["value"], "still");
    // An oversized message closes the socket cleanly with 1009.
    ws.send(Message::Text("x".repeat(10_000).into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let closed = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(closed, Some(1009));
    // The server is fine.
    assert_eq!(c.get(s.url("/livez")).send().await.unwrap().status(), 200);
    // A plain GET is told to upgrade.
    let r = c.get(s.url("/v1/ws")).send().await.unwrap();
    assert_eq!(r.status(), 426);
}

#[tokio::test]
async fn server_sent_events_resume_with_last_event_id() {
    let s = Server::start();
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    produce(&c, &s, "t", (0..10).map(|i| json!(i)).collect()).await;
    let read_events = |resp: reqwest::Response, n: usize| async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut events = Vec::new();
        while events.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .map(str::to_string);
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_string);
                if let (Some(id), Some(data)) = (id, data) {
                    events.push((id, serde_json::from_str::<Value>(&data).unwrap()));
                }
            }
        }
        events.truncate(n);
        events
    };
    let r = c
        .get(s.url("/v1/topics/t/events?partition=1&from=earliest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = read_events(r, 3).await;
    assert_eq!(
        first.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        vec!["1:0", "1:1", "1:2"]
    );
    assert_eq!(first[2].1["offset"], 2);
    let r = c
        .get(s.url("/v1/topics/t/events?partition=1&from=earliest"))
        .header("last-event-id", "1:2")
        .send()
        .await
        .unwrap();
    let resumed = read_events(r, 2).await;
    assert_eq!(resumed[0].0, "1:3", "resumes right after the last event");
    assert_eq!(resumed[1].0, "1:4");
    let r = c
        .get(s.url("/v1/topics/t/events"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A client that never reads while many records are produced: the server's memory
/// stays bounded and another subscriber keeps receiving everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_costs_bounded_memory() {
    const TOTAL: usize = 1_000_000;
    // Small caches, so what the test measures is what a stalled socket costs.
    let s = Server::start_with(&[
        "--rate-limit-requests",
        "0",
        "--rate-limit-records",
        "0",
        "--cache-mb",
        "8",
        "--tail-cache-mb",
        "4",
    ]);
    let c = client();
    create_topic(&c, &s, "t", 2).await;
    // The stalled one subscribes and then never reads its socket.
    let mut stalled = connect(&s).await;
    send(
        &mut stalled,
        json!({"op": "subscribe", "id": "s", "topic": "t", "from": "earliest"}),
    )
    .await;
    let mut live = connect(&s).await;
    send(
        &mut live,
        json!({"op": "subscribe", "id": "l", "topic": "t", "from": "earliest"}),
    )
    .await;
    let before = rss_bytes(s.pid()).unwrap();
    let producer = {
        let (c, url) = (c.clone(), s.url("/v1/topics/t/records"));
        tokio::spawn(async move {
            let pad = "x".repeat(200);
            for _ in 0..TOTAL / 5_000 {
                let records: Vec<Value> = (0..5_000)
                    .map(|i| json!({"value": {"i": i, "pad": pad}}))
                    .collect();
                let r = c
                    .post(&url)
                    .json(&json!({"records": records}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let got = records(&mut live, "l", TOTAL).await;
    assert_eq!(got.len(), TOTAL);
    producer.await.unwrap();
    let after = rss_bytes(s.pid()).unwrap();
    let grown = after.saturating_sub(before);
    eprintln!(
        "server RSS grew by {} MiB while a client stalled",
        grown / (1024 * 1024)
    );
    // 200k records of ~230 bytes are ~46 MB; a per-connection queue would hold them
    // all. The bound here is the cache and the socket buffers.
    assert!(
        grown < 80 * 1024 * 1024,
        "RSS grew by {} MiB",
        grown / (1024 * 1024)
    );
    drop(stalled);
}

/// With an origin allow-list, a browser page from a listed origin or from the server
/// itself (the dashboard) may open a socket; any other origin gets 403.
#[tokio::test]
async fn websocket_origins_allow_the_list_and_the_server_itself() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start_with(&["--ws-origin", "https://app.example"]);
    let url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
    let open = |origin: String| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert!(open("https://app.example".into()).await.is_ok());
    assert!(
        open(s.base.clone()).await.is_ok(),
        "the dashboard's own origin"
    );
    match open("https://evil.example".into()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}
