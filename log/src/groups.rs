//! The consumer-group coordinator: membership by polling, sticky balanced
//! assignment, generations and in-memory fetch positions. Committed offsets live in
//! the log; everything here is rebuilt from polls after a restart.
//!
//! One group may consume several topics; each topic's partitions are spread over
//! the members that poll that topic. Each consumer has a generation of its own, a
//! fencing token that changes whenever its assignment does; a commit must name the
//! consumer's current one. The HTTP poll and the WebSocket group subscription both
//! drive this type, through the gateway's one poll cycle. It knows no HTTP and no
//! async runtime: a long poll learns of a rebalance through the [`ChangeHook`].
//!
//! **Revoke before assign**: a partition moves to another member only once its
//! owner has been told it lost it (an answer to its poll without it), or once the
//! owner leaves or expires; until then it is nobody else's. No partition ever has
//! two owners.
//!
//! Generations never repeat for a group: not after the group empties and its state
//! is dropped, not after a restart. They come from one counter for all groups, in
//! blocks the log reserves durably (see [`TokenSource`]), so a commit made with a
//! token from before can never match a current one.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Called with a group's name whenever its generation moves (a rebalance, a member
/// told of its new assignment, the group removed), so waiting polls can look again.
pub type ChangeHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A member's view after joining or refreshing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The consumer's generation: its fencing token.
    pub generation: u64,
    /// The partitions of the topic this member owns, ascending.
    pub assignment: Vec<u32>,
    /// Whether the member's last answer already carried this generation; if not, it
    /// should be told the new assignment at once (which is also what lets the
    /// partitions it lost go to their next owners).
    pub informed: bool,
    /// The group's session timeout, in effect for every member.
    pub session_timeout: Duration,
}

/// One partition's state within a group's topic.
#[derive(Debug, Clone, Default)]
struct PartitionState {
    owner: Option<String>,
    /// Where the partition goes once its owner has been told it lost it; while set,
    /// the partition is in nobody's assignment.
    next: Option<String>,
    /// Next offset to hand out; `None` until first read from the committed offset.
    position: Option<u64>,
}

impl PartitionState {
    /// Whether `consumer` owns the partition and has not been asked to give it up.
    fn held_by(&self, consumer: &str) -> bool {
        self.owner.as_deref() == Some(consumer) && self.next.is_none()
    }
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

struct Group {
    /// The newest generation any of its consumers got.
    generation: u64,
    /// Each live consumer's generation (one over all the topics it polls).
    tokens: HashMap<String, u64>,
    /// Set by the poll that made the group; the same for all its members.
    session_timeout: Duration,
    topics: HashMap<String, TopicState>,
    /// The group's name, for the hook.
    name: String,
    /// Told whenever `generation` moves; long polls wait on it to learn of
    /// rebalances. Called with the coordinator's lock held: it must not call back.
    on_change: Option<ChangeHook>,
}

impl Group {
    fn new(name: &str, session_timeout: Duration, on_change: Option<ChangeHook>) -> Self {
        Group {
            generation: 0,
            tokens: HashMap::new(),
            session_timeout,
            topics: HashMap::new(),
            name: name.to_string(),
            on_change,
        }
    }

    /// Rebalances every topic of the group; gives a new generation to each
    /// consumer whose assignment changed.
    fn rebalance(&mut self, tokens: &Mutex<Tokens>) {
        let mut changed = std::collections::BTreeSet::new();
        for t in self.topics.values_mut() {
            changed.extend(rebalance(t));
        }
        self.renew(changed, tokens);
    }

    /// New generations for `consumers`; drops those of consumers that are gone.
    fn renew(&mut self, consumers: std::collections::BTreeSet<String>, tokens: &Mutex<Tokens>) {
        let topics = &self.topics;
        self.tokens
            .retain(|c, _| topics.values().any(|t| t.members.contains_key(c)));
        if consumers.is_empty() {
            return;
        }
        let mut tokens = tokens.lock().expect("tokens lock");
        for c in consumers {
            if topics.values().any(|t| t.members.contains_key(&c)) {
                self.generation = tokens.take();
                self.tokens.insert(c, self.generation);
            }
        }
        if let Some(hook) = &self.on_change {
            hook(&self.name);
        }
    }

