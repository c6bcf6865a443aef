//! The delivery state machine of one sink: which records go out next, in which
//! request, what a failure does to them, and where each partition's cursor is.
//! It does no I/O: its driver reads records into it, sends the deliveries it
//! hands out, reports each one's outcome, appends its dead letters and commits
//! its checkpoints (see the crate's docs).
//!
//! **Per partition**, records read and not yet done are *pending*, in offset
//! order. The **cursor** is the lowest pending offset (or the next offset to
//! read, when none is); the offsets above it that are done are kept as ranges,
//! so a restart skips them instead of delivering them again. How far a
//! partition reads ahead is bounded ([`WINDOW`] records, [`WINDOW_BYTES`]
//! bytes), so memory stays bounded however far behind the endpoint is.
//!
//! **Ordering**: with `partition`, only a partition's lowest pending records
//! may be in flight, one request at a time; with `key`, a record waits while an
//! earlier record of its key is pending (in flight, or waiting to be retried),
//! so a failing key holds back only its own later records; with `none`, any
//! record may go.
//!
//! **Failures**: a *record-level* answer (400, 413, 415, 422) to a request of
//! several records splits it: each record goes again on its own. A record
//! refused on its own [`Policy::record_attempts`] times is a **dead letter**.
//! An *endpoint-level* failure (anything else but 410) backs off the whole
//! sink: nothing goes out until the wait is over, then one probe at a time
//! until one succeeds; the records keep their place. The wait starts at
//! [`Policy::initial_ms`] and doubles up to [`Policy::max_ms`], ±20% jitter,
//! or is what `Retry-After` said (up to an hour). A record failing for longer
//! than [`Policy::max_age_ms`] is a dead letter too. 410 disables the sink.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sluice_openapi::SinkOrdering;

use crate::def::{MAX_RETRY_AFTER_MS, Policy};

/// Records a partition reads ahead of its cursor, at most.
pub const WINDOW: usize = 4_096;
/// Bytes of records a sink holds read ahead of its cursors, over all its
/// partitions, about, at most.
pub const WINDOW_BYTES: usize = 8 << 20;
/// Failures in a row after which a backing-off sink is reported `failing`.
const FAILING_AFTER: u32 = 5;

/// A record read for delivery.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    /// A hash of its key (`None`: no key, no ordering to keep).
    pub key: Option<u64>,
    /// Its size, for the batch and window limits.
    pub bytes: usize,
    pub timestamp_ms: u64,
    /// What the driver sends: the record, formatted.
    pub payload: T,
}

/// Why a record failed, kept for its dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub status: Option<u16>,
    pub message: String,
    /// The first bytes of the answer.
    pub answer: String,
}

#[derive(Debug)]
struct Pending<T> {
    entry: Entry<T>,
    read_ms: u64,
    /// Sends so far (for the attempt header).
    tries: u32,
    /// Record-level refusals of it on its own.
    refusals: u32,
    not_before_ms: u64,
    in_flight: bool,
    /// Goes in a request of its own (a batch holding it was refused).
    solo: bool,
    dead: bool,
    first_failure_ms: Option<u64>,
    last: Option<Failure>,
}

/// What a partition keeps in its store: the cursor goes in the store's
/// offsets, the rest in this row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRow {
    /// The generation (replay) the cursor belongs to.
    pub generation: u64,
    /// Offsets above the cursor already done, as `[start, end)` ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<(u64, u64)>,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Records retention deleted before they were delivered.
    #[serde(default)]
    pub skipped: u64,
}

/// One partition's progress.
#[derive(Debug)]
struct Part<T> {
    incarnation: u64,
    generation: u64,
    next_read: u64,
    pending: BTreeMap<u64, Pending<T>>,
    pending_bytes: usize,
    /// Done ranges above the cursor loaded from the store, not read again yet.
    skip: BTreeMap<u64, u64>,
    counts: PartRow,
    dirty: bool,
}

