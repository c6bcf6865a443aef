//! K4: a consumer group over Kafka through two gateways. Four Sluice consumers of
//! one group drain a 1M-record, 8-partition topic with `limit=1000` and a commit
//! per poll, each request going to the other gateway than the last (as behind a
//! round-robin balancer); next to it, four librdkafka consumers with two
//! partitions each, reading 1,000 records and committing them synchronously, in
//! turn, to the end. Then one Sluice consumer leaves, and the time until the
//! other three own every partition again is measured.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice_tests::Server;

use crate::Stats;

/// Records in the drained topic.
pub(crate) const TOTAL: u64 = 1_000_000;
const PARTITIONS: i32 = 8;
const CONSUMERS: usize = 4;

/// Drains `topic` with four Sluice consumers of a new group, alternating between
/// `gateways`; answers the drain and the seconds from a leave until the other
/// three hold all partitions.
pub(crate) async fn drain(
    c: &reqwest::Client,
    gateways: [&Server; 2],
    topic: &str,
) -> Result<(Stats, f64)> {
    let group = format!("bench-group-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let read = Arc::new(AtomicU64::new(0));
    let bases: Arc<[String; 2]> = Arc::new([gateways[0].base.clone(), gateways[1].base.clone()]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONSUMERS {
        let (c, bases, read) = (c.clone(), bases.clone(), read.clone());
        let (group, topic) = (group.clone(), topic.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut requests, mut turn) = (Vec::new(), 0u64, k);
            while read.load(Ordering::Acquire) < TOTAL {
                turn += 1;
                let base = &bases[turn % 2];
                let t = Instant::now();
                let answer: Value = c
                    .get(format!(
                        "{base}/v1/groups/{group}/topics/{topic}/records?consumer=c{k}&limit=1000&wait_ms=200"
                    ))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let records = answer["records"].as_array().context("records")?;
                let mut next = std::collections::BTreeMap::new();
                for r in records {
                    let p = r["partition"].as_u64().context("partition")?;
                    let o = r["offset"].as_u64().context("offset")?;
                    let n = next.entry(p).or_insert(0);
                    *n = (*n).max(o + 1);
                }
                requests += 1;
                if next.is_empty() {
                    continue;
                }
                let offsets: Vec<Value> = next
                    .iter()
                    .map(|(p, o)| json!({"topic": topic, "partition": p, "offset": o}))
                    .collect();
                turn += 1;
                let r = c
                    .post(format!("{}/v1/groups/{group}/offsets", bases[turn % 2]))
                    .json(&json!({"consumer": format!("c{k}"), "generation": answer["generation"], "offsets": offsets}))
                    .send()
                    .await?;
                // A rebalance between the poll and its commit refuses the
                // commit; those records come again and are not counted.
                if r.status() == 204 {
                    read.fetch_add(records.len() as u64, Ordering::AcqRel);
                    latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else if r.status() != 409 {
                    bail!("commit: {}", r.status());
                }
            }
            Ok::<_, anyhow::Error>((requests, latencies))
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        let (requests, latencies) = t.await??;
        stats.requests += requests;
        stats.latencies_us.extend(latencies);
    }
    stats.elapsed = start.elapsed();
    stats.records = read.load(Ordering::Acquire);
    stats.bytes = stats.records * crate::VALUE_BYTES as u64;

    // The last consumer leaves; the others poll until they own everything.
    let r = c
        .delete(format!("{}/v1/groups/{group}/consumers/c3", bases[0]))
        .send()
        .await?;
    if r.status() != 204 {
        bail!("leave: {}", r.status());
    }
    let left = Instant::now();
    let mut turn = 0;
    loop {
        let mut owned = BTreeSet::new();
        let mut twice = false;
        for k in 0..CONSUMERS - 1 {
            turn += 1;
            let answer: Value = c
                .get(format!(
                    "{}/v1/groups/{group}/topics/{topic}/records?consumer=c{k}&limit=1",
                    bases[turn % 2]
                ))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            for p in answer["assignment"].as_array().context("assignment")? {
                twice |= !owned.insert(p.as_u64().context("partition")?);
            }
        }
        if owned.len() == PARTITIONS as usize && !twice {
            break;
        }
        if left.elapsed() > Duration::from_secs(120) {
            bail!("the partitions were not owned again within 120 s: {owned:?}");
        }
    }
    Ok((stats, left.elapsed().as_secs_f64()))
}

/// librdkafka at its best in the same shape: four consumers, two partitions
/// each, reading from the start and committing every 1,000 records
/// synchronously, until all `TOTAL` are read.
pub(crate) fn ceiling(bootstrap: &str, topic: &str) -> Result<Stats> {
    let group = format!(
        "bench-ceiling-group-{:06x}",
        rand::random::<u32>() & 0xff_ffff
    );
    let start = Instant::now();
    let read = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for k in 0..CONSUMERS as i32 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .context("create a ceiling consumer")?;
        let mut tpl = TopicPartitionList::new();
        for p in [k * 2, k * 2 + 1] {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (topic, read) = (topic.to_string(), read.clone());
        threads.push(std::thread::spawn(move || {
            let (mut latencies, mut polls, mut batch) = (Vec::new(), 0u64, 0u64);
            let mut next = [0i64; 2];
            let mut t = Instant::now();
            let mut idle = Instant::now();
            while read.load(Ordering::Acquire) < TOTAL && idle.elapsed() < Duration::from_secs(10) {
                let got = consumer.poll(Duration::from_millis(50));
                if let Some(Ok(m)) = &got {
                    idle = Instant::now();
                    std::hint::black_box(rdkafka::Message::payload(m));
                    next[(rdkafka::Message::partition(m) - k * 2) as usize] =
                        rdkafka::Message::offset(m) + 1;
                    batch += 1;
                }
                // A full batch, or the end of the partitions reached.
                if batch == 1000 || (got.is_none() && batch > 0) {
                    let mut commit = TopicPartitionList::new();
                    for (i, o) in next.iter().enumerate().filter(|(_, o)| **o > 0) {
                        let _ = commit.add_partition_offset(
                            &topic,
                            k * 2 + i as i32,
                            Offset::Offset(*o),
                        );
                    }
                    let _ = consumer.commit(&commit, CommitMode::Sync);
                    read.fetch_add(batch, Ordering::AcqRel);
                    batch = 0;
                    polls += 1;
                    latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    t = Instant::now();
                }
            }
            (polls, latencies)
        }));
    }
    let mut stats = Stats::default();
    for t in threads {
        let (polls, latencies) = t.join().expect("a ceiling consumer");
        stats.requests += polls;
        stats.latencies_us.extend(latencies);
    }
    stats.elapsed = start.elapsed();
    stats.records = read.load(Ordering::Acquire);
    stats.bytes = stats.records * crate::VALUE_BYTES as u64;
    Ok(stats)
}
