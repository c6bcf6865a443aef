//! The consumer-group coordinator: membership by polling, sticky balanced
//! assignment, generations and in-memory fetch positions. Committed offsets live in
//! the log; everything here is rebuilt from polls after a restart.
//!
//! One group may consume several topics; each topic's partitions are spread over
//! the members that poll that topic. The group's generation changes whenever any of
//! its assignments changes, and a commit must name the current generation. The
//! HTTP poll and the WebSocket group subscription both drive this type.
//!
//! A generation is a fencing token that never repeats for a group: not after the
//! group empties and its state is dropped, not after a restart. Tokens come from
//! one counter for all groups, in blocks the log reserves durably (see
//! [`TokenSource`]), so a commit made with a token from before can never match a
//! current one.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A member's view after joining or refreshing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The group's generation.
    pub generation: u64,
    /// The partitions of the topic this member owns, ascending.
    pub assignment: Vec<u32>,
    /// Whether the member's last answer already carried this generation; if not, it
    /// should be told the new assignment at once.
    pub informed: bool,
    /// The group's session timeout, in effect for every member.
    pub session_timeout: Duration,
}

/// One partition's state within a group's topic.
#[derive(Debug, Clone, Default)]
struct PartitionState {
    owner: Option<String>,
    /// Next offset to hand out; `None` until first read from the committed offset.
    position: Option<u64>,
}

#[derive(Debug)]
struct Member {
    last_seen: Instant,
    /// The generation of the last answer the member was given.
    answered: Option<u64>,
    /// Token subject that created the member, when members are bound to subjects.
    subject: Option<String>,
}

#[derive(Debug, Default)]
struct TopicState {
    topic_id: u64,
    members: BTreeMap<String, Member>,
    partitions: Vec<PartitionState>,
}

#[derive(Debug)]
struct Group {
    generation: u64,
    /// Set by the poll that made the group; the same for all its members.
    session_timeout: Duration,
    topics: HashMap<String, TopicState>,
    /// Carries the generation; long polls wait on it to learn of rebalances.
    changed: watch::Sender<u64>,
}

impl Group {
    fn new(session_timeout: Duration) -> Self {
        Group {
            generation: 0,
            session_timeout,
            topics: HashMap::new(),
            changed: watch::channel(0).0,
        }
    }

    /// Rebalances every topic of the group and gives it a new generation.
    fn rebalance(&mut self, tokens: &Mutex<Tokens>) {
        for t in self.topics.values_mut() {
            rebalance(t);
        }
        self.generation = tokens.lock().expect("tokens lock").take();
        self.changed.send_replace(self.generation);
    }

    /// Drops members whose sessions ran out and rebalances if any went.
    fn expire(&mut self, now: Instant, tokens: &Mutex<Tokens>) {
        if expire(self, now) {
            self.rebalance(tokens);
        }
    }
}

/// Reserves a block of fencing tokens that no earlier reservation of this store
/// handed out, durably, before any of them is used.
pub type TokenSource = Box<dyn Fn() -> Result<Range<u64>, String> + Send + Sync>;

/// The counter every generation is taken from.
struct Tokens {
    next: u64,
    end: u64,
    source: TokenSource,
}

impl Tokens {
    fn take(&mut self) -> u64 {
        if self.next >= self.end {
            match (self.source)() {
                // Never below a token already handed out while reserving failed.
                Ok(block) if !block.is_empty() => {
                    (self.next, self.end) = (block.start.max(self.next), block.end)
                }
                Ok(_) => tracing::error!("empty block of fencing tokens reserved"),
                // The store refuses writes; so will every commit. Going on past the
                // block keeps tokens unique within this process.
                Err(e) => tracing::error!(error = %e, "could not reserve fencing tokens"),
            }
            self.end = self.end.max(self.next + 1);
        }
        let token = self.next;
        self.next += 1;
        token
    }
}

