//! Consumer-group members that live in no client process (KIP-848): a Sluice
//! consumer of a group is a Kafka group member whose id is derived from the group
//! and the consumer id, and whose state (epoch, assignment, committed offsets)
//! the group's coordinator keeps. Any gateway can serve its next poll: one that
//! has not seen the member, or whose idea of its epoch is stale, heartbeats with
//! epoch 0 and the subscription, which the coordinator answers with the member's
//! current epoch and partitions without fencing it (see `wire`).
//!
//! Each call is a blocking round trip to the coordinator (found once per group,
//! found again when it moves).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::Fnv;
use crate::wire::Wire;

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

const GROUP_ID_NOT_FOUND: i16 = 69;

/// What every member id this engine makes starts with.
const MEMBER_PREFIX: &str = "sluice-";

/// How long a call looks for a moved coordinator before giving up.
const COORDINATOR_WAIT: Duration = Duration::from_secs(10);

/// A member's partitions, as its coordinator last told them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The member's epoch: its fencing token.
    pub epoch: i32,
    /// Its partitions, by topic name, ascending.
    pub partitions: Partitions,
    /// How often the coordinator wants to hear from the member.
    pub heartbeat_interval: Duration,
}

/// Partitions by topic name.
pub type Partitions = Vec<(String, Vec<i32>)>;

/// Partitions by topic id.
type Owned = Vec<([u8; 16], Vec<i32>)>;

/// A member as this gateway last heard of it.
#[derive(Debug, Clone)]
struct Known {
    /// Its epoch, as the coordinator last gave it.
    epoch: i32,
    /// Its assignment by topic id, as the coordinator gave it.
    owned: Owned,
    /// When this gateway last heartbeat for the member.
    seen: std::time::Instant,
}

/// A member this gateway has not heartbeat for this long is forgotten (a later
/// heartbeat looks it up again).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Why a member call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberError {
    /// The member's epoch is not the coordinator's (a commit from before a
    /// rebalance).
    Stale(String),
    /// The cluster could not be asked.
    Unavailable(String),
    /// The cluster refused a setting.
    Invalid(String),
}

/// Members of any group, served through their coordinators.
pub struct Members {
    wire: Wire,
    bootstrap: String,
    rebalance_timeout_ms: i32,
    coordinators: Mutex<HashMap<String, String>>,
    /// What this gateway last heard of each (group, consumer).
    known: Mutex<HashMap<(String, String), Known>>,
    /// Topic names by topic id.
    names: Mutex<HashMap<[u8; 16], String>>,
}

impl Members {
    /// Members served through the brokers at `bootstrap`, or none when the
    /// listener is not plaintext.
    pub fn new(
        bootstrap: &str,
        client: &[(String, String)],
        timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Option<Members> {
        Some(Members {
            wire: Wire::new(client, timeout)?,
            bootstrap: bootstrap.to_string(),
            rebalance_timeout_ms: rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
            coordinators: Mutex::default(),
            known: Mutex::default(),
            names: Mutex::default(),
        })
    }

    /// The Kafka member id of `consumer` in `group`: the same on every gateway;
    /// it ends with `consumer`, so it reads in Kafka's tools and describes.
    pub fn member_id(group: &str, consumer: &str) -> String {
        let (mut a, mut b) = (Fnv::new(), Fnv::new());
        a.write(group.as_bytes());
        a.write(&[0]);
        a.write(consumer.as_bytes());
        b.write(consumer.as_bytes());
        b.write(&[0]);
        b.write(group.as_bytes());
        format!("{MEMBER_PREFIX}{:016x}{:016x}-{consumer}", a.0, b.0)
    }

    /// The consumer a member id of [`Members::member_id`] was made for.
    pub fn consumer_of(member_id: &str) -> Option<&str> {
        let rest = member_id.strip_prefix(MEMBER_PREFIX)?;
        let (hash, consumer) = rest.split_at_checked(32)?;
        hash.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| consumer.strip_prefix('-'))
            .flatten()
    }

