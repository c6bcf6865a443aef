//! The one poll cycle of a consumer-group member, driven by both the HTTP poll
//! (`GET /v1/groups/{g}/topics/{t}/records`) and the WebSocket group subscription.
//!
//! A turn joins or refreshes the member, makes sure the partitions it owns have a
//! committed offset, and takes the positions to read from; the caller reads, then
//! hands the records out only if the positions still hold ([`Member::hand_out`]),
//! and says when the member was told of its generation ([`Member::answered`]),
//! which is what lets revoked partitions move on (revoke before assign).

use std::sync::Arc;
use std::time::Duration;

use sluice_log::Topic;
use sluice_log::groups::MemberView;
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
}

impl Member<'_> {
    /// Joins or refreshes the member and takes its positions; takes another turn
    /// by itself when the generation moved in between.
    pub(crate) async fn turn(&self, state: &AppState) -> Result<Turn, ApiError> {
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
                return Ok(Turn {
                    view,
                    committed,
                    positions,
                    rebalanced,
                });
            }
        }
    }

    /// Moves the positions past what was read, `(partition, from, next)` each, if
    /// the turn's generation still holds; if not, the records must not be handed
    /// out (another turn will read them again).
    pub(crate) fn hand_out(&self, state: &AppState, turn: &Turn, read: &[(u32, u64, u64)]) -> bool {
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
        state
            .groups
            .answered(self.group, self.topic.name(), self.consumer, generation);
    }
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
                    initial.push((topic.clone(), p as u32, start));
                }
                out.push(start);
            }
        }
    }
    if !initial.is_empty() {
        let log = state.log.clone();
        call(|r| log.commit_offsets(group, initial, r)).await?;
    }
    Ok(out)
}