    fn token(&self, consumer: &str) -> Option<u64> {
        self.tokens.get(consumer).copied()
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
    on_change: Option<ChangeHook>,
}

impl Coordinator {
    /// A coordinator whose generations come from `source`, and whose groups
    /// time members out after `default_session` unless their first poll asks for
    /// another value.
    pub fn new(
        source: TokenSource,
        default_session: Duration,
        on_change: Option<ChangeHook>,
    ) -> Self {
        Coordinator {
            default_session,
            on_change,
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
        let g = groups.entry(group.to_string()).or_insert_with(|| {
            let session = session_timeout.unwrap_or(self.default_session);
            Group::new(group, session, self.on_change.clone())
        });
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
        if g.token(consumer).is_none() {
            // A new member whose assignment is empty for now still needs a token.
            g.renew([consumer.to_string()].into(), &self.tokens);
        }
        let generation = g.token(consumer).expect("a member has a generation");
        let t = &g.topics[topic];
        Ok(MemberView {
            generation,
            assignment: owned(t, consumer),
            informed: t.members[consumer].answered == Some(generation),
            session_timeout: g.session_timeout,
        })
    }

    /// Records that the member was answered with `generation`. If that is its
    /// current one, it now knows it lost the partitions it was asked to give up:
    /// they go to their next owners (revoke before assign).
    pub fn answered(&self, group: &str, topic: &str, consumer: &str, generation: u64) {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else {
            return;
        };
        let current = g.token(consumer) == Some(generation);
        let Some(t) = g.topics.get_mut(topic) else {
            return;
        };
        let Some(m) = t.members.get_mut(consumer) else {
            return;
        };
        m.answered = Some(generation);
        if !current {
            return;
        }
        let mut receivers = std::collections::BTreeSet::new();
        for p in &mut t.partitions {
            if p.owner.as_deref() == Some(consumer)
                && let Some(next) = p.next.take()
            {
                p.owner = Some(next.clone());
                p.position = None;
                receivers.insert(next);
            }
        }
        g.renew(receivers, &self.tokens);
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
            .filter(|g| g.token(consumer) == Some(generation))?;
        let t = g.topics.get_mut(topic)?;
        Some(
            t.partitions
                .iter_mut()
                .enumerate()
                .filter(|(_, p)| p.held_by(consumer))
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
            .filter(|g| g.token(consumer) == Some(generation))
            .and_then(|g| g.topics.get_mut(topic))
        else {
            return false;
        };
        for &(p, from, next) in read {
            match t.partitions.get_mut(p as usize) {
                Some(s) if s.held_by(consumer) && s.position == Some(from) => {
                    s.position = Some(next);
                }
                _ => return false,
            }
        }
        true
    }

    /// Checks that a commit may go ahead: the consumer's current generation, and
    /// every partition owned by it. A partition it was asked to give up is still
    /// its own until it is told so, so what it read can still be committed.
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
        match g.token(consumer) {
            Some(current) if current == generation => {}
            Some(current) => {
                return Err(GroupError::Stale(format!(
                    "generation {generation} is stale; '{consumer}' is at generation {current}"
                )));
            }
            None => {
                return Err(GroupError::Stale(format!(
                    "'{consumer}' is not a live member of the group"
                )));
            }
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
        if let Some(g) = groups.get(group)
            && !force
            && g.topics.values().any(|t| !t.members.is_empty())
        {
            return Err(GroupError::Active);
        }
        if let Some(g) = groups.remove(group)
            && let Some(hook) = &g.on_change
        {
            hook(group);
        }
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

/// The partitions `consumer` is told it owns.
fn owned(t: &TopicState, consumer: &str) -> Vec<u32> {
    t.partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.held_by(consumer))
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
/// is still a member and under its share. A partition that moves away from a live
/// member is first revoked (`next` names where it goes, and it leaves the owner's
/// assignment); one whose owner is gone moves at once, and restarts from the
/// committed offset. Returns the members whose assignment changed.
fn rebalance(t: &mut TopicState) -> std::collections::BTreeSet<String> {
    let before: Vec<Option<String>> = t.partitions.iter().map(visible_owner).collect();
    let target = targets(t);
    for (p, target) in t.partitions.iter_mut().zip(target) {
        let live_owner = p.owner.as_ref().filter(|o| t.members.contains_key(*o));
        match live_owner {
            Some(o) if Some(o) == target.as_ref() => p.next = None,
            Some(_) => p.next = target,
            None => {
                if p.owner != target {
                    p.position = None;
                }
                p.owner = target;
                p.next = None;
            }
        }
    }
    let mut changed = std::collections::BTreeSet::new();
    for (p, was) in t.partitions.iter().zip(before) {
        let now = visible_owner(p);
        if now != was {
            changed.extend(was);
            changed.extend(now);
        }
    }
    changed
}

/// The member a partition is in the assignment of, if any.
fn visible_owner(p: &PartitionState) -> Option<String> {
    p.owner.clone().filter(|_| p.next.is_none())
}

/// Where each partition should end up: sticky to the member it is with or going
/// to, balanced, `None` only when there are no members.
fn targets(t: &TopicState) -> Vec<Option<String>> {
    let n = t.partitions.len();
    let m = t.members.len();
    if m == 0 {
        return vec![None; n];
    }
    // Each partition's intended owner: where it is going, else who has it.
    let intended: Vec<Option<&str>> = t
        .partitions
        .iter()
        .map(|p| {
            p.next
                .as_deref()
                .or(p.owner.as_deref())
                .filter(|o| t.members.contains_key(*o))
        })
        .collect();
    let (base, extra) = (n / m, n % m);
    let mut kept: BTreeMap<&str, usize> = t.members.keys().map(|k| (k.as_str(), 0)).collect();
    for o in intended.iter().flatten() {
        *kept.get_mut(o).expect("a member") += 1;
    }
    // The members that already hold the most get the `extra` larger shares.
    let mut order: Vec<(&str, usize)> = kept.iter().map(|(k, v)| (*k, *v)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let cap: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (*k, base + usize::from(i < extra)))
        .collect();
    let mut load: HashMap<&str, usize> = cap.keys().map(|k| (*k, 0)).collect();
    let mut out: Vec<Option<String>> = vec![None; n];
    let mut free = Vec::new();
    for (i, o) in intended.iter().enumerate() {
        match o {
            Some(o) if load[o] < cap[o] => {
                *load.get_mut(o).expect("a member") += 1;
                out[i] = Some(o.to_string());
            }
            _ => free.push(i),
        }
    }
    for i in free {
        let (who, _) = load
            .iter()
            .filter(|(k, l)| **l < cap[*k])
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .expect("a member under its share exists while partitions are free");
        let who = *who;
        *load.get_mut(who).expect("a member") += 1;
        out[i] = Some(who.to_string());
    }
    out
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
            None,
        )
    }

    /// A poll: join, and the answer that tells the member its assignment.
    fn join(c: &Coordinator, who: &str) -> MemberView {
        let view = c.join("g", "t", 1, 6, who, None, None, false).unwrap();
        c.answered("g", "t", who, view.generation);
        view
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
        join(&c, "c");
        // c gets its partitions once a and b have been told they lost them.
        let a2 = join(&c, "a");
        let b2 = join(&c, "b");
        let cc = join(&c, "c");
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
        let join7 = |w: &str| {
            let view = c.join("g", "t", 1, 7, w, None, None, false).unwrap();
            c.answered("g", "t", w, view.generation);
            view
        };
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

    /// A partition is nobody else's until its owner has been told it lost it.
    #[test]
    fn revoke_before_assign() {
        let c = coordinator();
        let a = join(&c, "a");
        assert_eq!(a.assignment.len(), 6);
        // b joins: a is to give up three, but has not been told yet.
        let b = c.join("g", "t", 1, 6, "b", None, None, false).unwrap();
        assert_eq!(b.assignment, Vec::<u32>::new(), "nothing until a is told");
        c.answered("g", "t", "b", b.generation);
        assert!(
            c.join("g", "t", 1, 6, "b", None, None, false)
                .unwrap()
                .assignment
                .is_empty()
        );
        // a may still commit what it read from all six, with the generation it had.
        let all: Vec<(&str, u32)> = (0..6).map(|p| ("t", p)).collect();
        assert!(
            matches!(
                c.check_commit("g", "a", a.generation, &all, None, false),
                Err(GroupError::Stale(_))
            ),
            "a's generation changed with its assignment"
        );
        let a2 = c.join("g", "t", 1, 6, "a", None, None, false).unwrap();
        assert_eq!(a2.assignment.len(), 3);
        assert!(!a2.informed);
        assert!(
            c.check_commit("g", "a", a2.generation, &all, None, false)
                .is_ok(),
            "until it is told, a still owns all six"
        );
        // a is told: the three go to b, and a can no longer commit them.
        c.answered("g", "t", "a", a2.generation);
        let b2 = c.join("g", "t", 1, 6, "b", None, None, false).unwrap();
        assert_eq!(b2.assignment.len(), 3);
        assert!(!b2.informed, "b has a new generation to learn");
        assert!(b2.assignment.iter().all(|p| !a2.assignment.contains(p)));
        assert!(matches!(
            c.check_commit("g", "a", a2.generation, &all, None, false),
            Err(GroupError::Stale(_))
        ));
        // A leave moves its partitions at once.
        c.leave("g", "a", None, false).unwrap();
        assert_eq!(
            c.join("g", "t", 1, 6, "b", None, None, false)
                .unwrap()
                .assignment
                .len(),
            6
        );
    }

    #[test]
    fn generations_never_repeat_after_a_group_empties() {
        let c = coordinator();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(join(&c, "a").generation);
            seen.push(join(&c, "b").generation);
            c.leave("g", "a", None, false).unwrap();
            seen.push(join(&c, "b").generation);
            c.leave("g", "b", None, false).unwrap();
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
