//! The benchmark's Kafka mode (`bench --kafka`): the gateway with `--backend kafka`
//! against the cluster `SLUICE_KAFKA_BOOTSTRAP` names, next to a ceiling measured
//! in the same run by this process speaking to the same cluster with librdkafka
//! directly, in the same shape: 64 single-record awaits in flight, 8 senders of
//! 1,000-record batches, 1,000-record reads by 4 readers. Every produce, ours and
//! the ceiling's, is idempotent with `acks=all` on replication factor 3.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sluice_tests::{Server, peak_rss_bytes};

mod groups;

use crate::{
    Row, Stats, Turn, VALUE_BYTES, create_topics, drive, fetch_load, http_client, load, machine,
    median, print_rows, produce_load, value_200,
};

/// Records read back in the fetch scenario (a 1M-record load into a replicated
/// cluster on two cores takes minutes).
const FETCH_TOTAL: u64 = 200_000;

/// Events the table scenario folds (as in the embedded benchmark).
const TABLE_TOTAL: u64 = 1_000_000;

/// Answers each delivery on the oneshot it came with.
struct Acks;
impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Ack>;
    fn delivery(&self, r: &DeliveryResult<'_>, ack: Box<Ack>) {
        ack.done(r.is_ok());
    }
}

/// One record's acknowledgement, counted into its batch.
struct Ack {
    left: Arc<AtomicUsize>,
    tx: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<bool>>>>,
}

impl Ack {
    fn done(&self, ok: bool) {
        if (!ok || self.left.fetch_sub(1, Ordering::AcqRel) == 1)
            && let Some(tx) = self.tx.lock().expect("ack lock").take()
        {
            let _ = tx.send(ok);
        }
    }
}

fn producer(bootstrap: &str) -> Result<ThreadedProducer<Acks>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create_with_context(Acks)?)
}

/// Sends `n` records of 200 bytes to `topic`, over its 8 partitions in turn from
/// `partition` (where the gateway places records without a key), and resolves
/// once all are acknowledged (false if any failed).
fn send(
    p: &ThreadedProducer<Acks>,
    topic: &str,
    partition: i32,
    n: usize,
    value: &[u8],
) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let left = Arc::new(AtomicUsize::new(n));
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    for j in 0..n {
        let ack = Box::new(Ack {
            left: left.clone(),
            tx: tx.clone(),
        });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Ack>> =
            BaseRecord::with_opaque_to(topic, ack)
                .partition((partition + j as i32) % 8)
                .payload(value);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    rx
}

/// A gateway over the cluster with no rate limits.
fn gateway(bootstrap: &str) -> Server {
    gateway_with(bootstrap, &[])
}