impl<T> Part<T> {
    fn cursor(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_read)
    }

    /// The row to store: done ranges between the pending records, and the
    /// loaded ones not read again yet.
    fn row(&self) -> PartRow {
        let mut done = Vec::new();
        let mut at = self.cursor();
        for &o in self.pending.keys() {
            if o > at {
                done.push((at, o));
            }
            at = o + 1;
        }
        if self.next_read > at {
            done.push((at, self.next_read));
        }
        for (&s, &e) in &self.skip {
            let s = s.max(self.next_read);
            if e > s {
                match done.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => done.push((s, e)),
                }
            }
        }
        // Ranges that end where reading goes on are not needed: the cursor
        // moves past them when the pending records before them are done.
        PartRow {
            generation: self.generation,
            done,
            ..self.counts.clone()
        }
    }

    fn is_skipped(&mut self, offset: u64) -> bool {
        // Drop ranges reading has passed.
        while let Some((&s, &e)) = self.skip.iter().next() {
            if e <= offset {
                self.skip.remove(&s);
            } else {
                return s <= offset;
            }
        }
        false
    }
}

/// A request to make.
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// Identifies it when its outcome is reported.
    pub id: u64,
    pub partition: u32,
    /// Offsets it carries, ascending, with their payloads.
    pub records: Vec<(u64, T)>,
    /// The highest number of sends of its records, this one included.
    pub attempt: u32,
}

/// What [`Sink::next`] answers.
#[derive(Debug)]
pub enum Next<T> {
    Deliver(Delivery<T>),
    /// Nothing to send before this time (ms).
    WaitUntil(u64),
    /// Nothing to send until a delivery ends or records arrive.
    Idle,
}

/// How a delivery ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// The receiver refused the records (400, 413, 415, 422).
    Refused(Failure),
    /// The endpoint failed (other statuses, timeouts, refused connections);
    /// `retry_after_ms` from its `Retry-After`.
    Failed {
        failure: Failure,
        retry_after_ms: Option<u64>,
    },
    /// 410: the sink is disabled.
    Gone(Failure),
}

/// A record that goes to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter<T> {
    pub partition: u32,
    pub offset: u64,
    pub incarnation: u64,
    pub payload: T,
    pub attempts: u32,
    pub failure: Failure,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until_ms: u64,
    /// The probe in flight.
    probe: Option<u64>,
}

struct InFlight {
    partition: u32,
    incarnation: u64,
    offsets: Vec<u64>,
}

/// A sink's deliveries over the partitions it holds.
pub struct Sink<T> {
    policy: Policy,
    parts: BTreeMap<u32, Part<T>>,
    flights: HashMap<u64, InFlight>,
    /// Bytes of the records pending in all partitions.
    pending_bytes: usize,
    /// Dead letters not yet buried (so finding none costs nothing).
    dead: usize,
    next_id: u64,
    incarnations: u64,
    backoff: Backoff,
    /// Where the last scan for a delivery started, so partitions take turns.
    turn: u32,
    rng: u64,
    gone: bool,
    last_error: Option<(u64, Failure)>,
}

