//! Reading partitions: a small pool of `read_committed` consumers, each assigned to
//! at most one partition at a time. A consumer keeps its assignment and position
//! after a read, so the reader that comes back for the next offset (a follower of
//! the tail, a long poll) takes the same consumer and reads on from what librdkafka
//! already fetched, with no seek. A read from elsewhere takes an idle consumer and
//! assigns it there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use sluice_log::{Error, ReadOutcome, RecordView, Result};

use crate::engine::unavailable;
use crate::record::incoming;

/// Most consumers in the pool.
const POOL: usize = 8;

/// Most records a reader reads past rather than seek: reading on through what
/// librdkafka has already fetched costs less than the round trip a seek takes
/// (readers of one partition in step leapfrog each other by a read or two).
const SKIP_AHEAD: u64 = 4000;

/// How long a read that has found nothing yet reads on past an end-of-partition
/// event (which may be older than the records it is after).
const EOF_GRACE: Duration = Duration::from_millis(200);

/// How long a read waits for a record it knows exists.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

struct Reader {
    consumer: BaseConsumer,
    /// (topic, partition, next offset) the consumer is assigned at, if any.
    at: Option<(String, i32, u64)>,
    /// When it was last given back.
    used: Instant,
}

impl Reader {
    /// How many records this consumer would read past to get to `from` of
    /// `topic`/`partition` without a seek (None: it must seek).
    fn behind(&self, topic: &str, partition: i32, from: u64) -> Option<u64> {
        let (t, p, at) = self.at.as_ref()?;
        (t == topic && *p == partition && *at <= from && from - *at <= SKIP_AHEAD)
            .then(|| from - *at)
    }
}

/// The pool.
pub(crate) struct Readers {
    config: ClientConfig,
    idle: Mutex<Vec<Reader>>,
    count: Mutex<usize>,
    free: std::sync::Condvar,
}

impl Readers {
    pub(crate) fn new(mut config: ClientConfig) -> Readers {
        // librdkafka fetches ahead until its queue holds this many records (100,000
        // by default) or bytes (16 MiB as the engine sets it). A reader that moves
        // elsewhere throws that away, so keep it to about ten 1,000-record reads, in
        // at most 4 MiB. A full queue is looked at again after 10 ms (1 s by
        // default): often enough that a reader going through a partition never
        // finds it empty, seldom enough that an idle one costs little.
        config
            .set("queued.min.messages", "10000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.queue.backoff.ms", "10");
        Readers {
            config,
            idle: Mutex::new(Vec::new()),
            count: Mutex::new(0),
            free: std::sync::Condvar::new(),
        }
    }