/// A gateway over the cluster with no rate limits and `more` flags.
fn gateway_with(bootstrap: &str, more: &[&str]) -> Server {
    let mut args = vec![
        "--backend",
        "kafka",
        "--kafka-bootstrap",
        bootstrap,
        "--rate-limit-requests",
        "0",
        "--rate-limit-records",
        "0",
    ];
    args.extend_from_slice(more);
    Server::start_with(&args)
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; after the name, at 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) async fn run(duration: Duration, bootstrap: &str, only: Option<u32>) -> Result<()> {
    let wanted = |n: u32| only.is_none_or(|o| o == n);
    let machine = machine();
    eprintln!("machine: {machine}; {duration:?} per scenario; Kafka at {bootstrap}");
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let server = gateway(bootstrap);
    let c = http_client();
    let (single, batch, scan, ceiling) = (
        format!("bench-single-{run}"),
        format!("bench-batch-{run}"),
        format!("bench-scan-{run}"),
        format!("bench-ceiling-{run}"),
    );
    let topics = [(&*single, 8), (&*batch, 8), (&*scan, 1), (&*ceiling, 8)];
    create_topics(&c, &server, &topics).await?;
    let p = Arc::new(producer(bootstrap)?);
    let value: Arc<Vec<u8>> = Arc::new(serde_json::to_vec(&value_200(7))?);
    let mut rows = Vec::new();
    let mut cpu_lines = Vec::new();

    if wanted(1) {
        // Scenario 1: single-record produce, 64 in flight.
        let url = format!("/v1/topics/{single}/records");
        let (mut ceil, mut s, cpu) = alternate(
            server.pid(),
            || {
                let (p2, topic, v) = (p.clone(), ceiling.clone(), value.clone());
                async move {
                    Ok(
                        drive(64, duration, 1, VALUE_BYTES as u64, move |turn: Turn| {
                            let rx = send(&p2, &topic, (turn.i % 8) as i32, 1, &v);
                            async move { rx.await.unwrap_or(false) }
                        })
                        .await,
                    )
                }
            },
            || produce_load(&server.base, &url, 64, duration, 1),
        )
        .await?;
        push(
            &mut rows,
            "K1. single-record produce, 64 clients",
            &mut s,
            &mut ceil,
            0.5,
        );
        cpu_lines.push(format!("K1: gateway CPU {cpu:.2} s per 1M records"));
    }

    if wanted(2) {
        // Scenario 2: 8 senders of 1,000-record batches.
        let (p2, topic, v) = (p.clone(), ceiling.clone(), value.clone());
        let mut ceil = drive(
            8,
            duration,
            1000,
            (1000 * VALUE_BYTES) as u64,
            move |turn: Turn| {
                let rx = send(&p2, &topic, (turn.i % 8) as i32, 1000, &v);
                async move { rx.await.unwrap_or(false) }
            },
        )
        .await;
        let before = cpu_seconds(server.pid());
        let mut s = produce_load(
            &server.base,
            &format!("/v1/topics/{batch}/records"),
            8,
            duration,
            1000,
        )
        .await;
        cpu_lines.push(format!(
            "K2: gateway CPU {:.2} s per 1M records",
            (cpu_seconds(server.pid()) - before) / s.records.max(1) as f64 * 1e6
        ));
        push(
            &mut rows,
            "K2. batched produce, 1000 x 200 B, 8 clients",
            &mut s,
            &mut ceil,
            0.6,
        );
    }

    if wanted(3) {
        // Scenario 3: 1,000-record reads by 4 readers from a loaded partition.
        eprintln!("loading {FETCH_TOTAL} records into one partition ...");
        load(
            &c,
            &server.url(&format!("/v1/topics/{scan}/records")),
            FETCH_TOTAL,
        )
        .await?;
        let fetch_base = server.url(&format!("/v1/topics/{scan}/partitions/0/records"));
        let (mut ceil, mut s, cpu) = alternate(
            server.pid(),
            || async { read_ceiling(bootstrap, &scan, duration) },
            || fetch_load(&c, fetch_base.clone(), FETCH_TOTAL, duration),
        )
        .await?;
        cpu_lines.push(format!("K3: gateway CPU {cpu:.2} s per 1M records"));
        push(
            &mut rows,
            "K3. fetch 1000 records/request, 4 clients",
            &mut s,
            &mut ceil,
            0.6,
        );
    }

    if wanted(4) {
        // Scenario 4: a group of four draining 1M records through two gateways.
        let topic = format!("bench-group-{run}");
        create_topics(&c, &server, &[(&*topic, 8)]).await?;
        eprintln!("loading {} records into 8 partitions ...", groups::TOTAL);
        load(
            &c,
            &server.url(&format!("/v1/topics/{topic}/records")),
            groups::TOTAL,
        )
        .await?;
        let other = gateway(bootstrap);
        let (b, t) = (bootstrap.to_string(), topic.clone());
        let mut ceil = tokio::task::spawn_blocking(move || groups::ceiling(&b, &t)).await??;
        let (before, before_other) = (cpu_seconds(server.pid()), cpu_seconds(other.pid()));
        let (mut s, reowned) = groups::drain(&c, [&server, &other], &topic).await?;
        let cpu = cpu_seconds(server.pid()) - before + cpu_seconds(other.pid()) - before_other;
        cpu_lines.push(format!(
            "K4: gateways' CPU {:.2} s per 1M records; after a leave, every partition owned again in {reowned:.2} s",
            cpu / s.records.max(1) as f64 * 1e6
        ));
        push(
            &mut rows,
            "K4. group of 4 drains 8 partitions via 2 gateways, 1000/poll + commit",
            &mut s,
            &mut ceil,
            0.5,
        );
        let _ = c
            .delete(server.url(&format!("/v1/topics/{topic}")))
            .send()
            .await;
    }

    if wanted(5) {
        // Scenario 5: a count+sum table over 1M events, on one machine and over
        // Kafka in the same run.
        let embedded =
            Server::start_with(&["--rate-limit-requests", "0", "--rate-limit-records", "0"]);
        eprintln!("table over 1M events, embedded engine ...");
        let lines = crate::tables_bench(
            &c,
            &embedded.base,
            TABLE_TOTAL,
            duration,
            "pay",
            "K5 (embedded engine):",
        )
        .await?;
        drop(embedded);
        cpu_lines.extend(lines);
        // Over Kafka with the table in a shard per partition (the default), and
        // in one shard: one transaction a round.
        let single_shard = gateway_with(bootstrap, &["--kafka-table-shards", "1"]);
        for (gw, pay, label) in [
            (&server, format!("bench_pay_{run}"), "K5 (Kafka engine):"),
            (
                &single_shard,
                format!("bench_pay1_{run}"),
                "K5 (Kafka engine, --kafka-table-shards 1):",
            ),
        ] {
            eprintln!("table over 1M events, {label} ...");
            let lines =
                crate::tables_bench(&c, &gw.base, TABLE_TOTAL, duration, &pay, label).await?;
            cpu_lines.extend(lines);
            for path in [
                format!("/v1/tables/{pay}_sums"),
                format!("/v1/topics/{pay}"),
            ] {
                let _ = c.delete(gw.url(&path)).send().await;
            }
        }
    }

    print_rows(&machine, &rows);
    for l in &cpu_lines {
        println!("{l}");
    }
    println!(
        "\ngateway peak RSS: {:.0} MiB",
        peak_rss_bytes(server.pid()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    for t in [&single, &batch, &scan, &ceiling] {
        let _ = c
            .delete(server.url(&format!("/v1/topics/{t}")))
            .send()
            .await;
    }
    Ok(())
}

/// Ceiling and gateway in turn over three rounds (one round of each moves by ±10%
/// from run to run): the median round of each, and the gateway's CPU seconds per
/// 1M records averaged over its rounds.
async fn alternate<C, CF, G, GF>(
    pid: u32,
    mut ceiling: C,
    mut gateway: G,
) -> Result<(Stats, Stats, f64)>
where
    C: FnMut() -> CF,
    CF: std::future::Future<Output = Result<Stats>>,
    G: FnMut() -> GF,
    GF: std::future::Future<Output = Stats>,
{
    let (mut ceilings, mut ours, mut cpu) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..3 {
        let before = cpu_seconds(std::process::id());
        let c = ceiling().await?;
        eprintln!(
            "  ceiling CPU {:.2} s per 1M records",
            (cpu_seconds(std::process::id()) - before) / c.records.max(1) as f64 * 1e6
        );
        ceilings.push(c);
        let before = cpu_seconds(pid);
        let s = gateway().await;
        cpu += (cpu_seconds(pid) - before) / s.records.max(1) as f64 * 1e6;
        ours.push(s);
    }
    Ok((median(ceilings), median(ours), cpu / 3.0))
}

/// librdkafka at its best: 4 consumers, each reading its quarter of the partition
/// in order, 1,000 records at a time, with no seek between reads.
fn read_ceiling(bootstrap: &str, topic: &str, duration: Duration) -> Result<Stats> {
    let start = Instant::now();
    let mut threads = Vec::new();
    for k in 0..4u64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "bench-ceiling")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .context("create a ceiling consumer")?;
        let topic = topic.to_string();
        threads.push(std::thread::spawn(move || {
            let quarter = FETCH_TOTAL / 4;
            let (first, mut latencies, mut reads) = (k * quarter, Vec::new(), 0u64);
            let mut at = first + quarter;
            while start.elapsed() < duration {
                if at + 1000 > first + quarter {
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition_offset(&topic, 0, Offset::Offset(first as i64));
                    if consumer.assign(&tpl).is_err() {
                        break;
                    }
                    at = first;
                }
                let t = Instant::now();
                let mut got = 0;
                while got < 1000 && start.elapsed() < duration + Duration::from_secs(5) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                        std::hint::black_box(m.payload());
                        got += 1;
                    }
                }
                at += 1000;
                reads += 1;
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (reads, latencies)
        }));
    }
    let mut stats = Stats::default();
    for t in threads {
        let (reads, latencies) = t.join().expect("a ceiling reader");
        stats.requests += reads;
        stats.latencies_us.extend(latencies);
    }
    stats.elapsed = start.elapsed();
    stats.records = stats.requests * 1000;
    stats.bytes = stats.records * VALUE_BYTES as u64;
    Ok(stats)
}

fn push(rows: &mut Vec<Row>, scenario: &str, s: &mut Stats, ceiling: &mut Stats, target: f64) {
    rows.push(Row {
        scenario: scenario.into(),
        rate: s.rate(),
        mbps: s.mbps(),
        p50: s.pct(0.5),
        p99: s.pct(0.99),
        ceiling: ceiling.rate(),
        target,
    });
    eprintln!(
        "  {scenario}: ceiling {:.0} records/s p50 {:.2} ms p99 {:.2} ms",
        ceiling.rate(),
        ceiling.pct(0.5),
        ceiling.pct(0.99)
    );
}
