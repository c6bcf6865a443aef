//! Sluice's consumer groups kept by the cluster ([`sluice_log::ClusterGroups`]):
//! a Sluice consumer of a group on a topic is the Kafka member
//! `consumer/topic` of the same group (see `members`), so Kafka's own consumers
//! of that group share its partitions with Sluice's, and every gateway serves
//! every member. Committed offsets are Kafka's; the group-store calls of the
//! seam (admin commits, listing, deleting) go to the same coordinators.
//!
//! Names: a group is the Kafka group of the same name after the topic prefix,
//! as topics are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sluice_log::{ClusterGroups, Error, Result, Share, SharedMember, Topic};

use crate::members::{MemberError, Members};

/// How long a group's session timeout, once learnt, is taken as still in effect.
const SESSION_TTL: Duration = Duration::from_secs(10);

/// The cluster's groups, named with a prefix.
pub(crate) struct KafkaGroups {
    pub(crate) members: Members,
    prefix: String,
    /// The session timeout a member is told when its group's was not set here.
    default_session: Duration,
    /// Session timeouts in effect, by Kafka group, and when they were learnt.
    sessions: Mutex<HashMap<String, (Duration, std::time::Instant)>>,
}

impl From<MemberError> for Error {
    fn from(e: MemberError) -> Self {
        match e {
            MemberError::Stale(m) => Error::StaleGeneration(m),
            MemberError::Unavailable(m) => Error::Unavailable(m),
            MemberError::Invalid(m) => Error::Invalid(m),
        }
    }
}

impl KafkaGroups {
    pub(crate) fn new(members: Members, prefix: &str, default_session: Duration) -> Self {
        KafkaGroups {
            members,
            prefix: prefix.to_string(),
            default_session,
            sessions: Mutex::default(),
        }
    }

    /// The Kafka name of Sluice's group or topic `name`.
    pub(crate) fn kafka(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Sluice's name for Kafka group or topic `name`: none for another prefix's, or for
    /// the groups the engine keeps for itself (table leases; earlier versions
    /// kept one per table, named as its changelog's prefix).
    fn sluice<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str())
            .filter(|n| *n != crate::state::LEASE_GROUP && !n.starts_with(crate::state::CHANGELOGS))
    }

    /// The member of `consumer` on `topic`.
    fn member(consumer: &str, topic: &str) -> String {
        format!("{consumer}/{topic}")
    }

    /// The session timeout in effect for Kafka group `kafka`, for a member
    /// about to heartbeat (`joining`) or not. When the group has no member yet,
    /// `asked` (or the gateway's default) becomes it: the poll that makes the
    /// group sets it, as on the embedded engine. What is in effect is asked of
    /// the cluster again after [`SESSION_TTL`].
    fn session(&self, kafka: &str, joining: bool, asked: Option<Duration>) -> Result<Duration> {
        let cached = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(kafka)
            .copied();
        if let Some((value, at)) = cached
            && at.elapsed() < SESSION_TTL
        {
            return Ok(value);
        }
        let new = joining && self.members.describe(kafka)?.1.is_empty();
        let wanted = asked.unwrap_or(self.default_session);
        // The brokers' heartbeat interval stays unless it is not below the
        // session (then a third of it, within the test brokers' lower bound).
        let set = || {
            self.members
                .set_session_timeout(kafka, wanted, None)
                .or_else(|_| {
                    let heartbeat = (wanted / 3).max(Duration::from_millis(500));
                    self.members
                        .set_session_timeout(kafka, wanted, Some(heartbeat))
                })
        };
        let value = match new.then(set) {
            Some(Ok(())) => wanted,
            // A value the poll asked for must be within the brokers' bounds;
            // the gateway's default, where outside them, gives way to theirs.
            Some(Err(e)) if asked.is_some() => return Err(e.into()),
            _ => self
                .members
                .session_timeout(kafka)?
                .unwrap_or(self.default_session),
        };
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() % 1024 == 1023 {
            // Only what is still fresh is of use.
            sessions.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        }
        sessions.insert(kafka.to_string(), (value, std::time::Instant::now()));
        Ok(value)
    }

    /// Renews `holder`'s membership of the lease group `name`, subscribed to the
    /// Kafka topics `topics`: answers the partitions of them the group gives it
    /// (their leases) and how soon to renew. A holder that
    /// stops renewing loses its leases after the group's session timeout; one
    /// given a topic another holds gets it once the other renewed without it.
    pub(crate) fn leases(
        &self,
        name: &str,
        holder: &str,
        topics: &[String],
    ) -> Result<(crate::members::Partitions, Duration)> {
        let kafka = self.kafka(name);
        self.session(&kafka, true, None)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let a = self.members.heartbeat(&kafka, holder, &topics)?;
        Ok((a.partitions, a.heartbeat_interval))
    }

    /// Gives up `holder`'s leases of the group `name` at once (see
    /// [`Self::leases`]): the others get them at their next renewals.
    pub(crate) fn release(&self, name: &str, holder: &str) -> Result<()> {
        Ok(self.members.leave(&self.kafka(name), holder)?)
    }

    /// A group's committed offsets on one topic, per partition.
    pub(crate) fn committed(&self, group: &str, topic: &Topic) -> Result<Vec<Option<u64>>> {
        let partitions: Vec<i32> = (0..topic.partition_count() as i32).collect();
        let got =
            self.members
                .committed(&self.kafka(group), &self.kafka(topic.name()), &partitions)?;
        let mut out = vec![None; partitions.len()];
        for (p, o) in got {
            if o >= 0
                && let Some(slot) = out.get_mut(p as usize)
            {
                *slot = Some(o as u64);
            }
        }
        Ok(out)
    }

    /// Commits offsets for a group with no members.
    pub(crate) fn commit_as_admin(
        &self,
        group: &str,
        offsets: &[(String, u32, u64)],
    ) -> Result<()> {
        let mut by_topic: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t).or_default().push((*p as i32, *o as i64));
        }
        for (t, os) in by_topic {
            self.members
                .commit_as_admin(&self.kafka(group), &self.kafka(t), &os)
                .map_err(|e| match e {
                    MemberError::Stale(m) => Error::Unavailable(m),
                    e => e.into(),
                })?;
        }
        Ok(())
    }

    /// Every group with committed offsets, with the Sluice topics they are on.
    pub(crate) fn committed_groups(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        for g in self.members.groups()? {
            let Some(name) = self.sluice(&g) else {
                continue;
            };
            let mut topics: Vec<String> = self
                .members
                .all_committed(&g)?
                .into_iter()
                .filter_map(|(t, _, _)| self.sluice(&t).map(str::to_string))
                .collect();
            topics.sort_unstable();
            topics.dedup();
            if !topics.is_empty() {
                out.push((name.to_string(), topics));
            }
        }
        Ok(out)
    }

    /// Deletes a group with no members; answers how many committed offsets it had.
    pub(crate) fn delete(&self, group: &str) -> Result<usize> {
        let kafka = self.kafka(group);
        let had = self.members.all_committed(&kafka)?.len();
        match self.members.delete(&kafka) {
            Ok(_) => Ok(had),
            Err(MemberError::Stale(m)) => Err(Error::Unavailable(m)),
            Err(e) => Err(e.into()),
        }
    }
}