    /// Heartbeats for `consumer` of `group`, subscribed to `topics`; answers its
    /// epoch and partitions.
    ///
    /// Every heartbeat is a full one (subscription, rebalance timeout and the
    /// partitions held), which the coordinator answers with the whole
    /// assignment: another gateway may have served the member since, so what
    /// this one knew can be out of date even at the same epoch. A member this
    /// gateway does not know, or knows at an epoch the coordinator no longer has,
    /// is first looked up (`ConsumerGroupDescribe`) and goes on at its current
    /// epoch, reporting what the coordinator last gave it, so partitions it is
    /// giving up stay its own until it was told; only a member the group does not
    /// have joins with epoch 0.
    pub fn heartbeat(
        &self,
        group: &str,
        consumer: &str,
        topics: &[&str],
    ) -> Result<Assignment, MemberError> {
        let key = (group.to_string(), consumer.to_string());
        let id = Self::member_id(group, consumer);
        let known = self.known.lock().expect("members lock").get(&key).cloned();
        let mut state = known.map(|k| (k.epoch, k.owned));
        for _ in 0..3 {
            let (epoch, owned) = match state.take() {
                Some(s) => s,
                None => self.look_up(group, &id)?,
            };
            let hb = self.with_coordinator(group, |c| {
                self.wire.heartbeat(
                    c,
                    group,
                    &id,
                    epoch,
                    Some(topics),
                    self.rebalance_timeout_ms,
                    Some(&owned),
                )
            })?;
            match hb.error {
                0 => {}
                FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID if epoch != 0 => continue,
                _ => {
                    return Err(MemberError::Unavailable(format!(
                        "heartbeat: {}",
                        hb.error_name.unwrap_or_default()
                    )));
                }
            }
            // A full heartbeat is answered with the assignment.
            let owned = hb.assignment.unwrap_or(owned);
            let partitions = self.named(group, topics, &owned)?;
            let assignment = Assignment {
                epoch: hb.member_epoch,
                partitions,
                heartbeat_interval: Duration::from_millis(hb.heartbeat_interval_ms.max(0) as u64),
            };
            let mut known = self.known.lock().expect("members lock");
            if !known.contains_key(&key) && known.len() % 1024 == 1023 {
                // Members come and go by the id they choose: those long gone go.
                known.retain(|_, k| k.seen.elapsed() < FORGET_AFTER);
            }
            known.insert(
                key,
                Known {
                    epoch: assignment.epoch,
                    owned,
                    seen: std::time::Instant::now(),
                },
            );
            return Ok(assignment);
        }
        Err(MemberError::Unavailable(
            "heartbeat: fenced three times in a row".into(),
        ))
    }

    /// The epoch and partitions the coordinator has for member `id` of
    /// `group`; epoch 0 and none when the group does not have it.
    fn look_up(&self, group: &str, id: &str) -> Result<(i32, Owned), MemberError> {
        let (_, members) = self.describe(group)?;
        Ok(members
            .into_iter()
            .find(|m| m.member_id == id)
            .map_or((0, Vec::new()), |m| (m.member_epoch, m.assigned_ids)))
    }

