//! The one poll cycle of a consumer-group member, driven by both the HTTP poll
//! (`GET /v1/groups/{g}/topics/{t}/records`) and the WebSocket group subscription.
//!
//! A turn joins or refreshes the member, makes sure the partitions it owns have a
//! committed offset, and takes the positions to read from; the caller reads, then
//! hands the records out only if the positions still hold ([`Member::hand_out`]),
//! and says when the member was told of its generation ([`Member::answered`]),
//! which is what lets revoked partitions move on (revoke before assign).
//!
//! Where the storage engine's cluster keeps the groups
//! ([`sluice_log::ClusterGroups`], Kafka), a turn is a heartbeat to it: the
//! member's epoch is its generation and the cluster's answer its assignment, and
//! the cluster holds back a partition from its next owner until the last owner's
//! next heartbeat says it gave the partition up (revoke before assign again, kept
//! by the cluster, so it holds across gateways). This gateway only remembers how
//! far it handed each member's partitions out ([`Shares`]): a member whose next
//! poll reaches another gateway goes on from its committed offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_log::groups::{MemberInfo, MemberView};
use sluice_log::{ClusterGroups, Topic};
use sluice_openapi::ResetNamed;
use tokio::sync::watch;

use crate::api::call;
use crate::error::ApiError;
use crate::state::AppState;

/// One consumer of a group on one topic.
pub(crate) struct Member<'a> {
    pub group: &'a str,
    pub topic: &'a Arc<Topic>,
    pub consumer: &'a str,
    /// The session timeout to ask for if this poll makes the group.
    pub session: Option<Duration>,
    /// The token subject polling, when members are bound to subjects.
    pub subject: Option<&'a str>,
    /// Where partitions with no committed offset start.
    pub reset: ResetNamed,
}

/// What a turn found.
pub(crate) struct Turn {
    pub view: MemberView,
    /// The committed offset of every partition of the topic.
    pub committed: Vec<u64>,
    /// `(partition, position)` of each partition the member owns.
    pub positions: Vec<(u32, u64)>,
    /// Changes when the group's generation moves after this turn's join.
    pub rebalanced: watch::Receiver<u64>,
    /// How soon to take another turn when nothing happens, to keep the session.
    pub refresh: Duration,
}

/// How far this gateway handed out the partitions of members of cluster-kept
/// groups, by (group, topic, consumer).
#[derive(Default)]
pub(crate) struct Shares {
    held: Mutex<HashMap<(String, String, String), Held>>,
}

/// One member's share as this gateway last saw it.
struct Held {
    epoch: u64,
    partitions: Vec<u32>,
    /// Whether the member was told of this epoch and partitions.
    told: bool,
    /// Next offset to hand out, by partition, at `epoch`.
    positions: HashMap<u32, u64>,
    /// When this gateway last served the member.
    seen: std::time::Instant,
}

/// A member this gateway has not served for this long is forgotten (longer
/// than any session, so it is gone from the group too, or served elsewhere).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl Shares {
    fn key(member: &Member<'_>) -> (String, String, String) {
        (
            member.group.to_string(),
            member.topic.name().to_string(),
            member.consumer.to_string(),
        )
    }

    /// Whether this gateway saw `consumer` hold all of `partitions` of `topic`
    /// at `epoch`.
    pub(crate) fn holds(
        &self,
        group: &str,
        topic: &str,
        consumer: &str,
        epoch: u64,
        partitions: &[u32],
    ) -> bool {
        let held = self.held.lock().expect("shares lock");
        let key = (group.to_string(), topic.to_string(), consumer.to_string());
        held.get(&key).is_some_and(|h| {
            h.epoch == epoch && partitions.iter().all(|p| h.partitions.contains(p))
        })
    }

    /// Forgets `consumer` of `group` (on every topic), or every member of it.
    pub(crate) fn forget(&self, group: &str, consumer: Option<&str>) {
        self.held
            .lock()
            .expect("shares lock")
            .retain(|(g, _, c), _| g != group || consumer.is_some_and(|x| x != c));
    }
}

