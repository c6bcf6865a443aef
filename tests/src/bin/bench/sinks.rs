//! Scenario 7: sinks, against a bare receiver in this process.
//!
//! - 7a. signed single-record deliveries with `ordering: key`, 8 in flight, next
//!   to a bare client posting the same kind of body to the same receiver with
//!   the same concurrency (target ≥ 50%);
//! - 7b. batched NDJSON deliveries, 1000 records a request (target ≥ 300k/s);
//! - 7c. produce to receipt at 1,000 events/s (target p99 < 50 ms);
//! - 7d. draining a 600k-record backlog once the receiver comes back, next to
//!   1,000 records/s produced (target ≥ 10x);
//! - 7e. server RSS growth while the receiver is down and 1M records wait
//!   (target < 32 MiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use sluice_tests::receiver::{Behavior, Receiver};
use sluice_tests::{Server, rss_bytes};

use crate::{http_client, load, value_200};

fn server() -> Server {
    Server::start_with(&[
        "--rate-limit-requests",
        "0",
        "--rate-limit-records",
        "0",
        "--sink-allow-net",
        "127.0.0.0/8",
    ])
}

async fn topic(c: &reqwest::Client, s: &Server, name: &str) -> Result<()> {
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": name, "partitions": 8}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create topic {name}");
    Ok(())
}

async fn sink(c: &reqwest::Client, s: &Server, def: Value) -> Result<()> {
    let r = c.post(s.url("/v1/sinks")).json(&def).send().await?;
    anyhow::ensure!(r.status() == 201, "create sink: {}", r.text().await?);
    Ok(())
}

/// Produces `total` keyed records (`keys` distinct keys), 1,000 a request, 4 at a time.
async fn load_keyed(c: &reqwest::Client, url: &str, total: u64, keys: u64) -> Result<()> {
    crate::post_batches(
        c,
        url,
        total,
        |n| json!({"key": format!("k{}", n % keys), "value": value_200(n % 1000)}),
    )
    .await
    .map(drop)
}

/// Records the receiver acknowledges per second over `duration`, after a warm-up.
async fn delivery_rate(rx: &Receiver, duration: Duration) -> f64 {
    while rx.records() < 2_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, c0) = (Instant::now(), rx.records());
    tokio::time::sleep(duration).await;
    (rx.records() - c0) as f64 / t0.elapsed().as_secs_f64()
}

