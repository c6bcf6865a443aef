//! Views of domain state that several answers share: the HTTP handlers, `/v1/stats`
//! and the Prometheus metrics. Handlers never import from one another; what they
//! share lives here or in a layer (`stream`, `session`, `records`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_log::Topic;
use sluice_log::groups::MemberInfo;
use sluice_openapi::{GroupPartition, GroupTopic, TableDefinition, TableInfo, TablePartition};
use sluice_tables::Status;

use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// A topic is visible to whoever may produce to it or read it.
pub(crate) fn may_see(principal: &Principal, topic: &str) -> bool {
    principal.may(Object::Produce(topic)) || principal.may(Object::Consume(topic))
}

/// Every group with live members or committed offsets, with the topics it has them
/// on, sorted by name.
pub(crate) fn group_names(
    state: &AppState,
) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let mut names: BTreeMap<String, BTreeSet<String>> = Default::default();
    for (g, topics) in tokio::task::block_in_place(|| state.log.committed_groups())? {
        names
            .entry(g)
            .or_default()
            .extend(topics.iter().map(|t| t.name().to_string()));
    }
    let live = match &state.cluster {
        Some(cluster) => tokio::task::block_in_place(|| cluster.groups())?,
        None => state.groups.live_groups(),
    };
    for g in live {
        let (_, members) = crate::session::members(state, &g)?;
        let topics = members.into_iter().map(|m| m.topic);
        names.entry(g).or_default().extend(topics);
    }
    Ok(names)
}

/// A group's committed offsets, owners and lag on each of `topics`.
pub(crate) fn group_topics(
    state: &AppState,
    group: &str,
    members: &[MemberInfo],
    topics: Vec<Arc<Topic>>,
) -> Result<Vec<GroupTopic>, ApiError> {
    let mut out_topics = Vec::new();
    for t in topics {
        let committed = tokio::task::block_in_place(|| state.log.committed_offsets(group, &t))?;
        let partitions: Vec<GroupPartition> = t
            .partitions()
            .into_iter()
            .map(|info| {
                let c = committed[info.partition as usize];
                GroupPartition {
                    partition: info.partition,
                    owner: members
                        .iter()
                        .find(|m| m.topic == t.name() && m.assignment.contains(&info.partition))
                        .map(|m| m.consumer.clone()),
                    committed: c,
                    end_offset: info.end_offset,
                    lag: info.end_offset
                        - c.unwrap_or(info.start_offset)
                            .clamp(info.start_offset, info.end_offset),
                }
            })
            .collect();
        out_topics.push(GroupTopic {
            topic: t.name().to_string(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        });
    }
    Ok(out_topics)
}

/// A table's status as the wire type.
pub(crate) fn info(s: Status) -> TableInfo {
    let definition: TableDefinition = serde_json::to_value(&s.def)
        .and_then(serde_json::from_value)
        .expect("a table definition is a valid wire definition");
    let partitions: Vec<TablePartition> = s
        .partitions
        .iter()
        .map(|&(partition, applied, end)| TablePartition {
            partition,
            applied_offset: applied,
            end_offset: end,
            lag: end.saturating_sub(applied),
            folded_here: s.written_here.as_ref().map(|ps| ps.contains(&partition)),
        })
        .collect();
    TableInfo {
        name: s.def.name.clone(),
        definition,
        sql: s.sql,
        state: serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        reason: s.reason,
        rows: s.rows,
        skipped: s.skipped,
        created_ms: s.created_ms,
        lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
        written_here: s.written_here.map(|ps| !ps.is_empty()),
    }
}
