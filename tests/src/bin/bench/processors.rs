//! Scenario 8: processors.
//!
//! - 8a. backfill of a filter (half the records pass) + projection + re-key
//!   processor over 1M records in 8 partitions (target ≥ 200k input
//!   records/s), next to the batched produce rate of the same records in the
//!   same run (the processor reads, derives and appends each one);
//! - 8b. live produce to output-readable latency at 5,000 records/s, the
//!   output read by long-polling fetches (target p99 < 100 ms, including the
//!   wait for durability);
//! - 8c. backfill of a stream–table join against a 1M-row table, 1M records
//!   (target ≥ 150k input records/s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use sluice_tests::Server;

use crate::http_client;

fn server() -> Server {
    Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"])
}

async fn post(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> Result<()> {
    let r = c.post(s.url(path)).json(&body).send().await?;
    anyhow::ensure!(r.status().is_success(), "{path}: {}", r.text().await?);
    Ok(())
}

/// An order of about 200 bytes; every other one passes `amount > 1000`.
fn order(i: u64) -> Value {
    json!({"key": format!("o{i}"), "value": {"id": i, "customer_id": format!("c{}", i * 7919 % 1_000_000),
        "amount": (i % 2) * 2000 + 10, "note": "x".repeat(120)}})
}

/// Produces `total` orders, 1,000 a request, 4 requests at a time; returns records/s.
async fn load_orders(c: &reqwest::Client, url: &str, total: u64) -> Result<f64> {
    crate::post_batches(c, url, total, order).await
}

/// Waits until a processor has read `total` records; returns when it had.
async fn processed(c: &reqwest::Client, s: &Server, name: &str, total: u64) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let info: Value = c
            .get(s.url(&format!("/v1/processors/{name}")))
            .send()
            .await?
            .json()
            .await?;
        if info["counts"]["read"].as_u64() >= Some(total) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(info["state"] == "running", "{name} stopped: {info}");
        anyhow::ensure!(Instant::now() < deadline, "{name} did not finish: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn processors_bench(duration: Duration) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let c = http_client();
    let definition = |name: &str, source: &str| {
        json!({"name": name, "source": source, "filter": "amount > 1000",
               "select": {"id": "id", "customer_id": "customer_id", "cents": "amount * 100"},
               "key": "customer_id"})
    };

    // 8a: backfill.
    {
        let s = server();
        post(
            &c,
            &s,
            "/v1/topics",
            json!({"name": "orders8", "partitions": 8}),
        )
        .await?;
        eprintln!("loading 1M orders ...");
        let total = 1_000_000;
        let produce = load_orders(&c, &s.url("/v1/topics/orders8/records"), total).await?;
        let start = Instant::now();
        post(&c, &s, "/v1/processors", definition("big8", "orders8")).await?;
        let done = processed(&c, &s, "big8", total).await?;
        let rate = total as f64 / done.duration_since(start).as_secs_f64();
        lines.push(format!(
            "8a. processor backfill (filter 50%, projection, re-key) over 1M records in 8 partitions: {rate:.0} input records/s (target ≥ 200000); batched produce of the same records: {produce:.0} records/s"
        ));
    }

    // 8c: a join against a 1M-row table.
    {
        let s = server();
        post(
            &c,
            &s,
            "/v1/topics",
            json!({"name": "cust8", "partitions": 8}),
        )
        .await?;
        post(
            &c,
            &s,
            "/v1/topics",
            json!({"name": "ord8", "partitions": 8}),
        )
        .await?;
        eprintln!("loading 1M customers ...");
        let total = 1_000_000u64;
        let bodies: Vec<Value> = (0..total / 1000)
            .map(|j| {
                json!({"records": (0..1000).map(|i| {
                    let n = j * 1000 + i;
                    json!({"key": format!("c{n}"), "value": {"id": format!("c{n}"), "name": format!("customer {n}"), "tier": n % 3}})
                }).collect::<Vec<_>>()})
            })
            .collect();
        for chunk in bodies.chunks(4) {
            let sends = chunk
                .iter()
                .map(|b| c.post(s.url("/v1/topics/cust8/records")).json(b).send());
            for r in futures_util::future::join_all(sends).await {
                anyhow::ensure!(r?.status().is_success(), "load customers");
            }
        }
        post(
            &c,
            &s,
            "/v1/tables",
            json!({"name": "cust8", "source": "cust8", "key": "key"}),
        )
        .await?;
        crate::table_live(&c, &s.url("/v1/tables/cust8")).await?;
        eprintln!("loading 1M orders ...");
        load_orders(&c, &s.url("/v1/topics/ord8/records"), total).await?;
        let start = Instant::now();
        post(
            &c,
            &s,
            "/v1/processors",
            json!({"sql": "CREATE STREAM named8 AS SELECT o.id AS id, amount, c.name AS customer, c.tier AS tier FROM ord8 o LEFT JOIN cust8 c ON o.customer_id = c.id"}),
        )
        .await?;
        let done = processed(&c, &s, "named8", total).await?;
        let rate = total as f64 / done.duration_since(start).as_secs_f64();
        lines.push(format!(
            "8c. processor backfill of a stream-table join against a 1M-row table, 1M records: {rate:.0} input records/s (target ≥ 150000)"
        ));
    }

    // 8b: live latency at 5,000 records/s.
    {
        let s = server();
        post(
            &c,
            &s,
            "/v1/topics",
            json!({"name": "live8", "partitions": 8}),
        )
        .await?;
        let mut def = definition("out8", "live8");
        def["select"]["sent_us"] = json!("sent_us");
        post(&c, &s, "/v1/processors", def).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for p in 0..8 {
            let (c, base, stop, latencies) =
                (c.clone(), s.base.clone(), stop.clone(), latencies.clone());
            readers.push(tokio::spawn(async move {
                let mut offset = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!(
                        "{base}/v1/topics/out8/partitions/{p}/records?offset={offset}&wait_ms=500"
                    );
                    let Ok(r) = c.get(url).send().await else {
                        continue;
                    };
                    let Ok(body) = r.json::<Value>().await else {
                        continue;
                    };
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros() as u64;
                    let mut l = latencies.lock().unwrap();
                    for r in body["records"].as_array().into_iter().flatten() {
                        if let Some(sent) = r["value"]["sent_us"].as_u64() {
                            l.push(now_us.saturating_sub(sent) as f64 / 1000.0);
                        }
                    }
                    if let Some(n) = body["next_offset"].as_u64() {
                        offset = n;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = s.url("/v1/topics/live8/records");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let end = Instant::now() + duration;
        let mut n = 0u64;
        let mut sends = Vec::new();
        while Instant::now() < end {
            tick.tick().await;
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_micros() as u64;
            let records: Vec<Value> = (0..50)
                .map(|i| {
                    let mut r = order(n + i);
                    r["value"]["amount"] = json!(5000);
                    r["value"]["sent_us"] = json!(now_us);
                    r
                })
                .collect();
            n += 50;
            let (c, url) = (c.clone(), url.clone());
            sends.push(tokio::spawn(async move {
                let _ = c
                    .post(&url)
                    .json(&json!({ "records": records }))
                    .send()
                    .await;
            }));
        }
        for t in sends {
            let _ = t.await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while (latencies.lock().unwrap().len() as u64) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let _ = r.await;
        }
        let mut lat = latencies.lock().unwrap().clone();
        anyhow::ensure!(!lat.is_empty(), "no output was read");
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        lines.push(format!(
            "8b. produce to output readable through a processor at 5000 records/s (long-polling fetch): {} of {n} records, p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms)",
            lat.len(),
            pct(0.5),
            pct(0.99)
        ));
    }
    Ok(lines)
}