impl<T: Clone> Sink<T> {
    pub fn new(policy: Policy) -> Sink<T> {
        Sink {
            policy,
            parts: BTreeMap::new(),
            flights: HashMap::new(),
            pending_bytes: 0,
            dead: 0,
            next_id: 1,
            incarnations: 0,
            backoff: Backoff::default(),
            turn: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            gone: false,
            last_error: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes up `partition` from its stored cursor and row (deliveries still in
    /// flight for an earlier hold of it are ignored when they end).
    pub fn hold(&mut self, partition: u32, cursor: u64, row: PartRow) {
        self.release(partition);
        self.incarnations += 1;
        let skip = row
            .done
            .iter()
            .filter(|(s, e)| e > s && *e > cursor)
            .map(|&(s, e)| (s.max(cursor), e))
            .collect();
        self.parts.insert(
            partition,
            Part {
                incarnation: self.incarnations,
                generation: row.generation,
                next_read: cursor,
                pending: BTreeMap::new(),
                pending_bytes: 0,
                skip,
                counts: PartRow {
                    done: Vec::new(),
                    ..row
                },
                dirty: false,
            },
        );
    }

    /// Lets go of `partition` (another gateway delivers it now, or a replay
    /// starts it over).
    pub fn release(&mut self, partition: u32) {
        if let Some(p) = self.parts.remove(&partition) {
            self.pending_bytes -= p.pending_bytes;
            self.dead -= p.pending.values().filter(|e| e.dead).count();
        }
    }

    /// The partitions held.
    pub fn held(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    pub fn generation(&self, partition: u32) -> Option<u64> {
        self.parts.get(&partition).map(|p| p.generation)
    }

    /// Where `partition` should read next and how many records it may take,
    /// when its window has room: a quarter of it at least, so that reads come
    /// in bulk, or any while little is pending.
    pub fn wants_read(&self, partition: u32) -> Option<(u64, usize)> {
        let p = self.parts.get(&partition)?;
        let room = WINDOW.saturating_sub(p.pending.len());
        let bulk = room >= WINDOW / 4 || p.pending.len() < self.policy.max_in_flight * 4;
        (room > 0 && bulk && self.pending_bytes < WINDOW_BYTES).then_some((p.next_read, room))
    }

    /// A record read at `offset`: `None` when it is passed over (the filter
    /// did not match it). Records must come in offset order.
    pub fn push(&mut self, partition: u32, offset: u64, entry: Option<Entry<T>>, now_ms: u64) {
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        if offset < p.next_read {
            return;
        }
        p.next_read = offset + 1;
        p.dirty = true;
        if p.is_skipped(offset) {
            return;
        }
        if let Some(entry) = entry {
            p.pending_bytes += entry.bytes;
            self.pending_bytes += entry.bytes;
            p.pending.insert(
                offset,
                Pending {
                    entry,
                    read_ms: now_ms,
                    tries: 0,
                    refusals: 0,
                    not_before_ms: 0,
                    in_flight: false,
                    solo: false,
                    dead: false,
                    first_failure_ms: None,
                    last: None,
                },
            );
        }
    }

    /// Reading reached `next` (offsets below it hold no record to deliver).
    pub fn read_to(&mut self, partition: u32, next: u64) {
        if let Some(p) = self.parts.get_mut(&partition)
            && next > p.next_read
        {
            p.next_read = next;
            p.dirty = true;
        }
    }

    /// Retention deleted records before `start` that were not delivered:
    /// reading goes on from there, and they are counted.
    pub fn gap(&mut self, partition: u32, start: u64) {
        if let Some(p) = self.parts.get_mut(&partition)
            && start > p.next_read
        {
            p.counts.skipped += start - p.next_read;
            p.next_read = start;
            p.dirty = true;
        }
    }

    /// Whether the endpoint answered 410 since the sink was made.
    pub fn gone(&self) -> bool {
        self.gone
    }

    /// The next request to make, if any may go now.
    pub fn next(&mut self, now_ms: u64) -> Next<T> {
        if self.gone || self.flights.len() >= self.policy.max_in_flight {
            return Next::Idle;
        }
        let probe = self.backoff.failures > 0;
        if probe {
            if now_ms < self.backoff.until_ms {
                return Next::WaitUntil(self.backoff.until_ms);
            }
            if self.backoff.probe.is_some() {
                return Next::Idle;
            }
        }
        let mut wait: Option<u64> = None;
        // Partitions take turns: from the one after the last served, round.
        let mut at = self.turn;
        for _ in 0..self.parts.len() {
            let Some(&partition) = self
                .parts
                .range(at..)
                .next()
                .or_else(|| self.parts.iter().next())
                .map(|(k, _)| k)
            else {
                return Next::Idle;
            };
            at = partition.saturating_add(1);
            let p = self.parts.get_mut(&partition).expect("held");
            match pick(p, &self.policy, probe, now_ms) {
                Pick::Some(offsets) => {
                    self.turn = partition + 1;
                    let mut records = Vec::with_capacity(offsets.len());
                    let mut attempt = 0;
                    for &o in &offsets {
                        let e = p.pending.get_mut(&o).expect("picked");
                        e.in_flight = true;
                        e.tries += 1;
                        attempt = attempt.max(e.tries);
                        records.push((o, e.entry.payload.clone()));
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    self.flights.insert(
                        id,
                        InFlight {
                            partition,
                            incarnation: p.incarnation,
                            offsets,
                        },
                    );
                    if probe {
                        self.backoff.probe = Some(id);
                    }
                    return Next::Deliver(Delivery {
                        id,
                        partition,
                        records,
                        attempt,
                    });
                }
                Pick::Wait(at) => wait = Some(wait.map_or(at, |w| w.min(at))),
                Pick::None => {}
            }
        }
        wait.map_or(Next::Idle, Next::WaitUntil)
    }

    /// Reports how delivery `id` ended.
    pub fn complete(&mut self, id: u64, outcome: Outcome, now_ms: u64) {
        let Some(flight) = self.flights.remove(&id) else {
            return;
        };
        if self.backoff.probe == Some(id) {
            self.backoff.probe = None;
        }
        let policy = self.policy.clone();
        let delay = match &outcome {
            Outcome::Failed { retry_after_ms, .. } => {
                let failures = self.backoff.failures + 1;
                Some(match retry_after_ms {
                    Some(ms) => (*ms).min(MAX_RETRY_AFTER_MS),
                    None => self.jittered(schedule(&policy, failures)),
                })
            }
            _ => None,
        };
        match &outcome {
            Outcome::Delivered | Outcome::Refused(_) => self.backoff = Backoff::default(),
            Outcome::Failed { failure, .. } | Outcome::Gone(failure) => {
                self.backoff.failures += 1;
                self.backoff.until_ms = now_ms + delay.unwrap_or(0);
                self.last_error = Some((now_ms, failure.clone()));
                if matches!(outcome, Outcome::Gone(_)) {
                    self.gone = true;
                }
            }
        }
        if let Outcome::Refused(f) = &outcome {
            self.last_error = Some((now_ms, f.clone()));
        }
        let Some(p) = self.parts.get_mut(&flight.partition) else {
            return;
        };
        if p.incarnation != flight.incarnation {
            return;
        }
        p.dirty = true;
        let batch = flight.offsets.len() > 1;
        for o in flight.offsets {
            let Some(e) = p.pending.get_mut(&o) else {
                continue;
            };
            e.in_flight = false;
            match &outcome {
                Outcome::Delivered => {
                    let e = p.pending.remove(&o).expect("pending");
                    p.pending_bytes -= e.entry.bytes;
                    self.pending_bytes -= e.entry.bytes;
                    p.counts.delivered += 1;
                }
                Outcome::Refused(f) if batch => {
                    e.solo = true;
                    e.not_before_ms = now_ms;
                    e.last = Some(f.clone());
                    p.counts.retried += 1;
                }
                Outcome::Refused(f) => {
                    e.refusals += 1;
                    e.last = Some(f.clone());
                    e.first_failure_ms.get_or_insert(now_ms);
                    if e.refusals >= policy.record_attempts {
                        e.dead = true;
                        self.dead += 1;
                    } else {
                        p.counts.retried += 1;
                        let wait = schedule(&policy, e.refusals);
                        e.not_before_ms = now_ms + wait;
                    }
                }
                Outcome::Failed { failure, .. } | Outcome::Gone(failure) => {
                    e.last = Some(failure.clone());
                    let first = *e.first_failure_ms.get_or_insert(now_ms);
                    if now_ms.saturating_sub(first) >= policy.max_age_ms {
                        e.dead = true;
                        self.dead += 1;
                    } else {
                        p.counts.retried += 1;
                    }
                }
            }
        }
    }

    fn jittered(&mut self, ms: u64) -> u64 {
        // xorshift64: jitter needs no more.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng % 10_000) as f64 / 10_000.0; // [0, 1)
        (ms as f64 * (0.8 + 0.4 * unit)) as u64
    }

    /// Records that became dead letters and are not yet in the dead-letter
    /// topic. They stay pending (holding the cursor) until [`Sink::buried`].
    pub fn dead_letters(&self) -> Vec<DeadLetter<T>> {
        let mut out = Vec::new();
        if self.dead == 0 {
            return out;
        }
        for (&partition, p) in &self.parts {
            for (&offset, e) in &p.pending {
                if e.dead {
                    out.push(DeadLetter {
                        partition,
                        offset,
                        incarnation: p.incarnation,
                        payload: e.entry.payload.clone(),
                        attempts: e.tries,
                        failure: e.last.clone().unwrap_or_default(),
                    });
                }
            }
        }
        out
    }

    /// Dead letters the dead-letter topic now holds: done.
    pub fn buried(&mut self, letters: &[(u32, u64, u64)]) {
        for &(partition, offset, incarnation) in letters {
            let Some(p) = self.parts.get_mut(&partition) else {
                continue;
            };
            if p.incarnation != incarnation {
                continue;
            }
            if let Some(e) = p.pending.remove(&offset) {
                p.pending_bytes -= e.entry.bytes;
                self.pending_bytes -= e.entry.bytes;
                if e.dead {
                    self.dead -= 1;
                }
                p.counts.dead_lettered += 1;
                p.dirty = true;
            }
        }
    }

    /// Partitions whose progress changed since their last checkpoint, each
    /// with its cursor and row; they count as saved from now on.
    pub fn checkpoint(&mut self) -> Vec<(u32, u64, PartRow)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.parts {
            if std::mem::take(&mut p.dirty) {
                out.push((partition, p.cursor(), p.row()));
            }
        }
        out
    }

    /// Whether a partition's progress changed since its last checkpoint.
    pub fn dirty(&self) -> bool {
        self.parts.values().any(|p| p.dirty)
    }

    /// Marks partitions changed again, after a checkpoint failed to commit.
    pub fn unsaved(&mut self, partitions: &[u32]) {
        for p in partitions {
            if let Some(p) = self.parts.get_mut(p) {
                p.dirty = true;
            }
        }
    }

    /// What the status of the sink shows of a partition held.
    pub fn view(&self, partition: u32) -> Option<PartView> {
        let p = self.parts.get(&partition)?;
        Some(PartView {
            cursor: p.cursor(),
            oldest_ms: p.pending.values().next().map(|e| e.entry.timestamp_ms),
            counts: p.counts.clone(),
        })
    }

    /// Failures in a row of the endpoint, and when the next attempt may go.
    pub fn backoff(&self) -> (u32, Option<u64>) {
        let b = &self.backoff;
        (b.failures, (b.failures > 0).then_some(b.until_ms))
    }

    /// Whether the endpoint has failed [`FAILING_AFTER`] times in a row.
    pub fn failing(&self) -> bool {
        self.backoff.failures >= FAILING_AFTER
    }

    pub fn last_error(&self) -> Option<&(u64, Failure)> {
        self.last_error.as_ref()
    }

    /// Deliveries in flight.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Starts delivering again after a pause of the endpoint's backoff (an
    /// operator's resume).
    pub fn retry_now(&mut self) {
        self.backoff.until_ms = 0;
        self.gone = false;
    }
}

/// A partition's status.
#[derive(Debug, Clone)]
pub struct PartView {
    pub cursor: u64,
    /// Timestamp of the record at the cursor.
    pub oldest_ms: Option<u64>,
    pub counts: PartRow,
}

/// The wait after `failures` failures in a row (before jitter).
fn schedule(policy: &Policy, failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(40);
    policy
        .initial_ms
        .saturating_mul(1u64 << shift)
        .min(policy.max_ms)
}

enum Pick {
    Some(Vec<u64>),
    Wait(u64),
    None,
}

/// The records of `p` that may go now in one request.
fn pick<T>(p: &Part<T>, policy: &Policy, probe: bool, now_ms: u64) -> Pick {
    let limit = if probe { 1 } else { policy.max_records };
    let mut batch: Vec<u64> = Vec::new();
    let mut bytes = 0;
    let mut blocked: HashSet<u64> = HashSet::new();
    let mut wait: Option<u64> = None;
    let mut oldest_read = u64::MAX;
    let mut full = false;
    if policy.ordering == SinkOrdering::Partition
        && p.pending.values().next().is_some_and(|e| e.in_flight)
    {
        // One request at a time per partition.
        return Pick::None;
    }
    for (&o, e) in &p.pending {
        let ready = !e.in_flight && !e.dead && e.not_before_ms <= now_ms;
        if !ready {
            if !e.in_flight && !e.dead {
                wait = Some(wait.map_or(e.not_before_ms, |w| w.min(e.not_before_ms)));
            }
            match policy.ordering {
                SinkOrdering::Partition => break,
                SinkOrdering::Key => {
                    if let Some(k) = e.entry.key {
                        blocked.insert(k);
                    }
                    continue;
                }
                SinkOrdering::None => continue,
            }
        }
        if policy.ordering == SinkOrdering::Key
            && let Some(k) = e.entry.key
            && blocked.contains(&k)
        {
            continue;
        }
        let fits = batch.is_empty()
            || (!e.solo && batch.len() < limit && bytes + e.entry.bytes <= policy.max_bytes);
        if !fits {
            full = true;
            break;
        }
        batch.push(o);
        bytes += e.entry.bytes;
        oldest_read = oldest_read.min(e.read_ms);
        if e.solo || batch.len() >= limit {
            full = true;
            break;
        }
    }
    if batch.is_empty() {
        return wait.map_or(Pick::None, Pick::Wait);
    }
    if !full && policy.linger_ms > 0 && !probe {
        let due = oldest_read.saturating_add(policy.linger_ms);
        let window_full = p.pending.len() >= WINDOW || p.pending_bytes >= WINDOW_BYTES / 2;
        if now_ms < due && !window_full {
            return Pick::Wait(due);
        }
    }
    Pick::Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_openapi::SinkDefinition;

    fn policy(v: serde_json::Value) -> Policy {
        let mut base = serde_json::json!({"name":"s","source":{"topic":"t"},"url":"http://x/"});
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        let d: SinkDefinition = serde_json::from_value(base).unwrap();
        crate::def::check(&d).unwrap().0
    }

    fn entry(key: u64) -> Option<Entry<u64>> {
        Some(Entry {
            key: Some(key),
            bytes: 10,
            timestamp_ms: 0,
            payload: key,
        })
    }

    fn deliver(s: &mut Sink<u64>, now: u64) -> Delivery<u64> {
        match s.next(now) {
            Next::Deliver(d) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    fn refused() -> Outcome {
        Outcome::Refused(Failure {
            status: Some(422),
            ..Failure::default()
        })
    }

    #[test]
    fn a_failing_key_holds_back_only_its_own_records() {
        let mut s = Sink::new(policy(serde_json::json!({"retry":{"record_attempts":2}})));
        s.hold(0, 0, PartRow::default());
        for (o, k) in [(0, 1), (1, 2), (2, 1), (3, 3)] {
            s.push(0, o, entry(k), 0);
        }
        let a = deliver(&mut s, 0); // offset 0, key 1
        let b = deliver(&mut s, 0); // offset 1, key 2
        let c = deliver(&mut s, 0); // offset 3, key 3: offset 2 waits for key 1
        assert_eq!((a.records[0].0, b.records[0].0, c.records[0].0), (0, 1, 3));
        assert!(matches!(s.next(0), Next::Idle));
        s.complete(a.id, refused(), 0);
        s.complete(b.id, Outcome::Delivered, 0);
        s.complete(c.id, Outcome::Delivered, 0);
        // Offset 0 waits a second; offset 2 (same key) waits behind it.
        assert!(matches!(s.next(0), Next::WaitUntil(1_000)));
        let again = deliver(&mut s, 1_000);
        assert_eq!((again.records[0].0, again.attempt), (0, 2));
        s.complete(again.id, refused(), 1_000);
        let dead = s.dead_letters();
        assert_eq!((dead.len(), dead[0].offset, dead[0].attempts), (1, 0, 2));
        // Not delivered while it is on its way to the dead-letter topic.
        assert!(matches!(s.next(1_000), Next::Idle));
        let cp = s.checkpoint();
        assert_eq!(cp[0].1, 0, "the dead letter holds the cursor");
        assert_eq!(cp[0].2.done, vec![(1, 2), (3, 4)]);
        s.buried(&[(0, 0, dead[0].incarnation)]);
        let next = deliver(&mut s, 1_000);
        assert_eq!(next.records[0].0, 2, "the key's next record goes");
        s.complete(next.id, Outcome::Delivered, 1_000);
        let cp = s.checkpoint();
        assert_eq!((cp[0].1, cp[0].2.done.clone()), (4, vec![]));
        assert_eq!(
            (cp[0].2.delivered, cp[0].2.dead_lettered, cp[0].2.retried),
            (3, 1, 1)
        );
    }

    #[test]
    fn an_endpoint_failure_backs_off_with_one_probe() {
        let mut s = Sink::new(policy(serde_json::json!({})));
        s.hold(0, 0, PartRow::default());
        for o in 0..4 {
            s.push(0, o, entry(o), 0);
        }
        let ds: Vec<_> = (0..4).map(|_| deliver(&mut s, 0)).collect();
        let failed = || Outcome::Failed {
            failure: Failure::default(),
            retry_after_ms: None,
        };
        for d in &ds {
            s.complete(d.id, failed(), 0);
        }
        let (failures, until) = s.backoff();
        assert_eq!(failures, 4);
        let until = until.unwrap();
        assert!(matches!(s.next(0), Next::WaitUntil(t) if t == until));
        let probe = deliver(&mut s, until);
        assert_eq!(probe.records.len(), 1);
        assert!(matches!(s.next(until), Next::Idle), "one probe at a time");
        s.complete(
            probe.id,
            Outcome::Failed {
                failure: Failure::default(),
                retry_after_ms: Some(7_200_000),
            },
            until,
        );
        assert_eq!(s.backoff().1, Some(until + MAX_RETRY_AFTER_MS));
        let probe = deliver(&mut s, until + MAX_RETRY_AFTER_MS);
        s.complete(probe.id, Outcome::Delivered, until + MAX_RETRY_AFTER_MS);
        assert_eq!(s.backoff(), (0, None));
        let rest: Vec<_> = (0..3)
            .map(|_| deliver(&mut s, until + MAX_RETRY_AFTER_MS))
            .collect();
        assert_eq!(rest.len(), 3);
    }

    #[test]
    fn the_schedule_doubles_to_its_ceiling() {
        let p = policy(serde_json::json!({"retry":{"initial_ms":1000,"max_ms":600000}}));
        let waits: Vec<u64> = (1..=12).map(|n| schedule(&p, n)).collect();
        assert_eq!(&waits[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(waits[11], 600_000);
        // Three days of a dead endpoint: a few hundred probes, not a flood.
        let mut t = 0u64;
        let mut n = 0u32;
        while t < 72 * 3_600_000 {
            n += 1;
            t += schedule(&p, n);
        }
        assert!(n < 500, "{n} probes");
    }

    #[test]
    fn batches_split_when_refused_and_partition_order_is_one_at_a_time() {
        let mut s = Sink::new(policy(
            serde_json::json!({"ordering":"partition","batch":{"max_records":3}}),
        ));
        s.hold(0, 0, PartRow::default());
        for o in 0..5 {
            s.push(0, o, entry(o), 0);
        }
        let b = deliver(&mut s, 0);
        assert_eq!(b.records.len(), 3);
        assert!(matches!(s.next(0), Next::Idle), "one request per partition");
        s.complete(b.id, refused(), 0);
        for o in 0..3 {
            let d = deliver(&mut s, 0);
            assert_eq!(d.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![o]);
            s.complete(d.id, Outcome::Delivered, 0);
        }
        let d = deliver(&mut s, 0);
        assert_eq!(d.records.len(), 2);
    }

    #[test]
    fn a_restart_skips_what_was_done_above_the_cursor() {
        let mut s = Sink::new(policy(serde_json::json!({})));
        s.hold(
            0,
            5,
            PartRow {
                done: vec![(6, 8)],
                ..PartRow::default()
            },
        );
        for o in 5..10 {
            s.push(0, o, entry(o), 0);
        }
        let mut sent = Vec::new();
        while let Next::Deliver(d) = s.next(0) {
            sent.push(d.records[0].0);
        }
        assert_eq!(sent, vec![5, 8, 9]);
    }

    #[test]
    fn a_stale_outcome_of_an_earlier_hold_is_ignored() {
        let mut s = Sink::new(policy(serde_json::json!({})));
        s.hold(0, 0, PartRow::default());
        s.push(0, 0, entry(1), 0);
        let d = deliver(&mut s, 0);
        s.hold(0, 0, PartRow::default());
        s.complete(d.id, Outcome::Delivered, 0);
        assert_eq!(s.view(0).unwrap().counts.delivered, 0);
        assert_eq!(s.wants_read(0), Some((0, WINDOW)));
    }
}