/// Why a group operation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupError {
    /// The commit names an old generation or a partition the member does not own.
    Stale(String),
    /// The consumer id belongs to another token subject.
    NotYours,
    /// No such member.
    UnknownMember,
    /// The group has live members.
    Active,
}

/// A member's snapshot of one live member, for describing a group.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub consumer: String,
    pub topic: String,
    pub idle: Duration,
    pub session_timeout: Duration,
    pub assignment: Vec<u32>,
}

/// All groups' membership and positions.
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Locked after `groups`, never before.
    tokens: Mutex<Tokens>,
    /// A new group's session timeout when its first poll names none.
    default_session: Duration,
}

impl Coordinator {
    /// A coordinator whose generations come from `source`, and whose groups
    /// time members out after `default_session` unless their first poll asks for
    /// another value.
    pub fn new(source: TokenSource, default_session: Duration) -> Self {
        Coordinator {
            default_session,
            groups: Mutex::default(),
            tokens: Mutex::new(Tokens {
                next: 0,
                end: 0,
                source,
            }),
        }
    }

    /// Registers or refreshes `consumer` as a member of `group` for `topic`,
    /// rebalancing if membership changed. `partitions` is the topic's partition
    /// count; a topic re-created under the same name (new `topic_id`) starts over.
    /// `session_timeout` is taken only by the poll that makes the group (it belongs
    /// to the group); the answer carries the value in effect.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        group: &str,
        topic: &str,
        topic_id: u64,
        partitions: u32,
        consumer: &str,
        session_timeout: Option<Duration>,
        subject: Option<&str>,
        bind_subject: bool,
    ) -> Result<MemberView, GroupError> {
        let mut groups = self.groups.lock().expect("groups lock");
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(session_timeout.unwrap_or(self.default_session)));
        let now = Instant::now();
        let mut changed = expire(g, now);
        let t = g.topics.entry(topic.to_string()).or_default();
        if t.topic_id != topic_id || t.partitions.len() != partitions as usize {
            *t = TopicState {
                topic_id,
                members: std::mem::take(&mut t.members),
                partitions: vec![PartitionState::default(); partitions as usize],
            };
            changed = true;
        }
        match t.members.get_mut(consumer) {
            Some(m) => {
                if bind_subject && m.subject.as_deref() != subject {
                    return Err(GroupError::NotYours);
                }
                m.last_seen = now;
            }
            None => {
                t.members.insert(
                    consumer.to_string(),
                    Member {
                        last_seen: now,
                        answered: None,
                        subject: subject.map(str::to_string),
                    },
                );
                changed = true;
            }
        }
        if changed {
            g.rebalance(&self.tokens);
        }
        let t = &g.topics[topic];
        Ok(MemberView {
            generation: g.generation,
            assignment: owned(t, consumer),
            informed: t.members[consumer].answered == Some(g.generation),
            session_timeout: g.session_timeout,
        })
    }

    /// Records that the member was answered with `generation`.
    pub fn answered(&self, group: &str, topic: &str, consumer: &str, generation: u64) {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(m) = groups
            .get_mut(group)
            .and_then(|g| g.topics.get_mut(topic))
            .and_then(|t| t.members.get_mut(consumer))
        {
            m.answered = Some(generation);
        }
    }

    /// Removes a member from every topic of the group at once.
    pub fn leave(
        &self,
        group: &str,
        consumer: &str,
        subject: Option<&str>,
        bind_subject: bool,
    ) -> Result<(), GroupError> {
        let mut groups = self.groups.lock().expect("groups lock");
        let g = groups.get_mut(group).ok_or(GroupError::UnknownMember)?;
        let mut found = false;
        for t in g.topics.values_mut() {
            if let Some(m) = t.members.get(consumer) {
                if bind_subject && m.subject.as_deref() != subject {
                    return Err(GroupError::NotYours);
                }
                t.members.remove(consumer);
                found = true;
            }
        }
        if !found {
            return Err(GroupError::UnknownMember);
        }
        g.rebalance(&self.tokens);
        Ok(())
    }

    /// Drops members whose sessions ran out, in every group; rebalances what changed.
    pub fn expire_all(&self) {
        let mut groups = self.groups.lock().expect("groups lock");
        let now = Instant::now();
        for g in groups.values_mut() {
            g.expire(now, &self.tokens);
        }
        groups.retain(|_, g| g.topics.values().any(|t| !t.members.is_empty()));
    }

    /// A receiver that changes with the group's generation.
    pub fn watch(&self, group: &str) -> Option<watch::Receiver<u64>> {
        let groups = self.groups.lock().expect("groups lock");
        groups.get(group).map(|g| g.changed.subscribe())
    }

    /// The positions to read from for `consumer`'s partitions, if it still owns them
    /// in `generation`. A partition without a position yet gets `committed(p)`.
    pub fn positions(
        &self,
        group: &str,
        topic: &str,
        consumer: &str,
        generation: u64,
        committed: impl Fn(u32) -> u64,
    ) -> Option<Vec<(u32, u64)>> {
        let mut groups = self.groups.lock().expect("groups lock");
        let g = groups
            .get_mut(group)
            .filter(|g| g.generation == generation)?;
        let t = g.topics.get_mut(topic)?;
        Some(
            t.partitions
                .iter_mut()
                .enumerate()
                .filter(|(_, p)| p.owner.as_deref() == Some(consumer))
                .map(|(i, p)| {
                    let pos = *p.position.get_or_insert_with(|| committed(i as u32));
                    (i as u32, pos)
                })
                .collect(),
        )
    }

    /// Moves positions past what a poll returned, if the generation still holds;
    /// returns whether it did (if not, the records must not be handed out).
    pub fn advance(
        &self,
        group: &str,
        topic: &str,
        consumer: &str,
        generation: u64,
        read: &[(u32, u64, u64)],
    ) -> bool {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(t) = groups
            .get_mut(group)
            .filter(|g| g.generation == generation)
            .and_then(|g| g.topics.get_mut(topic))
        else {
            return false;
        };
        for &(p, from, next) in read {
            match t.partitions.get_mut(p as usize) {
                Some(s) if s.owner.as_deref() == Some(consumer) && s.position == Some(from) => {
                    s.position = Some(next);
                }
                _ => return false,
            }
        }
        true
    }

    /// Checks that a commit may go ahead: current generation, and every partition
    /// owned by the committing member.
    pub fn check_commit(
        &self,
        group: &str,
        consumer: &str,
        generation: u64,
        partitions: &[(&str, u32)],
        subject: Option<&str>,
        bind_subject: bool,
    ) -> Result<(), GroupError> {
        let groups = self.groups.lock().expect("groups lock");
        let g = groups
            .get(group)
            .ok_or_else(|| GroupError::Stale("the group has no live members".into()))?;
        if g.generation != generation {
            return Err(GroupError::Stale(format!(
                "generation {generation} is stale; the group is at generation {}",
                g.generation
            )));
        }
        for &(topic, p) in partitions {
            let t = g.topics.get(topic);
            let member = t.and_then(|t| t.members.get(consumer));
            if let Some(m) = member
                && bind_subject
                && m.subject.as_deref() != subject
            {
                return Err(GroupError::NotYours);
            }
            let owner = t.and_then(|t| t.partitions.get(p as usize)?.owner.as_deref());
            if owner != Some(consumer) {
                return Err(GroupError::Stale(format!(
                    "partition {p} of '{topic}' is not assigned to '{consumer}'"
                )));
            }
        }
        Ok(())
    }

    /// Puts the positions of a topic's partitions at the given offsets (after a
    /// commit moved them forward, or a reset).
    pub fn set_positions(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
        only_forward: bool,
    ) {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(t) = groups.get_mut(group).and_then(|g| g.topics.get_mut(topic)) else {
            return;
        };
        for &(p, o) in offsets {
            if let Some(s) = t.partitions.get_mut(p as usize) {
                s.position = Some(match s.position {
                    Some(cur) if only_forward => cur.max(o),
                    _ => o,
                });
            }
        }
    }

    /// Live members, per topic.
    pub fn members(&self, group: &str) -> Vec<MemberInfo> {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else {
            return Vec::new();
        };
        let now = Instant::now();
        g.expire(now, &self.tokens);
        let mut out = Vec::new();
        for (name, t) in &g.topics {
            for (id, m) in &t.members {
                out.push(MemberInfo {
                    consumer: id.clone(),
                    topic: name.clone(),
                    idle: now.duration_since(m.last_seen),
                    session_timeout: g.session_timeout,
                    assignment: owned(t, id),
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, &a.consumer).cmp(&(&b.topic, &b.consumer)));
        out
    }

    /// The group's generation, if it has live state.
    pub fn generation(&self, group: &str) -> Option<u64> {
        self.groups
            .lock()
            .expect("groups lock")
            .get(group)
            .map(|g| g.generation)
    }

    /// Names of groups with live members.
    pub fn live_groups(&self) -> Vec<String> {
        self.groups
            .lock()
            .expect("groups lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets a group's membership and positions; refused while it has members
    /// unless `force`.
    pub fn remove(&self, group: &str, force: bool) -> Result<(), GroupError> {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(g) = groups.get(group) {
            if !force && g.topics.values().any(|t| !t.members.is_empty()) {
                return Err(GroupError::Active);
            }
            g.changed.send_replace(u64::MAX);
        }
        groups.remove(group);
        Ok(())
    }

    /// Whether the group has live members on `topic`.
    pub fn active_on(&self, group: &str, topic: &str) -> bool {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else {
            return false;
        };
        g.expire(Instant::now(), &self.tokens);
        g.topics.get(topic).is_some_and(|t| !t.members.is_empty())
    }
}

/// Resolves when the group's generation changes; never when there is no group.
pub async fn rebalanced(watch: Option<&mut watch::Receiver<u64>>) {
    match watch {
        Some(w) => {
            let _ = w.changed().await;
        }
        None => std::future::pending().await,
    }
}

fn owned(t: &TopicState, consumer: &str) -> Vec<u32> {
    t.partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.owner.as_deref() == Some(consumer))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Drops members past their session timeout; returns whether any went.
fn expire(g: &mut Group, now: Instant) -> bool {
    let mut changed = false;
    let timeout = g.session_timeout;
    for t in g.topics.values_mut() {
        let before = t.members.len();
        t.members
            .retain(|_, m| now.duration_since(m.last_seen) <= timeout);
        changed |= t.members.len() != before;
    }
    changed
}

/// Sticky, balanced assignment: every partition goes to exactly one member, member
/// loads differ by at most one, and a partition keeps its owner whenever that owner
/// is still a member and under its share. A partition that changes hands restarts
/// from the committed offset (its position is cleared).
fn rebalance(t: &mut TopicState) {
    let n = t.partitions.len();
    let m = t.members.len();
    if m == 0 {
        for p in &mut t.partitions {
            p.owner = None;
            p.position = None;
        }
        return;
    }
    let (base, extra) = (n / m, n % m);
    let mut kept: BTreeMap<&str, usize> = t.members.keys().map(|k| (k.as_str(), 0)).collect();
    for p in &t.partitions {
        if let Some(c) = kept.get_mut(p.owner.as_deref().unwrap_or("")) {
            *c += 1;
        }
    }
    // The members that already hold the most get the `extra` larger shares.
    let mut order: Vec<(&str, usize)> = kept.iter().map(|(k, v)| (*k, *v)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let cap: HashMap<String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.to_string(), base + usize::from(i < extra)))
        .collect();
    let mut load: HashMap<String, usize> = cap.keys().map(|k| (k.clone(), 0)).collect();
    let mut free = Vec::new();
    for (i, p) in t.partitions.iter_mut().enumerate() {
        let keep = p
            .owner
            .as_ref()
            .is_some_and(|o| load.get(o).is_some_and(|l| *l < cap[o]));
        if keep {
            *load
                .get_mut(p.owner.as_ref().expect("kept owner"))
                .expect("member") += 1;
        } else {
            p.owner = None;
            p.position = None;
            free.push(i);
        }
    }
    for i in free {
        let (who, _) = load
            .iter()
            .filter(|(k, l)| **l < cap[*k])
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .expect("a member under its share exists while partitions are free");
        let who = who.clone();
        *load.get_mut(&who).expect("member") += 1;
        t.partitions[i].owner = Some(who);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens from a counter in memory, in blocks of 3 so tests cross blocks.
    fn coordinator() -> Coordinator {
        let next = Mutex::new(1);
        Coordinator::new(
            Box::new(move || {
                let mut n = next.lock().unwrap();
                *n += 3;
                Ok(*n - 3..*n)
            }),
            Duration::from_secs(30),
        )
    }

    fn join(c: &Coordinator, who: &str) -> MemberView {
        c.join("g", "t", 1, 6, who, None, None, false).unwrap()
    }

    #[test]
    fn balanced_disjoint_and_sticky() {
        let c = coordinator();
        let a1 = join(&c, "a");
        assert_eq!(a1.assignment, vec![0, 1, 2, 3, 4, 5]);
        join(&c, "b");
        let a = join(&c, "a");
        let b = join(&c, "b");
        assert_eq!(a.assignment.len(), 3);
        assert_eq!(b.assignment.len(), 3);
        // Sticky: a kept three of its own.
        assert!(a.assignment.iter().all(|p| a1.assignment.contains(p)));
        let cc = join(&c, "c");
        let a2 = join(&c, "a");
        let b2 = join(&c, "b");
        let mut all: Vec<u32> = [&a2.assignment, &b2.assignment, &cc.assignment]
            .iter()
            .flat_map(|v| v.iter().copied())
            .collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
        assert!([&a2, &b2, &cc].iter().all(|v| v.assignment.len() == 2));
        assert!(
            a2.assignment.iter().all(|p| a.assignment.contains(p)),
            "only moved what it had to"
        );
        c.leave("g", "c", None, false).unwrap();
        let a3 = join(&c, "a");
        let b3 = join(&c, "b");
        assert_eq!(a3.assignment.len() + b3.assignment.len(), 6);
        assert!(a3.generation > a2.generation);
    }

    #[test]
    fn seven_partitions_over_three_members_differ_by_at_most_one() {
        let c = coordinator();
        let join7 = |w: &str| c.join("g", "t", 1, 7, w, None, None, false).unwrap();
        for w in ["x", "y", "z"] {
            join7(w);
        }
        let sizes: Vec<usize> = ["x", "y", "z"]
            .iter()
            .map(|w| join7(w).assignment.len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }

    #[test]
    fn generations_never_repeat_after_a_group_empties() {
        let c = coordinator();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(join(&c, "a").generation);
            c.leave("g", "a", None, false).unwrap();
            seen.push(c.generation("g").unwrap());
            c.expire_all();
            assert_eq!(c.generation("g"), None, "the empty group is forgotten");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            seen.len(),
            "a generation came twice: {seen:?}"
        );
        assert_eq!(sorted, seen, "generations only grow: {seen:?}");
    }

    #[test]
    fn stale_commits_are_refused() {
        let c = coordinator();
        let a = join(&c, "a");
        assert!(
            c.check_commit("g", "a", a.generation, &[("t", 0)], None, false)
                .is_ok()
        );
        join(&c, "b");
        assert!(matches!(
            c.check_commit("g", "a", a.generation, &[("t", 0)], None, false),
            Err(GroupError::Stale(_))
        ));
        let a = join(&c, "a");
        let not_mine = (0..6).find(|p| !a.assignment.contains(p)).unwrap();
        assert!(matches!(
            c.check_commit("g", "a", a.generation, &[("t", not_mine)], None, false),
            Err(GroupError::Stale(_))
        ));
    }
}