impl Member<'_> {
    /// Joins or refreshes the member and takes its positions; takes another turn
    /// by itself when the generation moved in between.
    pub(crate) async fn turn(&self, state: &AppState) -> Result<Turn, ApiError> {
        if let Some(cluster) = &state.cluster {
            return self.cluster_turn(state, cluster.clone()).await;
        }
        let name = self.topic.name();
        loop {
            let view = state.groups.join(
                self.group,
                name,
                self.topic.id(),
                self.topic.partition_count(),
                self.consumer,
                self.session,
                self.subject,
                state.group_config.bind_subject,
            )?;
            let rebalanced = state.group_changes.subscribe(self.group.to_string());
            let committed =
                ensure_committed(state, self.group, self.topic, &view.assignment, self.reset)
                    .await?;
            let positions =
                state
                    .groups
                    .positions(self.group, name, self.consumer, view.generation, |p| {
                        committed[p as usize]
                    });
            if let Some(positions) = positions {
                let refresh = view.session_timeout / 3;
                return Ok(Turn {
                    view,
                    committed,
                    positions,
                    rebalanced,
                    refresh,
                });
            }
        }
    }

    /// Moves the positions past what was read, `(partition, from, next)` each, if
    /// the turn's generation still holds; if not, the records must not be handed
    /// out (another turn will read them again).
    pub(crate) fn hand_out(&self, state: &AppState, turn: &Turn, read: &[(u32, u64, u64)]) -> bool {
        if state.cluster.is_some() {
            let mut held = state.shares.held.lock().expect("shares lock");
            let Some(h) = held.get_mut(&Shares::key(self)) else {
                return false;
            };
            if h.epoch != turn.view.generation {
                return false;
            }
            for &(p, _, next) in read {
                h.positions.insert(p, next);
            }
            return true;
        }
        state.groups.advance(
            self.group,
            self.topic.name(),
            self.consumer,
            turn.view.generation,
            read,
        )
    }

    /// Records that the member was told of `generation` and its assignment.
    pub(crate) fn answered(&self, state: &AppState, generation: u64) {
        if state.cluster.is_some() {
            let mut held = state.shares.held.lock().expect("shares lock");
            if let Some(h) = held.get_mut(&Shares::key(self))
                && h.epoch == generation
            {
                h.told = true;
            }
            return;
        }
        state
            .groups
            .answered(self.group, self.topic.name(), self.consumer, generation);
    }
}

impl Member<'_> {
    /// A turn against the cluster: heartbeat, committed offsets, and where this
    /// gateway got to handing them out at the same epoch.
    async fn cluster_turn(
        &self,
        state: &AppState,
        cluster: Arc<dyn ClusterGroups>,
    ) -> Result<Turn, ApiError> {
        let rebalanced = state.group_changes.subscribe(self.group.to_string());
        let (group, topic, consumer) = (
            self.group.to_string(),
            self.topic.clone(),
            self.consumer.to_string(),
        );
        let (session, log) = (self.session, state.log.clone());
        // The heartbeat and the read of the committed offsets go to the
        // coordinator side by side.
        let heartbeat = tokio::task::spawn_blocking({
            let (cluster, group, topic) = (cluster.clone(), group.clone(), topic.clone());
            move || cluster.heartbeat(&group, &topic, &consumer, session)
        });
        let stored = tokio::task::spawn_blocking({
            let (group, topic) = (group.clone(), topic.clone());
            move || log.committed_offsets(&group, &topic)
        });
        let (share, stored) = tokio::join!(heartbeat, stored);
        let share = share.map_err(|_| ApiError::internal())??;
        let stored = stored.map_err(|_| ApiError::internal())??;
        let (committed, initial) = starts(&topic, stored, &share.partitions, self.reset);
        if !initial.is_empty() {
            commit_member(
                state,
                self.group,
                self.topic,
                self.consumer,
                share.epoch,
                initial,
            )
            .await?;
        }
        let mut held = state.shares.held.lock().expect("shares lock");
        let key = Shares::key(self);
        if !held.contains_key(&key) && held.len() % 1024 == 1023 {
            // Members come and go by the id they choose: those long gone go.
            held.retain(|_, h| h.seen.elapsed() < FORGET_AFTER);
        }
        let h = held.entry(key).or_insert_with(|| Held {
            epoch: u64::MAX,
            partitions: Vec::new(),
            told: false,
            positions: HashMap::new(),
            seen: std::time::Instant::now(),
        });
        h.seen = std::time::Instant::now();
        // A new epoch starts from the committed offsets (what was handed out
        // before it comes again, as after any rebalance); partitions given up at
        // the same epoch just go.
        if h.epoch != share.epoch {
            h.positions.clear();
        }
        let changed = h.epoch != share.epoch || h.partitions != share.partitions;
        if changed {
            h.positions.retain(|p, _| share.partitions.contains(p));
            h.epoch = share.epoch;
            h.partitions.clone_from(&share.partitions);
            h.told = false;
        }
        let positions = share
            .partitions
            .iter()
            .map(|&p| {
                let c = committed[p as usize];
                (p, h.positions.get(&p).map_or(c, |&at| at.max(c)))
            })
            .collect();
        let informed = h.told;
        drop(held);
        if changed {
            // Partitions moved: this gateway's other members of the group
            // heartbeat now rather than at their next interval, so a move
            // settles in one round here (the cluster paces the others).
            state.group_changes.notify(self.group);
        }
        let view = MemberView {
            generation: share.epoch,
            assignment: share.partitions,
            informed,
            session_timeout: share.session_timeout,
        };
        Ok(Turn {
            view,
            committed,
            positions,
            rebalanced,
            refresh: share.heartbeat_interval.max(Duration::from_millis(100)),
        })
    }

    /// Commits `offsets` (partition, next offset) of the member's topic, as the
    /// member of `turn`'s generation.
    pub(crate) async fn commit(
        &self,
        state: &AppState,
        turn: &Turn,
        offsets: Vec<(u32, u64)>,
    ) -> Result<(), ApiError> {
        if offsets.is_empty() {
            return Ok(());
        }
        commit_member(
            state,
            self.group,
            self.topic,
            self.consumer,
            turn.view.generation,
            offsets,
        )
        .await
    }
}

