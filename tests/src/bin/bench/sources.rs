//! Scenario 9: event sources. Single-record webhooks signed the Standard
//! Webhooks way (a fresh `webhook-id` each, so each is verified, deduplicated
//! and written) next to plain single-record produce of the same bodies, in the
//! same run, alternating over three rounds (target ≥ 50%).

use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use sluice_tests::Server;

use crate::{
    Turn, VALUE_BYTES, create_topics, drive, http_client, median, produce_load, value_200,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn hook_load(base: &str, clients: usize, duration: Duration) -> crate::Stats {
    let c = http_client();
    let url = format!("{base}/v1/hooks/bench");
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let bodies: Vec<bytes::Bytes> = (0..64u64)
        .map(|j| serde_json::to_vec(&value_200(j)).unwrap().into())
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    drive(
        clients,
        duration,
        1,
        VALUE_BYTES as u64,
        move |turn: Turn| {
            let c = c.clone();
            let url = url.clone();
            let body = bodies[(turn.i % 64) as usize].clone();
            let id = format!("msg_{}_{}", turn.client, turn.n);
            let ts = sluice_tests::now_secs().to_string();
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.as_bytes());
            mac.update(b".");
            mac.update(&body);
            let sig = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
            async move {
                match c
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", sig)
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

pub(crate) async fn sources_bench(duration: Duration) -> Result<Vec<String>> {
    let s = Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
    let c = http_client();
    create_topics(&c, &s, &[("plain9", 8), ("hooked9", 8)]).await?;
    let r = c
        .post(s.url("/v1/sources"))
        .json(&json!({"name": "bench", "topic": "hooked9",
                      "verify": {"scheme": "standard-webhooks", "secret": SECRET}}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create source: {}", r.text().await?);
    let clients = 64;
    let mut plain = Vec::new();
    let mut hooked = Vec::new();
    for _ in 0..3 {
        plain.push(produce_load(&s.base, "/v1/topics/plain9/records", clients, duration, 1).await);
        hooked.push(hook_load(&s.base, clients, duration).await);
    }
    let mut plain = median(plain);
    let mut hooked = median(hooked);
    Ok(vec![format!(
        "9. verified single-record webhooks (Standard Webhooks, deduplicated by webhook-id), {clients} clients: {:.0} records/s p99 {:.2} ms vs plain single-record produce {:.0} records/s p99 {:.2} ms = {:.0}% (target ≥ 50%)",
        hooked.rate(),
        hooked.pct(0.99),
        plain.rate(),
        plain.pct(0.99),
        100.0 * hooked.rate() / plain.rate()
    )])
}
