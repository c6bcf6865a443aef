//! The benchmark: starts the release `sluice` binary and drives it over loopback,
//! reporting every figure next to a ceiling measured in the same run, because the
//! machines it runs on are shared and noisy.
//!
//! Ceilings:
//! - HTTP: a bare axum server (this program, re-executed as `bench ceiling-http`)
//!   that reads the same request bodies and answers 200 without storing anything;
//! - storage: raw redb appends of the same records in this process, committed
//!   durably in batches of 10,000;
//! - scan: raw redb range reads of 1,000 records from a 1M-record table.
//!
//! Run: `cargo run --release -p sluice-tests --bin bench` (add `-- --seconds 3`
//! for a shorter run, `-- --only N` for one scenario, `-- --sdk-seconds N` for
//! a shorter scenario 10 than its 10 minutes). `-- --kafka` measures the Kafka engine instead, against the
//! cluster `SLUICE_KAFKA_BOOTSTRAP` names (see `kafka.rs`).

mod kafka;
mod processors;
mod sdk;
mod sinks;
mod sources;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde_json::{Value, json};
use sluice_tests::{Server, peak_rss_bytes, rss_bytes};

const VALUE_BYTES: usize = 200;
/// The ceilings use the page cache size the server runs with by default.
const CACHE_BYTES: usize = 48 * 1024 * 1024;
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ceiling-http") {
        return ceiling_http_server();
    }
    if args.get(1).map(String::as_str) == Some("ceiling-ws") {
        return ceiling_ws_server();
    }
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?;
    let sdk_seconds: u64 = args
        .iter()
        .position(|a| a == "--sdk-seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "--kafka") {
        let bootstrap = std::env::var("SLUICE_KAFKA_BOOTSTRAP")
            .context("--kafka needs SLUICE_KAFKA_BOOTSTRAP (tests/kafka/cluster start)")?;
        return runtime.block_on(kafka::run(Duration::from_secs(seconds), &bootstrap, only));
    }
    runtime.block_on(run(Duration::from_secs(seconds), only, sdk_seconds))
}

/// A 200-byte JSON value.
fn value_200(i: u64) -> Value {
    let s = format!("{i:0>20}");
    let pad = VALUE_BYTES - 2 - s.len() - 14;
    json!({"id": s, "p": "x".repeat(pad)})
}