    /// Commits `offsets` (next offset to read, by partition) of `topic` as
    /// `consumer` at `epoch`.
    pub fn commit(
        &self,
        group: &str,
        consumer: &str,
        epoch: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), MemberError> {
        let id = Self::member_id(group, consumer);
        let errors = self.with_coordinator(group, |c| {
            self.wire
                .commit_offsets(c, group, &id, epoch, topic, offsets)
                .map(Codes)
        })?;
        for (p, e) in errors.0 {
            match e {
                0 => {}
                STALE_MEMBER_EPOCH | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID
                | FENCED_MEMBER_EPOCH | GROUP_ID_NOT_FOUND => {
                    return Err(MemberError::Stale(format!(
                        "epoch {epoch} is not the member's current one (partition {p})"
                    )));
                }
                other => {
                    return Err(MemberError::Unavailable(format!(
                        "commit of partition {p}: error {other}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The committed offsets of `partitions` of `topic` for `group` (-1 where
    /// none is).
    pub fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, MemberError> {
        self.with_coordinator(group, |c| {
            self.wire
                .committed_offsets(c, group, None, -1, topic, partitions)
                .map(Offsets)
        })
        .map(|a| a.0)
    }

    /// Commits `offsets` of `topic` for `group` as no member: what an admin
    /// does to a group with no members (refused while it has some).
    pub fn commit_as_admin(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), MemberError> {
        let errors = self.with_coordinator(group, |c| {
            self.wire
                .commit_offsets(c, group, "", -1, topic, offsets)
                .map(Codes)
        })?;
        match errors.0.iter().find(|(_, e)| *e != 0) {
            None => Ok(()),
            Some((p, UNKNOWN_MEMBER_ID)) => Err(MemberError::Stale(format!(
                "group '{group}' has members (partition {p})"
            ))),
            Some((p, e)) => Err(MemberError::Unavailable(format!(
                "commit of partition {p}: error {e}"
            ))),
        }
    }

    /// Every committed offset of `group`: (topic, partition, offset).
    pub fn all_committed(&self, group: &str) -> Result<Vec<(String, i32, i64)>, MemberError> {
        self.with_coordinator(group, |c| self.wire.group_offsets(c, group).map(Offsets3))
            .map(|o| o.0)
    }

    /// `group`'s epoch (0: no members) and members.
    pub fn describe(
        &self,
        group: &str,
    ) -> Result<(i32, Vec<crate::wire::MemberState>), MemberError> {
        self.with_coordinator(group, |c| self.wire.describe_group(c, group).map(Described))
            .map(|d| d.0)
    }

    /// Every group of the cluster, asked of each broker the cluster lists, as each
    /// answers for the groups it coordinates. A broker that does not answer (lost
    /// a moment ago: the cluster still lists it until its session ends and its
    /// groups move) makes the whole listing start again, for up to
    /// [`COORDINATOR_WAIT`]: a listing without it would leave its groups out.
    pub fn groups(&self) -> Result<Vec<String>, MemberError> {
        patiently(|| {
            let mut out = self.list_every_broker()?;
            out.sort_unstable();
            out.dedup();
            Ok(out)
        })
    }

    /// One listing of [`Members::groups`]: the brokers from the first bootstrap
    /// address that answers, then each broker's groups.
    fn list_every_broker(&self) -> Result<Vec<String>, String> {
        let brokers = self.any_broker(|addr| self.wire.brokers(addr))?;
        let mut out = Vec::new();
        for b in brokers {
            out.extend(self.wire.list_groups(&b)?);
        }
        Ok(out)
    }

    /// The first answer of the bootstrap brokers, asked in turn until one answers.
    fn any_broker<T>(&self, ask: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
        let mut last = String::from("no bootstrap broker");
        for addr in self
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match ask(addr) {
                Ok(answer) => return Ok(answer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Deletes `group` and its committed offsets; answers whether it existed.
    /// Refused while it has members.
    pub fn delete(&self, group: &str) -> Result<bool, MemberError> {
        const GROUP_NOT_EMPTY: i16 = 68;
        let code = self.with_coordinator(group, |c| self.wire.delete_group(c, group).map(Code))?;
        match code.0 {
            0 => Ok(true),
            GROUP_ID_NOT_FOUND => Ok(false),
            GROUP_NOT_EMPTY => Err(MemberError::Stale(format!("group '{group}' has members"))),
            e => Err(MemberError::Unavailable(format!("delete group: error {e}"))),
        }
    }

    /// Sets `group`'s session timeout (how long a member that stops polling
    /// keeps its partitions) and, when given, the heartbeat interval its
    /// members are asked for (else the brokers' applies). The brokers bound both (`group.consumer.min.session.timeout.ms`,
    /// `group.consumer.max.session.timeout.ms`, and the same for the heartbeat
    /// interval); a value outside them is refused.
    pub fn set_session_timeout(
        &self,
        group: &str,
        session: Duration,
        heartbeat: Option<Duration>,
    ) -> Result<(), MemberError> {
        let mut configs = vec![(
            "consumer.session.timeout.ms",
            session.as_millis().to_string(),
        )];
        if let Some(h) = heartbeat {
            configs.push(("consumer.heartbeat.interval.ms", h.as_millis().to_string()));
        }
        self.any_broker(|addr| self.wire.set_group_configs(addr, group, &configs))
            .map_err(MemberError::Unavailable)?
            .map_err(MemberError::Invalid)
    }

    /// `group`'s session timeout (the brokers' default where it has none set).
    pub fn session_timeout(&self, group: &str) -> Result<Option<Duration>, MemberError> {
        let value = self
            .any_broker(|addr| {
                self.wire
                    .group_config(addr, group, "consumer.session.timeout.ms")
            })
            .map_err(MemberError::Unavailable)?;
        Ok(value
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis))
    }

    /// Takes `consumer` out of `group`; its partitions go to the others at their
    /// next heartbeat.
    pub fn leave(&self, group: &str, consumer: &str) -> Result<(), MemberError> {
        self.known
            .lock()
            .expect("members lock")
            .remove(&(group.to_string(), consumer.to_string()));
        self.evict(group, &Self::member_id(group, consumer))
    }

    /// Takes the member `member_id` out of `group`, whichever client it is.
    pub fn evict(&self, group: &str, member_id: &str) -> Result<(), MemberError> {
        let hb = self.with_coordinator(group, |c| {
            self.wire.heartbeat(c, group, member_id, -1, None, -1, None)
        })?;
        match hb.error {
            0 | UNKNOWN_MEMBER_ID => Ok(()),
            _ => Err(MemberError::Unavailable(format!(
                "leave: {}",
                hb.error_name.unwrap_or_default()
            ))),
        }
    }

    /// Runs `call` against `group`'s coordinator, finding it again when it moved
    /// or could not be found, for up to [`COORDINATOR_WAIT`]: a coordinator moves
    /// whenever the leadership of its `__consumer_offsets` partition does (a broker
    /// lost, or the cluster's own preferred-leader rebalancing), and the new one
    /// answers `COORDINATOR_LOAD_IN_PROGRESS` until it has read that partition.
    fn with_coordinator<T: CoordinatorError>(
        &self,
        group: &str,
        call: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, MemberError> {
        patiently(|| {
            let known = self
                .coordinators
                .lock()
                .expect("coordinators lock")
                .get(group)
                .cloned();
            let found = match known {
                Some(c) => Ok(c),
                None => self
                    .wire
                    .find_coordinator(&self.bootstrap, group)
                    .inspect(|c| {
                        self.coordinators
                            .lock()
                            .expect("coordinators lock")
                            .insert(group.to_string(), c.clone());
                    }),
            };
            let failed = match found {
                Ok(coordinator) => match call(&coordinator) {
                    Ok(answer) if !answer.moved() => return Ok(answer),
                    Ok(_) => format!("{coordinator} is no longer the coordinator"),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            self.coordinators
                .lock()
                .expect("coordinators lock")
                .remove(group);
            Err(failed)
        })
    }

    /// Names the topic ids of an assignment, asking the cluster for the ids of
    /// `topics` when one is not known yet.
    fn named(
        &self,
        group: &str,
        topics: &[&str],
        assignment: &[([u8; 16], Vec<i32>)],
    ) -> Result<Vec<(String, Vec<i32>)>, MemberError> {
        let missing = {
            let names = self.names.lock().expect("names lock");
            assignment.iter().any(|(id, _)| !names.contains_key(id))
        };
        if missing {
            let coordinator = self
                .coordinators
                .lock()
                .expect("coordinators lock")
                .get(group)
                .cloned()
                .unwrap_or_else(|| self.bootstrap.split(',').next().unwrap_or("").to_string());
            let ids = self
                .wire
                .topic_ids(&coordinator, topics)
                .map_err(MemberError::Unavailable)?;
            let mut names = self.names.lock().expect("names lock");
            for (name, id) in ids {
                names.insert(id, name);
            }
        }
        let names = self.names.lock().expect("names lock");
        let mut out: Vec<(String, Vec<i32>)> = assignment
            .iter()
            .filter_map(|(id, ps)| {
                let mut ps = ps.clone();
                ps.sort_unstable();
                Some((names.get(id)?.clone(), ps))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Whether an answer says the coordinator moved (ask again elsewhere).
trait CoordinatorError {
    fn moved(&self) -> bool;
}

impl CoordinatorError for crate::wire::Heartbeat {
    fn moved(&self) -> bool {
        is_moved(self.error)
    }
}

/// A commit's answer: an error code per partition.
struct Codes(Vec<(i32, i16)>);

impl CoordinatorError for Codes {
    fn moved(&self) -> bool {
        self.0.iter().any(|(_, e)| is_moved(*e))
    }
}

/// Committed offsets by partition (a moved coordinator is an error there).
struct Offsets(Vec<(i32, i64)>);

impl CoordinatorError for Offsets {
    fn moved(&self) -> bool {
        false
    }
}

/// Committed offsets by topic and partition.
struct Offsets3(Vec<(String, i32, i64)>);

impl CoordinatorError for Offsets3 {
    fn moved(&self) -> bool {
        false
    }
}

/// A group's epoch and members.
struct Described((i32, Vec<crate::wire::MemberState>));

impl CoordinatorError for Described {
    fn moved(&self) -> bool {
        false
    }
}

/// One error code for the whole call.
struct Code(i16);

impl CoordinatorError for Code {
    fn moved(&self) -> bool {
        is_moved(self.0)
    }
}

fn is_moved(code: i16) -> bool {
    matches!(
        code,
        NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS
    )
}

/// Runs `ask` until it answers, for up to [`COORDINATOR_WAIT`], pausing between
/// tries (50 ms, doubling up to 1 s); its last error when it never does.
fn patiently<T>(mut ask: impl FnMut() -> Result<T, String>) -> Result<T, MemberError> {
    let deadline = std::time::Instant::now() + COORDINATOR_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        let last = match ask() {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        if std::time::Instant::now() + pause > deadline {
            return Err(MemberError::Unavailable(last));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