/// Commits `offsets` of `topic` for `consumer` of `group` at `generation`: to the
/// cluster as that member where the cluster keeps groups, else to the log (the
/// coordinator checked the generation).
pub(crate) async fn commit_member(
    state: &AppState,
    group: &str,
    topic: &Arc<Topic>,
    consumer: &str,
    generation: u64,
    offsets: Vec<(u32, u64)>,
) -> Result<(), ApiError> {
    if let Some(cluster) = state.cluster.clone() {
        let (group, topic, consumer) = (group.to_string(), topic.clone(), consumer.to_string());
        return tokio::task::spawn_blocking(move || {
            cluster.commit(&group, &topic, &consumer, generation, &offsets)
        })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from);
    }
    let log = state.log.clone();
    let offsets = offsets
        .into_iter()
        .map(|(p, o)| (topic.clone(), p, o))
        .collect();
    call(|r| log.commit_offsets(group, offsets, r)).await
}

/// Refuses a commit of `offset` (the next to read) in `partition` of `topic`
/// when the partition does not exist or the offset is beyond its end. Beyond
/// the end as this gateway knows it, the engine is asked for the end first:
/// another gateway may have handed out records written a moment ago.
pub(crate) fn check_committable(
    state: &AppState,
    topic: &Topic,
    partition: u32,
    offset: u64,
) -> Result<(), ApiError> {
    let info = topic.partition_checked(partition)?;
    if offset <= info.end_offset {
        return Ok(());
    }
    let end = tokio::task::block_in_place(|| state.log.end_offset(topic, partition));
    if offset <= end {
        return Ok(());
    }
    Err(sluice_log::Error::OffsetOutOfRange {
        offset,
        start: info.start_offset,
        end,
    }
    .into())
}

/// A group's generation and live members, from the coordinator or the cluster.
pub(crate) fn members(
    state: &AppState,
    group: &str,
) -> Result<(Option<u64>, Vec<MemberInfo>), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok((state.groups.generation(group), state.groups.members(group)));
    };
    // A call to the cluster: the runtime moves other tasks off this thread.
    let (epoch, members) = tokio::task::block_in_place(|| cluster.members(group))?;
    Ok((
        epoch,
        members
            .into_iter()
            .map(|m| MemberInfo {
                consumer: m.consumer,
                topic: m.topic,
                // The cluster does not say; it expires members on its own.
                idle: Duration::ZERO,
                session_timeout: m.session_timeout,
                assignment: m.partitions,
            })
            .collect(),
    ))
}

/// Where each partition of `topic` is read from for a group, given its stored
/// committed offsets (raised to the partition's start); and the owned
/// partitions with none, with where the reset policy starts them.
fn starts(
    topic: &Topic,
    stored: Vec<Option<u64>>,
    owned: &[u32],
    reset: ResetNamed,
) -> (Vec<u64>, Vec<(u32, u64)>) {
    let mut initial = Vec::new();
    let mut out = Vec::with_capacity(stored.len());
    for (p, c) in stored.into_iter().enumerate() {
        let info = topic.partition(p as u32).expect("partition in range");
        let start = match reset {
            ResetNamed::Earliest => info.start_offset,
            ResetNamed::Latest => info.end_offset,
        };
        match c {
            Some(c) => out.push(c.max(info.start_offset)),
            None => {
                if owned.contains(&(p as u32)) {
                    initial.push((p as u32, start));
                }
                out.push(start);
            }
        }
    }
    (out, initial)
}

/// The committed offsets of a topic's partitions; the owned partitions that have
/// none get one now, from the reset policy, durably, so a `latest` group does not
/// skip what is produced before its first commit.
async fn ensure_committed(
    state: &AppState,
    group: &str,
    topic: &Arc<Topic>,
    owned: &[u32],
    reset: ResetNamed,
) -> Result<Vec<u64>, ApiError> {
    let stored = state.log.committed_offsets(group, topic)?;
    let (out, initial) = starts(topic, stored, owned, reset);
    if !initial.is_empty() {
        let log = state.log.clone();
        let initial = initial
            .into_iter()
            .map(|(p, o)| (topic.clone(), p, o))
            .collect();
        call(|r| log.commit_offsets(group, initial, r)).await?;
    }
    Ok(out)
}