    /// A consumer for reading `topic`/`partition` from `from`: the idle one that
    /// can get there soonest (at `from`, else the nearest behind it within
    /// [`SKIP_AHEAD`]), else an idle one assigned nowhere, else a new one while
    /// the pool has room, else the idle one used longest ago, else the first to
    /// come back. Longest ago, because readers that go round the partitions of
    /// a topic (a table folding them in turn) come back to each in the same
    /// order: the one used longest ago is the one whose partition is furthest
    /// from its next read, and taking it costs one seek where taking just any
    /// costs one on every read after.
    fn take(&self, topic: &str, partition: i32, from: u64) -> Result<Reader> {
        let mut idle = self.idle.lock().expect("readers lock");
        loop {
            let near = idle
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i, r.behind(topic, partition, from)?)))
                .min_by_key(|&(_, behind)| behind)
                .map(|(i, _)| i)
                .or_else(|| idle.iter().position(|r| r.at.is_none()));
            if let Some(i) = near {
                return Ok(idle.swap_remove(i));
            }
            let mut count = self.count.lock().expect("readers count");
            if *count < POOL {
                *count += 1;
                drop(count);
                drop(idle);
                let consumer: BaseConsumer = self.config.create().map_err(unavailable)?;
                return Ok(Reader {
                    consumer,
                    at: None,
                    used: Instant::now(),
                });
            }
            drop(count);
            let oldest = idle
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.used)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                return Ok(idle.swap_remove(i));
            }
            idle = self.free.wait(idle).expect("readers lock");
        }
    }

    /// Unassigns the idle consumers last used more than `after` ago: an assigned
    /// consumer goes on fetching whether or not anyone reads (at a partition's
    /// end, a request every `fetch.wait.max.ms`), which loads the brokers and this
    /// process for nothing once its readers are gone.
    pub(crate) fn rest(&self, after: Duration) {
        let resting: Vec<Reader> = {
            let mut idle = self.idle.lock().expect("readers lock");
            let (rest, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|r| r.at.is_some() && r.used.elapsed() >= after);
            *idle = keep;
            rest
        };
        for mut reader in resting {
            let _ = reader.consumer.unassign();
            reader.at = None;
            self.idle.lock().expect("readers lock").push(reader);
            self.free.notify_one();
        }
    }

    fn give_back(&self, mut reader: Reader) {
        reader.used = Instant::now();
        self.idle.lock().expect("readers lock").push(reader);
        self.free.notify_one();
    }

    /// Reads `partition` of `topic` from `from` up to `end` (the partition's end as
    /// last seen), at most `max_records` and about `max_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        start: u64,
        end: u64,
        max_records: usize,
        max_bytes: usize,
        visit: &mut dyn FnMut(u64, RecordView<'_>),
    ) -> Result<ReadOutcome> {
        let mut outcome = ReadOutcome {
            next_offset: from,
            high_watermark: end,
            start_offset: start,
            records: 0,
        };
        if from >= end || max_records == 0 {
            return Ok(outcome);
        }
        let p = partition as i32;
        let mut reader = self.take(topic, p, from)?;
        // Whether the consumer polled a record it did not hand out: it is then past
        // `next_offset`, and the next read must seek back.
        let mut overshot = false;
        let result = (|| {
            if reader.behind(topic, p, from).is_none() {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, p, Offset::Offset(from as i64))
                    .map_err(unavailable)?;
                reader.at = None;
                reader.consumer.assign(&tpl).map_err(unavailable)?;
            }
            let deadline = Instant::now() + READ_TIMEOUT;
            let eof_grace = Instant::now() + EOF_GRACE;
            let mut bytes = 0usize;
            // Past an end-of-partition event, only what is already queued.
            let mut draining = false;
            while outcome.next_offset < end && outcome.records < max_records {
                let wait = if draining {
                    Duration::ZERO
                } else {
                    Duration::from_millis(50)
                };
                let Some(polled) = reader.consumer.poll(wait) else {
                    if draining || Instant::now() >= deadline {
                        break;
                    }
                    continue;
                };
                let m = match polled {
                    Ok(m) => m,
                    Err(KafkaError::PartitionEOF(_)) => {
                        // An end-of-partition event queued when an earlier read
                        // stopped at the end comes before the records written
                        // since: give those a moment. One met after records may
                        // be as old, with more records queued behind it: those
                        // are read. Past that, nothing more is readable: the
                        // rest up to `end` are transaction markers or not yet
                        // stable.
                        if outcome.records == 0 && Instant::now() < eof_grace {
                            continue;
                        }
                        if outcome.records == 0 {
                            break;
                        }
                        draining = true;
                        continue;
                    }
                    Err(KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange,
                    )) => {
                        return Err(Error::OffsetOutOfRange {
                            offset: from,
                            start,
                            end,
                        });
                    }
                    // A broker connection lost (a broker restarting, its
                    // leadership moving): the client reconnects on its own and
                    // goes on, so the read waits for it up to its deadline.
                    Err(KafkaError::MessageConsumption(code))
                        if passing(code) && Instant::now() < deadline =>
                    {
                        tracing::debug!(error = %code, "reading through a lost broker connection");
                        continue;
                    }
                    Err(e) => return Err(unavailable(e)),
                };
                let offset = m.offset() as u64;
                if offset < outcome.next_offset {
                    continue;
                }
                let records = outcome.records;
                let taken = incoming(&m, &mut |view, size| {
                    if records > 0 && bytes + size > max_bytes {
                        return false;
                    }
                    visit(offset, view);
                    bytes += size;
                    true
                })
                .ok_or(Error::Corrupted {
                    pkey: u64::from(partition),
                    offset,
                })?;
                if !taken {
                    overshot = true;
                    return Ok(());
                }
                outcome.records += 1;
                outcome.next_offset = offset + 1;
            }
            Ok(())
        })();
        reader.at =
            (result.is_ok() && !overshot).then(|| (topic.to_string(), p, outcome.next_offset));
        self.give_back(reader);
        result?;
        Ok(outcome)
    }
}

/// Whether a consumer's error is the client telling of a connection it lost and
/// will make again, rather than of something wrong with the read.
fn passing(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::NetworkException
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
    )
}
