//! Scenario 10: the JavaScript client's heap in headless Chromium over a long
//! subscription at 1,000 records/s (target: no growth; 10 minutes unless
//! `--sdk-seconds` says otherwise).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use sluice_tests::{Server, workspace_root};

use crate::http_client;

pub(crate) async fn sdk_bench(seconds: u64) -> Result<Vec<String>> {
    let s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = http_client();
    let r = c
        .post(s.url("/v1/topics"))
        .json(&json!({"name": "heap10", "partitions": 4}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create topic");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (c, url, stop) = (c.clone(), s.url("/v1/topics/heap10/records"), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let records: Vec<Value> = (0..100)
                    .map(|i| json!({"key": format!("k{}", (n + i) % 97), "value": {"n": n + i, "pad": "x".repeat(100)}}))
                    .collect();
                n += 100;
                let _ = c
                    .post(&url)
                    .json(&json!({ "records": records }))
                    .send()
                    .await;
            }
        })
    };
    let dir = workspace_root().join("tests/browser");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["sdk-heap.mjs", &base, "heap10", &seconds.to_string()])
            .current_dir(dir)
            .output()
    })
    .await??;
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    anyhow::ensure!(
        out.status.success(),
        "sdk-heap.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap_or_default(),
    )?;
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    Ok(vec![format!(
        "10. JavaScript client in Chromium, a subscription at 1000 records/s for {seconds} s: {} records; heap after the warm-up {:.2} MiB, at the end {:.2} MiB, at most {:.2} MiB (target: no growth)",
        m["records"],
        mib(&m["heap_start"]),
        mib(&m["heap_end"]),
        mib(&m["heap_max"])
    )])
}