impl ClusterGroups for KafkaGroups {
    fn heartbeat(
        &self,
        group: &str,
        topic: &Topic,
        consumer: &str,
        session: Option<Duration>,
    ) -> Result<Share> {
        let kafka = self.kafka(group);
        let member = Self::member(consumer, topic.name());
        let session_timeout = self.session(&kafka, true, session)?;
        let topic_k = self.kafka(topic.name());
        let a = self
            .members
            .heartbeat(&kafka, &member, &[topic_k.as_str()])?;
        let partitions = a
            .partitions
            .iter()
            .filter(|(t, _)| *t == topic_k)
            .flat_map(|(_, ps)| ps.iter().map(|p| *p as u32))
            .collect();
        Ok(Share {
            epoch: a.epoch.max(0) as u64,
            partitions,
            heartbeat_interval: a.heartbeat_interval,
            session_timeout,
        })
    }

    fn commit(
        &self,
        group: &str,
        topic: &Topic,
        consumer: &str,
        epoch: u64,
        offsets: &[(u32, u64)],
    ) -> Result<()> {
        let offsets: Vec<(i32, i64)> = offsets.iter().map(|&(p, o)| (p as i32, o as i64)).collect();
        self.members
            .commit(
                &self.kafka(group),
                &Self::member(consumer, topic.name()),
                epoch.min(i32::MAX as u64) as i32,
                &self.kafka(topic.name()),
                &offsets,
            )
            .map_err(Error::from)
    }

    fn leave(&self, group: &str, topic: &Topic, consumer: &str) -> Result<bool> {
        let kafka = self.kafka(group);
        let member = Self::member(consumer, topic.name());
        let id = Members::member_id(&kafka, &member);
        let (_, members) = self.members.describe(&kafka)?;
        let was = members.iter().any(|m| m.member_id == id);
        self.members.leave(&kafka, &member)?;
        Ok(was)
    }

    fn members(&self, group: &str) -> Result<(Option<u64>, Vec<SharedMember>)> {
        let kafka = self.kafka(group);
        let (epoch, members) = self.members.describe(&kafka)?;
        let session_timeout = if members.is_empty() {
            self.default_session
        } else {
            self.session(&kafka, false, None)?
        };
        let mut out = Vec::new();
        for m in members {
            // Sluice's members name their consumer and topic; Kafka's own
            // consumers are listed by member id, once per topic they hold.
            let sluice = Members::consumer_of(&m.member_id).and_then(|c| c.split_once('/'));
            let topics: Vec<(String, Vec<u32>)> = m
                .assignment
                .iter()
                .filter_map(|(t, ps)| {
                    let t = self.sluice(t)?;
                    Some((t.to_string(), ps.iter().map(|p| *p as u32).collect()))
                })
                .collect();
            let (consumer, topics) = match sluice {
                Some((consumer, topic)) => {
                    let partitions = topics
                        .into_iter()
                        .find(|(t, _)| t == topic)
                        .map(|(_, ps)| ps)
                        .unwrap_or_default();
                    (consumer.to_string(), vec![(topic.to_string(), partitions)])
                }
                None => (m.member_id.clone(), topics),
            };
            for (topic, mut partitions) in topics {
                partitions.sort_unstable();
                out.push(SharedMember {
                    consumer: consumer.clone(),
                    topic,
                    epoch: m.member_epoch.max(0) as u64,
                    partitions,
                    session_timeout,
                });
            }
        }
        out.sort_by(|a, b| (&a.consumer, &a.topic).cmp(&(&b.consumer, &b.topic)));
        Ok(((epoch > 0 && !out.is_empty()).then_some(epoch as u64), out))
    }

    fn clear(&self, group: &str) -> Result<()> {
        let kafka = self.kafka(group);
        for m in self.members.describe(&kafka)?.1 {
            self.members.evict(&kafka, &m.member_id)?;
        }
        Ok(())
    }

    fn groups(&self) -> Result<Vec<String>> {
        Ok(self
            .members
            .groups()?
            .iter()
            .filter_map(|g| self.sluice(g).map(str::to_string))
            .collect())
    }
}