#[derive(Default)]
struct Stats {
    requests: u64,
    records: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    fn pct(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// One request of a [`drive`] loop: the `i`th of the run, the `n`th of `client`.
#[derive(Clone, Copy)]
struct Turn {
    i: u64,
    client: u64,
    n: u64,
}

/// Runs `clients` loops of `request` for `duration`, each request counting
/// `records_per_request` records of `bytes_per_request` payload bytes.
async fn drive<F, Fut>(
    clients: usize,
    duration: Duration,
    records_per_request: u64,
    bytes_per_request: u64,
    request: F,
) -> Stats
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let request = request.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0u64;
            let mut n = 0;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let turn = Turn { i, client, n };
                n += 1;
                if request(turn).await {
                    ok += 1;
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            (ok, lat)
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        let (ok, lat) = t.await.expect("client task");
        stats.requests += ok;
        stats.latencies_us.extend(lat);
    }
    stats.elapsed = start.elapsed();
    stats.records = stats.requests * records_per_request;
    stats.bytes = stats.requests * bytes_per_request;
    stats
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client")
}

async fn produce_load(
    base: &str,
    path: &str,
    clients: usize,
    duration: Duration,
    records_per_request: usize,
) -> Stats {
    let c = http_client();
    let url = format!("{base}{path}");
    // Bodies are prepared up front so the load generator measures the server.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..64u64)
            .map(|j| {
                let body = if records_per_request == 1 {
                    json!({"value": value_200(j)})
                } else {
                    json!({"records": (0..records_per_request as u64).map(|i| json!({"value": value_200(j * 10_000 + i)})).collect::<Vec<_>>()})
                };
                bytes::Bytes::from(serde_json::to_vec(&body).unwrap())
            })
            .collect(),
    );
    drive(
        clients,
        duration,
        records_per_request as u64,
        (records_per_request * VALUE_BYTES) as u64,
        move |turn: Turn| {
            let c = c.clone();
            let url = url.clone();
            let body = bodies[(turn.i % 64) as usize].clone();
            async move {
                match c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await
}

/// Creates topics (name, partitions) on the server.
async fn create_topics(c: &reqwest::Client, server: &Server, topics: &[(&str, u32)]) -> Result<()> {
    for (name, partitions) in topics {
        let r = c
            .post(server.url("/v1/topics"))
            .json(&json!({"name": name, "partitions": partitions}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create topic {name}");
    }
    Ok(())
}

/// 4 clients fetching 1,000 records per request from the partition at `url` (which
/// holds `total`), each reading its quarter of it in order, as consumers of a
/// partition read (and as the Kafka ceiling reads).
async fn fetch_load(c: &reqwest::Client, url: String, total: u64, duration: Duration) -> Stats {
    let c = c.clone();
    let quarter = total / 4 / 1000;
    let mut s = drive(4, duration, 1000, 0, move |turn: Turn| {
        let c = c.clone();
        let url = format!(
            "{url}?offset={}&limit=1000&max_bytes=10000000",
            (turn.client * quarter + turn.n % quarter) * 1000
        );
        async move {
            match c.get(&url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    s.bytes = s.records * VALUE_BYTES as u64;
    s
}

/// Waits until the table at `url` is live with no lag (at most 10 minutes).
async fn table_live(c: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let t: Value = c.get(url).send().await?.json().await?;
        if t["lag"] == 0 && t["state"] == "live" {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the table did not fill: {t}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Produces `total` records of 200 bytes to `url`, 10,000 per request, 4 at a time.
async fn load(c: &reqwest::Client, url: &str, total: u64) -> Result<()> {
    let records: Vec<Value> = (0..10_000u64)
        .map(|i| json!({"value": value_200(i)}))
        .collect();
    let body: bytes::Bytes = serde_json::to_vec(&json!({ "records": records }))?.into();
    let loaded = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..4 {
        let (c, url, body, loaded) = (c.clone(), url.to_string(), body.clone(), loaded.clone());
        loaders.push(tokio::spawn(async move {
            while loaded.fetch_add(10_000, Ordering::Relaxed) < total {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("load");
                assert!(r.status().is_success(), "load: {}", r.status());
            }
        }));
    }
    for l in loaders {
        l.await?;
    }
    Ok(())
}

/// Produces `total` records, 1,000 a request, 4 requests at a time, from 8
/// request bodies made up front (record `n` of body `j` is `record(j * 1000 +
/// n)`); returns records/s.
async fn post_batches(
    c: &reqwest::Client,
    url: &str,
    total: u64,
    record: impl Fn(u64) -> Value,
) -> Result<f64> {
    let bodies: Vec<bytes::Bytes> = (0..8u64)
        .map(|j| {
            let records: Vec<Value> = (0..1000).map(|i| record(j * 1000 + i)).collect();
            serde_json::to_vec(&json!({ "records": records }))
                .unwrap()
                .into()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, url, bodies, next) = (c.clone(), url.to_string(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1000, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[(n / 1000 % 8) as usize].clone())
                    .send()
                    .await
                    .expect("load");
                assert!(r.status().is_success(), "load: {}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Scenario 4: four members of one group drain `total` records from an 8-partition
/// topic with `limit=1000` and a commit per poll (`auto_commit`). Returns records/s.
async fn drain_group(c: &reqwest::Client, base: &str, total: u64) -> Result<f64> {
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut members = Vec::new();
    for m in 0..4 {
        let (c, consumed) = (c.clone(), consumed.clone());
        let url = format!(
            "{base}/v1/groups/drainers/topics/drain/records?consumer=m{m}&limit=1000&max_bytes=10000000&auto_commit=true&wait_ms=200"
        );
        members.push(tokio::spawn(async move {
            while consumed.load(Ordering::Relaxed) < total {
                let v: Value = c
                    .get(&url)
                    .send()
                    .await
                    .expect("poll")
                    .json()
                    .await
                    .expect("poll body");
                let n = v["records"].as_array().map_or(0, Vec::len) as u64;
                consumed.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for m in members {
        m.await?;
    }
    Ok(consumed.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Scenario 4b: with four members long-polling, one leaves; the time until the other
/// three's answers cover all 8 partitions. Returns the settle times in ms.
async fn rebalance_settle(c: &reqwest::Client, base: &str, rounds: usize) -> Result<Vec<f64>> {
    use std::sync::Mutex;
    let mut times = Vec::new();
    for round in 0..rounds {
        let group = format!("settle{round}");
        // Per member: when its last poll answered, and the assignment it carried.
        type Seen = Vec<(Instant, Vec<u64>)>;
        let latest: Arc<Mutex<Seen>> = Arc::new(Mutex::new(vec![(Instant::now(), Vec::new()); 4]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for m in 0..4usize {
            let (c, latest, stop) = (c.clone(), latest.clone(), stop.clone());
            let url = format!(
                "{base}/v1/groups/{group}/topics/drain/records?consumer=m{m}&limit=1&reset=latest&wait_ms=2000"
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = c.get(&url).send().await else {
                        break;
                    };
                    let Ok(v) = r.json::<Value>().await else {
                        break;
                    };
                    let a: Vec<u64> = v["assignment"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default();
                    latest.lock().unwrap()[m] = (Instant::now(), a);
                    if m == 3 {
                        // The leaver polls until it has seen the full group once.
                        if latest.lock().unwrap().iter().all(|(_, a)| a.len() == 2) {
                            break;
                        }
                    }
                }
            }));
        }
        // Wait until the four hold two partitions each.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !latest.lock().unwrap().iter().all(|(_, a)| a.len() == 2) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "group never settled at four members"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tasks.pop().expect("leaver").await?;
        let t0 = Instant::now();
        let r = c
            .delete(format!("{base}/v1/groups/{group}/consumers/m3"))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "leave: {}", r.status());
        // Settled when the members that remain hold every partition between them,
        // each as its latest answer says: a member whose assignment did not change
        // is not woken (its generation holds), so its answer from before counts.
        loop {
            {
                let l = latest.lock().unwrap();
                let mut all: Vec<u64> =
                    l[..3].iter().flat_map(|(_, a)| a.iter().copied()).collect();
                all.sort_unstable();
                if all == (0..8).collect::<Vec<u64>>() {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "rebalance never settled"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
    }
    Ok(times)
}

/// The bare HTTP ceiling: reads the body, answers 200 with a produce-sized answer.
fn ceiling_http_server() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/v1/topics/{topic}/records",
                axum::routing::post(|body: bytes::Bytes| async move {
                    let _ = body.len();
                    (
                        [("content-type", "application/json")],
                        r#"{"offsets":[{"partition":0,"offset":0}]}"#,
                    )
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The bare WebSocket ceiling: every connection is sent `FRAMES` copies of a
/// `records` frame of 500 records, shaped like Sluice's, as fast as it takes them,
/// each batch flushed once.
fn ceiling_ws_server() -> Result<()> {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::SinkExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let frame = Arc::new(records_frame_like(500));
        let app = axum::Router::new().route(
            "/v1/ws",
            axum::routing::get(move |ws: WebSocketUpgrade| {
                let frame = frame.clone();
                async move {
                    ws.on_upgrade(move |mut socket| async move {
                        for i in 0..FAN_FRAMES {
                            let m = Message::Text(frame.as_str().into());
                            let sent = if i % 8 == 7 {
                                socket.send(m).await
                            } else {
                                socket.feed(m).await
                            };
                            if sent.is_err() {
                                return;
                            }
                        }
                        let _ = socket.flush().await;
                        let _ = socket.close().await;
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Frames a ceiling connection sends; times 500 records each.
const FAN_FRAMES: usize = 200;

/// A `records` frame of `n` records of the benchmark's 200-byte values.
fn records_frame_like(n: usize) -> String {
    let records: Vec<Value> = (0..n as u64)
        .map(|i| json!({"partition": 0, "offset": i, "timestamp": 1_764_000_000_000u64, "value": value_200(i)}))
        .collect();
    json!({"type": "records", "id": "s", "topic": "fan", "partition": 0, "next_offset": n, "records": records}).to_string()
}

/// Counts the records in a `records` frame without parsing it.
fn count_records(frame: &str) -> usize {
    frame.matches("\"offset\":").count()
}

/// Scenario 5a: `subs` WebSocket subscribers of one topic while a producer writes
/// `rate` records/s for `duration`; returns (delivered, expected, p50 ms, p99 ms).
async fn ws_fanout(
    base: &str,
    subs: usize,
    rate: u64,
    duration: Duration,
) -> Result<(u64, u64, f64, f64)> {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::Mutex;
    use tokio_tungstenite::tungstenite::Message;
    let ws_url = format!("{}/v1/ws", base.replace("http://", "ws://"));
    let acks: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut sockets = Vec::new();
    for i in 0..subs {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.clone()).await?;
        ws.send(Message::Text(
            json!({"op": "subscribe", "id": "s", "topic": "fan", "from": "latest"})
                .to_string()
                .into(),
        ))
        .await?;
        // Wait for `subscribed`.
        while let Some(m) = ws.next().await {
            if matches!(m?, Message::Text(_)) {
                break;
            }
        }
        let (delivered, acks, latencies) = (delivered.clone(), acks.clone(), latencies.clone());
        // One subscriber in fifty parses its frames to time them; the rest count.
        let timed = i % 50 == 0;
        sockets.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let now = Instant::now();
                if timed {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    let acks = acks.lock().unwrap();
                    let mut lat = latencies.lock().unwrap();
                    for r in v["records"].as_array().into_iter().flatten() {
                        let o = r["offset"].as_u64().unwrap_or(0);
                        // A record can arrive before its producer saw the answer.
                        let ms = acks
                            .get(&o)
                            .map_or(0, |a| now.saturating_duration_since(*a).as_micros() as u32);
                        lat.push(ms);
                    }
                }
                delivered.fetch_add(count_records(&t) as u64, Ordering::Relaxed);
            }
        }));
    }
    // The producer: `rate` records/s as 10-record requests, offsets known from answers.
    let c = http_client();
    let url = format!("{base}/v1/topics/fan/records");
    let per_request = 10u64;
    let body: bytes::Bytes = serde_json::to_vec(&json!({"records": (0..per_request).map(|i| json!({"value": value_200(i)})).collect::<Vec<_>>()}))?.into();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_request / rate));
    let start = Instant::now();
    let mut produced = 0u64;
    let mut requests = Vec::new();
    // Requests go out on the clock, not one after another, so a slow answer does
    // not lower the produce rate.
    while start.elapsed() < duration {
        tick.tick().await;
        let (c, url, body, acks) = (c.clone(), url.clone(), body.clone(), acks.clone());
        requests.push(tokio::spawn(async move {
            let r: Value = c
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?
                .json()
                .await?;
            let now = Instant::now();
            let mut a = acks.lock().unwrap();
            for o in r["offsets"].as_array().into_iter().flatten() {
                a.insert(o["offset"].as_u64().unwrap_or(0), now);
            }
            Ok::<_, anyhow::Error>(())
        }));
        produced += per_request;
    }
    for r in requests {
        r.await??;
    }
    let expected = produced * subs as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in sockets {
        s.abort();
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    Ok((
        delivered.load(Ordering::Relaxed),
        expected,
        pct(0.5),
        pct(0.99),
    ))
}

/// Scenario 5b: `subs` subscribers each read `per_sub` records as fast as they can,
/// from Sluice (a backlog read from `earliest`) or from the bare ceiling. Returns
/// records/s delivered over all subscribers.
async fn ws_max_rate(ws_url: &str, subs: usize, per_sub: u64, subscribe: bool) -> Result<f64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..subs {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.to_string()).await?;
        if subscribe {
            ws.send(Message::Text(
                json!({"op": "subscribe", "id": "s", "topic": "backlog", "from": "earliest"})
                    .to_string()
                    .into(),
            ))
            .await?;
        }
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while n < per_sub {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => n += count_records(&t) as u64,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Scenario 6: a count+sum state table over `total` events in 8 partitions:
/// backfill rate, apply lag under steady produce, and point-get latency.
/// `pay` names the source topic and the table (`<pay>_sums`); `label` starts the
/// first line.
pub(crate) async fn tables_bench(
    c: &reqwest::Client,
    base: &str,
    total: u64,
    duration: Duration,
    pay: &str,
    label: &str,
) -> Result<Vec<String>> {
    let sums = format!("{pay}_sums").replace('-', "_");
    let r = c
        .post(format!("{base}/v1/topics"))
        .json(&json!({"name": pay, "partitions": 8}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create pay");
    // 1,000 customers; 10,000 events a request.
    let records: Vec<Value> = (0..10_000u64)
        .map(|i| json!({"value": {"customer_id": format!("c{}", i % 1000), "amount": i % 100}}))
        .collect();
    let body: bytes::Bytes = serde_json::to_vec(&json!({ "records": records }))?.into();
    let mut loaded = 0;
    while loaded < total {
        let r = c
            .post(format!("{base}/v1/topics/{pay}/records"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "load pay");
        loaded += 10_000;
    }
    let start = Instant::now();
    let r = c
        .post(format!("{base}/v1/tables"))
        .json(&json!({"sql": format!("CREATE TABLE {sums} AS SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total FROM {pay} GROUP BY customer_id")}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create table: {}", r.text().await?);
    table_live(c, &format!("{base}/v1/tables/{sums}")).await?;
    let backfill = total as f64 / start.elapsed().as_secs_f64();
    let mut lines = vec![format!(
        "{label} count+sum table over {total} events, 8 partitions: backfill {backfill:.0} events/s (target ≥ 300000)"
    )];

    // Apply lag: produce 100-event requests at 5,000 events/s; after each answer, ask
    // the table for a row with `after=` those offsets (it answers once applied).
    let mut lags = Vec::new();
    let small: bytes::Bytes = serde_json::to_vec(&json!({"records": (0..100u64).map(|i| json!({"value": {"customer_id": format!("c{i}"), "amount": 1}})).collect::<Vec<_>>()}))?.into();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let until = Instant::now() + duration;
    let mut waits = Vec::new();
    while Instant::now() < until {
        tick.tick().await;
        let (c, base, small) = (c.clone(), base.to_string(), small.clone());
        let (pay, sums) = (pay.to_string(), sums.clone());
        waits.push(tokio::spawn(async move {
            let r: Value = c
                .post(format!("{base}/v1/topics/{pay}/records"))
                .header("content-type", "application/json")
                .body(small)
                .send()
                .await?
                .json()
                .await?;
            let acked = Instant::now();
            let after: Vec<String> = r["offsets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| format!("{}:{}", o["partition"], o["offset"]))
                .collect();
            // The highest offset per partition is enough.
            let mut max: HashMap<String, u64> = HashMap::new();
            for a in after {
                let (p, o) = a.split_once(':').expect("p:o");
                let o: u64 = o.parse()?;
                let e = max.entry(p.to_string()).or_default();
                *e = (*e).max(o);
            }
            let q: Vec<String> = max.iter().map(|(p, o)| format!("{p}:{o}")).collect();
            let r = c
                .get(format!(
                    "{base}/v1/tables/{sums}/rows/c1?after={}",
                    q.join(",")
                ))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 200, "read-your-writes: {}", r.status());
            Ok::<_, anyhow::Error>(acked.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    for w in waits {
        lags.push(w.await??);
    }
    lags.sort_by(f64::total_cmp);
    let p = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    lines.push(format!(
        "   apply lag at 5000 events/s (produce answer to row reflecting it): p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms)",
        p(0.5),
        p(0.99)
    ));

    // Point gets at 5,000/s.
    let mut tick = tokio::time::interval(Duration::from_micros(200));
    let until = Instant::now() + duration;
    let mut gets = Vec::new();
    let mut i = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let (c, url) = (
            c.clone(),
            format!("{base}/v1/tables/{sums}/rows/c{}", i % 1000),
        );
        i += 1;
        gets.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.get(url).send().await?;
            anyhow::ensure!(r.status() == 200, "get: {}", r.status());
            r.bytes().await?;
            Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut lat = Vec::new();
    for g in gets {
        lat.push(g.await??);
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    lines.push(format!(
        "   point gets at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms (target p99 < 2 ms at 5000/s)",
        lat.len() as f64 / duration.as_secs_f64(),
        p(0.5),
        p(0.99)
    ));
    Ok(lines)
}

struct Ceiling(std::process::Child, String);

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ceiling(mode: &str) -> Result<Ceiling> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(mode)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .context("ceiling address")?
        .to_string();
    Ok(Ceiling(child, base))
}

/// Raw redb: append `total` records of the scenario's size, durably, in batches of
/// 10,000. Returns records/s.
fn storage_ceiling(path: &std::path::Path, total: u64) -> Result<f64> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)?;
    let value = serde_json::to_vec(&value_200(0))?;
    let start = Instant::now();
    let mut next = 0u64;
    while next < total {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(RAW)?;
            let mut cursor = t.upper_bound_mut(std::ops::Bound::<u64>::Unbounded)?;
            for k in next..(next + 10_000).min(total) {
                cursor.insert_before(k, value.as_slice())?;
            }
            cursor.close()?;
        }
        txn.commit()?;
        next += 10_000;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Raw redb range reads of 1,000 records from the table `storage_ceiling` wrote.
fn scan_ceiling(path: &std::path::Path, total: u64, duration: Duration) -> Result<f64> {
    let db = Database::builder().set_cache_size(CACHE_BYTES).open(path)?;
    let start = Instant::now();
    let mut records = 0u64;
    let mut from = 0u64;
    let mut sink = 0usize;
    while start.elapsed() < duration {
        let txn = db.begin_read()?;
        let t = txn.open_table(RAW)?;
        for item in t.range(from..from + 1000)? {
            let (_, v) = item?;
            sink = sink.wrapping_add(v.value().len());
            records += 1;
        }
        from = (from + 1000) % (total - 1000);
    }
    std::hint::black_box(sink);
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

/// The run with the median rate.
fn median(mut runs: Vec<Stats>) -> Stats {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
}

struct Row {
    scenario: String,
    rate: f64,
    mbps: f64,
    p50: f64,
    p99: f64,
    ceiling: f64,
    target: f64,
}

async fn run(duration: Duration, only: Option<u32>, sdk_seconds: u64) -> Result<()> {
    let want = |n: u32| only.is_none_or(|o| o == n);
    let machine = machine();
    eprintln!("machine: {machine}; {duration:?} per scenario");
    let mut rows = Vec::new();
    let tmp = tempfile::tempdir()?;
    run_embedded(duration, sdk_seconds, want, machine, &mut rows, tmp.path()).await
}

/// The machine's cores and processor.
fn machine() -> String {
    format!(
        "{} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |s| s.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    )
}

async fn run_embedded(
    duration: Duration,
    sdk_seconds: u64,
    want: impl Fn(u32) -> bool,
    machine: String,
    rows: &mut Vec<Row>,
    tmp: &std::path::Path,
) -> Result<()> {
    // Ceilings that need no server.
    let raw = tmp.join("raw.redb");
    let total = 1_000_000u64;
    let (storage, scan) = if want(2) || want(3) {
        let storage = storage_ceiling(&raw, total)?;
        eprintln!("storage ceiling: {storage:.0} records/s");
        let scan = scan_ceiling(&raw, total, duration)?;
        eprintln!("scan ceiling: {scan:.0} records/s");
        (storage, scan)
    } else {
        (0.0, 0.0)
    };

    let server = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = http_client();
    create_topics(&c, &server, &[("single", 8), ("batch", 8), ("scan", 1)]).await?;
    let ceiling = start_ceiling("ceiling-http")?;
    let mut peak = 0u64;
    let mut sample = |pid: u32| {
        peak = peak.max(rss_bytes(pid).unwrap_or(0));
    };

    // Scenario 1: single-record produce vs the HTTP ceiling.
    // Ceiling and server alternate over three rounds and the median round of each
    // is reported, so a burst of noise on the shared machine does not decide the ratio.
    for clients in [64, 256].into_iter().filter(|_| want(1)) {
        let mut https = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..3 {
            https
                .push(produce_load(&ceiling.1, "/v1/topics/x/records", clients, duration, 1).await);
            ours.push(
                produce_load(
                    &server.base,
                    "/v1/topics/single/records",
                    clients,
                    duration,
                    1,
                )
                .await,
            );
            sample(server.pid());
        }
        let mut http = median(https);
        let mut s = median(ours);
        rows.push(Row {
            scenario: format!("1. single-record produce, {clients} clients"),
            rate: s.rate(),
            mbps: s.mbps(),
            p50: s.pct(0.5),
            p99: s.pct(0.99),
            ceiling: http.rate(),
            target: 0.5,
        });
        eprintln!(
            "  http ceiling {clients}: {:.0} req/s p50 {:.2} ms p99 {:.2} ms",
            http.rate(),
            http.pct(0.5),
            http.pct(0.99)
        );
    }

    // Scenario 2: batched produce vs the storage ceiling.
    if want(2) {
        let mut s = produce_load(&server.base, "/v1/topics/batch/records", 8, duration, 1000).await;
        sample(server.pid());
        rows.push(Row {
            scenario: "2. batched produce, 1000 x 200 B, 8 clients".into(),
            rate: s.rate(),
            mbps: s.mbps(),
            p50: s.pct(0.5),
            p99: s.pct(0.99),
            ceiling: storage,
            target: 0.6,
        });
    }

    // Scenario 3: fetch 1,000 records per request from a 1M-record partition.
    if want(3) {
        eprintln!("loading 1M records into one partition ...");
        load(&c, &server.url("/v1/topics/scan/records"), total).await?;
        sample(server.pid());
        let fetch_base = server.url("/v1/topics/scan/partitions/0/records");
        let mut s = fetch_load(&c, fetch_base, total, duration).await;
        sample(server.pid());
        rows.push(Row {
            scenario: "3. fetch 1000 records/request, 1M-record partition, 4 clients".into(),
            rate: s.rate(),
            mbps: s.mbps(),
            p50: s.pct(0.5),
            p99: s.pct(0.99),
            ceiling: scan,
            target: 0.4,
        });
    }
    // Scenario 4: a consumer group draining 1M records, and rebalance settle time.
    let mut group_lines = Vec::new();
    if want(4) {
        let r = c
            .post(server.url("/v1/topics"))
            .json(&json!({"name": "drain", "partitions": 8}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create drain topic");
        eprintln!("loading 1M records into 8 partitions ...");
        load(&c, &server.url("/v1/topics/drain/records"), total).await?;
        let rate = drain_group(&c, &server.base, total).await?;
        sample(server.pid());
        group_lines.push(format!(
            "4. group of 4 draining 1M records (8 partitions, limit=1000, commit per poll): {rate:.0} records/s (target ≥ 500000)"
        ));
        let mut settle = rebalance_settle(&c, &server.base, 5).await?;
        settle.sort_by(f64::total_cmp);
        group_lines.push(format!(
            "   rebalance settle after a leave, 5 rounds: median {:.1} ms, max {:.1} ms (target < 100 ms)",
            settle[settle.len() / 2],
            settle[settle.len() - 1]
        ));
        sample(server.pid());
    }
    // Scenario 5: WebSocket fan-out.
    if want(5) {
        for (name, parts) in [("fan", 1), ("backlog", 1)] {
            let r = c
                .post(server.url("/v1/topics"))
                .json(&json!({"name": name, "partitions": parts}))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "create {name}");
        }
        let (delivered, expected, p50, p99) = ws_fanout(&server.base, 1000, 1000, duration).await?;
        sample(server.pid());
        group_lines.push(format!(
            "5a. 1000 WebSocket subscribers, 1000 records/s produced: {delivered} of {expected} deliveries ({:.0}/s), produce-ack to receipt p50 {p50:.1} ms, p99 {p99:.1} ms (target p99 < 50 ms)",
            delivered as f64 / duration.as_secs_f64()
        ));
        let per_sub = (FAN_FRAMES * 500) as u64;
        load(&c, &server.url("/v1/topics/backlog/records"), per_sub).await?;
        let ws_ceiling = start_ceiling("ceiling-ws")?;
        let bare = ws_max_rate(
            &format!("{}/v1/ws", ws_ceiling.1.replace("http://", "ws://")),
            100,
            per_sub,
            false,
        )
        .await?;
        let ours = ws_max_rate(
            &format!("{}/v1/ws", server.base.replace("http://", "ws://")),
            100,
            per_sub,
            true,
        )
        .await?;
        sample(server.pid());
        group_lines.push(format!(
            "5b. max delivery to 100 WebSocket subscribers: {ours:.0} records/s vs bare axum broadcast {bare:.0} records/s = {:.0}% (target ≥ 50%)",
            100.0 * ours / bare
        ));
    }
    if want(6) {
        group_lines.extend(tables_bench(&c, &server.base, total, duration, "pay", "6.").await?);
        sample(server.pid());
    }
    if want(7) {
        group_lines.extend(sinks::sinks_bench(duration).await?);
    }
    if want(8) {
        group_lines.extend(processors::processors_bench(duration).await?);
    }
    if want(9) {
        group_lines.extend(sources::sources_bench(duration).await?);
    }
    if want(10) {
        group_lines.extend(sdk::sdk_bench(sdk_seconds).await?);
    }
    let peak = peak_rss_bytes(server.pid()).unwrap_or(peak);
    print_rows(&machine, rows);
    for l in &group_lines {
        println!("{l}");
    }
    println!(
        "\nserver peak RSS: {:.0} MiB (target < 256 MiB)",
        peak as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Prints the table of figures next to their ceilings.
fn print_rows(machine: &str, rows: &[Row]) {
    println!("\nmachine: {machine}\n");
    println!(
        "| scenario | records/s | MB/s | p50 ms | p99 ms | ceiling records/s | ratio | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0}% | {}{:.0}% |",
            r.scenario,
            r.rate,
            r.mbps,
            r.p50,
            r.p99,
            r.ceiling,
            100.0 * r.rate / r.ceiling,
            if r.rate / r.ceiling >= r.target {
                "met, ≥"
            } else {
                "MISSED, ≥"
            },
            r.target * 100.0
        );
    }
}