/// A bare client: `clients` loops posting a record-sized JSON body to `url`.
async fn bare_rate(url: &str, clients: usize, duration: Duration) -> f64 {
    let c = http_client();
    let body: bytes::Bytes = serde_json::to_vec(&json!({"id": "msg_0123456789abcdef0123456789abcdef",
        "topic": "s7", "partition": 0, "offset": 0, "timestamp": 0, "key": "k1", "value": value_200(1)}))
    .unwrap()
    .into();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, url, body, done) = (c.clone(), url.to_string(), body.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let ok = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", "msg_0123456789abcdef0123456789abcdef")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

pub(crate) async fn sinks_bench(duration: Duration) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let c = http_client();

    // 7a: signed single-record deliveries, key order, 8 in flight.
    {
        let rx = Receiver::start_with(Behavior {
            quiet: true,
            ..Behavior::default()
        })
        .await;
        let bare = bare_rate(&rx.url, 8, duration).await;
        let s = server();
        topic(&c, &s, "s7").await?;
        load_keyed(&c, &s.url("/v1/topics/s7/records"), 400_000, 10_000).await?;
        sink(
            &c,
            &s,
            json!({"name": "s7", "source": {"topic": "s7"}, "url": rx.url, "start": "earliest",
                   "ordering": "key", "rate": {"max_in_flight": 8}}),
        )
        .await?;
        let ours = delivery_rate(&rx, duration).await;
        lines.push(format!(
            "7a. signed single-record deliveries, ordering key, 8 in flight: {ours:.0} records/s vs a bare client with 8 in flight {bare:.0} requests/s = {:.0}% (target ≥ 50%)",
            100.0 * ours / bare
        ));
    }

    // 7b: batched NDJSON.
    {
        let rx = Receiver::start_with(Behavior {
            quiet: true,
            ..Behavior::default()
        })
        .await;
        let s = server();
        topic(&c, &s, "b7").await?;
        eprintln!("loading 3M records ...");
        load(&c, &s.url("/v1/topics/b7/records"), 3_000_000).await?;
        sink(
            &c,
            &s,
            json!({"name": "b7", "source": {"topic": "b7"}, "url": rx.url, "start": "earliest",
                   "batch": {"max_records": 1000}}),
        )
        .await?;
        let ours = delivery_rate(&rx, duration).await;
        lines.push(format!(
            "7b. batched NDJSON deliveries, 1000 records a request, signed: {ours:.0} records/s (target ≥ 300000)"
        ));
    }

    // 7c: produce to receipt at 1,000 events/s.
    {
        let rx = Receiver::start().await;
        let s = server();
        topic(&c, &s, "l7").await?;
        sink(
            &c,
            &s,
            json!({"name": "l7", "source": {"topic": "l7"}, "url": rx.url, "ordering": "key"}),
        )
        .await?;
        // Let the runner take up its partitions before the clock starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = s.url("/v1/topics/l7/records");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let end = Instant::now() + duration;
        let mut n = 0u64;
        let mut tasks = Vec::new();
        while Instant::now() < end {
            tick.tick().await;
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_micros() as u64;
            let records: Vec<Value> = (0..10)
                .map(
                    |i| json!({"key": format!("k{}", (n + i) % 500), "value": {"sent_us": now_us}}),
                )
                .collect();
            n += 10;
            let (c, url) = (c.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let _ = c
                    .post(&url)
                    .json(&json!({ "records": records }))
                    .send()
                    .await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let got = rx
            .until(Duration::from_secs(30), |g| g.len() as u64 >= n)
            .await;
        let mut lat: Vec<f64> = got
            .iter()
            .filter_map(|r| {
                let v: Value = serde_json::from_slice(&r.body).ok()?;
                let sent = v["value"]["sent_us"].as_u64()?;
                Some(r.at_us.saturating_sub(sent) as f64 / 1000.0)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        lines.push(format!(
            "7c. produce to receipt at 1000 events/s, signed, ordering key: {} records, p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms)",
            lat.len(),
            pct(0.5),
            pct(0.99)
        ));
    }

    // 7d and 7e: a receiver down, a backlog, then back.
    {
        let rx = Receiver::start_with(Behavior {
            quiet: true,
            status: Some(503),
            ..Behavior::default()
        })
        .await;
        let s = server();
        topic(&c, &s, "d7").await?;
        eprintln!("loading 1M records ...");
        load_keyed(&c, &s.url("/v1/topics/d7/records"), 1_000_000, 10_000).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_bytes(s.pid()).unwrap_or(0);
        sink(
            &c,
            &s,
            json!({"name": "d7", "source": {"topic": "d7"}, "url": rx.url, "start": "earliest",
                   "ordering": "key", "retry": {"max_ms": 2000}}),
        )
        .await?;
        // The sink fills its windows and backs off.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut peak = 0;
        for _ in 0..10 {
            peak = peak.max(rss_bytes(s.pid()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        lines.push(format!(
            "7e. server RSS growth with the receiver down and 1M records waiting: {:.1} MiB (target < 32 MiB)",
            peak.saturating_sub(before) as f64 / (1024.0 * 1024.0)
        ));
        // Back: drain 600k of the backlog.
        rx.set(|b| b.status = None);
        let start = Instant::now();
        let r = c.post(s.url("/v1/sinks/d7/resume")).send().await?;
        anyhow::ensure!(r.status() == 200, "resume");
        while rx.records() < 600_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = 600_000.0 / start.elapsed().as_secs_f64();
        lines.push(format!(
            "7d. draining a 600k backlog once the receiver is back (signed, single records, ordering key, 8 in flight): {rate:.0} records/s = {:.0}x a 1000 records/s produce rate (target ≥ 10x)",
            rate / 1000.0
        ));
    }
    Ok(lines)
}
