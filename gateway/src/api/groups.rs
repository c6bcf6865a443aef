//! Consumer groups over plain HTTP: polling (membership, assignment, positions),
//! commits, and administration. The coordinator keeps membership in memory; the
//! log keeps committed offsets durably.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_log::{Topic, valid_name};
use sluice_openapi::{
    CommitRequest, GroupDescription, GroupList, GroupSummary, MapOnly, MemberDescription,
    PollResponse, Problem, ResetNamed, ResetRequest, ResetResponse, ResetTo, TopicOffset,
};
use utoipa::IntoParams;

use crate::api::{call, topic};
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, Query, parse_json};
use crate::session::Member;
use crate::state::AppState;
use crate::stream::encode::{JsonRecords, answer_buffer};
use crate::stream::poll::LongPoll;
use crate::stream::{DEFAULT_LIMIT, DEFAULT_MAX_BYTES, MAX_LIMIT, MAX_MAX_BYTES, MAX_WAIT_MS};
use crate::views::{group_names, group_topics};
use sluice_log::groups::GroupError;

/// Shortest and longest session timeouts a member may ask for.
const SESSION_RANGE_MS: (u64, u64) = (1_000, 300_000);

fn check_name(kind: &'static str, name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            kind,
            format!("'{name}' is not 1 to 249 characters of [A-Za-z0-9._-]"),
        ))
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Stale(detail) => {
                ApiError::new(StatusCode::CONFLICT, "stale_generation", detail)
            }
            GroupError::NotYours => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this consumer id belongs to another token subject",
            ),
            GroupError::UnknownMember => ApiError::new(
                StatusCode::NOT_FOUND,
                "member_not_found",
                "no live member with that consumer id in this group",
            ),
            GroupError::Active => ApiError::new(
                StatusCode::CONFLICT,
                "group_active",
                "the group has live members; wait until they leave or their sessions expire \
                 (deleting a group may pass force=true)",
            ),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollParams {
    /// This consumer's id, chosen by the client: `[A-Za-z0-9._-]{1,249}`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    consumer: String,
    /// Most records to return over all assigned partitions (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Byte budget of the records returned (default 1 MiB).
    #[param(minimum = 1, maximum = 67108864)]
    max_bytes: Option<usize>,
    /// Wait up to this many milliseconds (at most 60000) for records.
    #[param(minimum = 0, maximum = 60000)]
    wait_ms: Option<u64>,
    /// Commit what the previous poll returned before reading on.
    auto_commit: Option<bool>,
    /// The group's session timeout, taken from the poll that makes the group: a
    /// member that has not polled for this long loses its partitions (1000 to
    /// 300000 ms; default the server's `--group-session-timeout-ms`, 30 s). Later
    /// polls get the value in effect in the answer.
    #[param(minimum = 1000, maximum = 300000)]
    session_timeout_ms: Option<u64>,
    /// Where a group with no committed offset starts: `earliest` (default) or `latest`.
    reset: Option<ResetNamed>,
}

/// Poll as a member of a consumer group.
///
/// Registers or refreshes the consumer (no join call needed), rebalances the topic's
/// partitions over the live members, and returns records from the group's positions
/// in this consumer's partitions. Records returned but not committed come again
/// after a rebalance or a session expiry (at-least-once).
#[utoipa::path(get, path = "/v1/groups/{group}/topics/{topic}/records", tag = "groups",
    params(
        ("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        PollParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Generation, assignment and records (possibly none).", body = PollResponse),
        (status = 400, description = "`invalid_query`, `invalid_group`, `invalid_consumer`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover the topic or group, or the consumer id is another subject's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn poll(
    State(state): State<AppState>,
    principal: Principal,
    Path((group, name)): Path<(String, String)>,
    Query(params): Query<PollParams>,
) -> Result<Response, ApiError> {
    principal.require(Object::Consume(&name))?;
    principal.require(Object::Group(&group))?;
    check_name("invalid_group", &group)?;
    check_name("invalid_consumer", &params.consumer)?;
    let topic = topic(&state, &name)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let max_bytes = params.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let wait_ms = params.wait_ms.unwrap_or(0);
    let session_ms = params.session_timeout_ms;
    if !(1..=MAX_LIMIT).contains(&limit)
        || !(1..=MAX_MAX_BYTES).contains(&max_bytes)
        || wait_ms > MAX_WAIT_MS
        || session_ms.is_some_and(|ms| !(SESSION_RANGE_MS.0..=SESSION_RANGE_MS.1).contains(&ms))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "limit must be 1..={MAX_LIMIT}, max_bytes 1..={MAX_MAX_BYTES}, wait_ms at most \
                 {MAX_WAIT_MS}, session_timeout_ms {}..={}",
                SESSION_RANGE_MS.0, SESSION_RANGE_MS.1
            ),
        ));
    }
    let member = Member {
        group: &group,
        topic: &topic,
        consumer: &params.consumer,
        session: session_ms.map(Duration::from_millis),
        subject: principal.sub.as_deref(),
        reset: params.reset.unwrap_or(ResetNamed::Earliest),
    };
    let mut poll = LongPoll::new(Duration::from_millis(wait_ms), || {
        state.waiters.subscribe_topic(topic.id())
    });
    let mut auto_commit = params.auto_commit.unwrap_or(false);
    loop {
        let mut turn = member.turn(&state).await?;
        if std::mem::take(&mut auto_commit) {
            let offsets: Vec<(u32, u64)> = turn
                .positions
                .iter()
                .filter(|(p, pos)| *pos > turn.committed[*p as usize])
                .copied()
                .collect();
            member.commit(&state, &turn, offsets).await?;
        }
        let positions = std::mem::take(&mut turn.positions);
        let (body, read) = read_assigned(&state, &topic, positions, limit, max_bytes).await?;
        let got = read.iter().any(|(_, from, next)| next > from);
        // A member not yet told of the current generation (a rebalance before or
        // during this poll) is answered at once, so it learns its assignment
        // without waiting out the poll.
        if got || poll.done() || !turn.view.informed {
            if got && !member.hand_out(&state, &turn, &read) {
                // A rebalance happened while reading: hand nothing out, poll again.
                continue;
            }
            let records = read.iter().map(|(_, from, next)| next - from).sum();
            state.stats.delivered(&name, records, body.len() as u64);
            member.answered(&state, turn.view.generation);
            return Ok(poll_response(&turn.view, body));
        }
        // Heartbeat again within the interval the group asks for, so a member
        // never expires while it waits.
        let _ = tokio::time::timeout(turn.refresh, poll.wait(Some(&mut turn.rebalanced))).await;
    }
}

/// Reads the assigned partitions from their positions into one JSON array; returns
/// it with `(partition, from, next)` per partition read.
async fn read_assigned(
    state: &AppState,
    topic: &Arc<Topic>,
    positions: Vec<(u32, u64)>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<u8>, Vec<(u32, u64, u64)>), ApiError> {
    let log = state.log.clone();
    let topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut body = JsonRecords::new(answer_buffer(limit, max_bytes), false);
        let mut read = Vec::with_capacity(positions.len());
        let (mut left, mut bytes_left) = (limit, max_bytes);
        // Start at a different partition each time so none starves the others.
        let shift = (sluice_log::now_ms() as usize) % positions.len().max(1);
        for i in 0..positions.len() {
            let (p, pos) = positions[(i + shift) % positions.len()];
            if left == 0 || bytes_left == 0 {
                read.push((p, pos, pos));
                continue;
            }
            let info = topic.partition(p).expect("partition in range");
            // Retention passed the position: continue from the oldest record.
            let from = pos.clamp(info.start_offset, info.end_offset);
            let before = body.buf.len();
            let outcome = body.read(&log, &topic, p, from, left, bytes_left);
            let size = body.buf.len() - before;
            let outcome = match outcome {
                Ok(o) => o,
                Err(sluice_log::Error::OffsetOutOfRange { .. }) => {
                    read.push((p, pos, pos));
                    continue;
                }
                Err(e) => return Err(e),
            };
            left -= outcome.records;
            bytes_left = bytes_left.saturating_sub(size);
            read.push((p, pos, outcome.next_offset.max(pos)));
        }
        Ok((body.buf, read))
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(ApiError::from)
}

fn poll_response(view: &sluice_log::groups::MemberView, records: Vec<u8>) -> Response {
    let mut body = Vec::with_capacity(records.len() + 96);
    body.extend_from_slice(b"{\"generation\":");
    body.extend_from_slice(itoa::Buffer::new().format(view.generation).as_bytes());
    body.extend_from_slice(b",\"assignment\":");
    body.extend_from_slice(&serde_json::to_vec(&view.assignment).unwrap_or_default());
    body.extend_from_slice(b",\"session_timeout_ms\":");
    let ms = view.session_timeout.as_millis() as u64;
    body.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
    body.extend_from_slice(b",\"records\":[");
    body.extend_from_slice(&records);
    body.extend_from_slice(b"]}");
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Commit offsets for a group, atomically and durably.
///
/// Each offset is the next one to read. The commit must name the generation of the
/// consumer's last poll and only partitions assigned to it; otherwise 409.
#[utoipa::path(post, path = "/v1/groups/{group}/offsets", tag = "groups",
    params(("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    request_body = CommitRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Committed; durable."),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_group`, `invalid_consumer`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`, `partition_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale_generation`: an older generation, or a partition not assigned to this consumer.", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "`offset_out_of_range`: an offset beyond the partition's end.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn commit(
    State(state): State<AppState>,
    principal: Principal,
    Path(group): Path<String>,
    Body(body, _in_flight): Body,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Group(&group))?;
    check_name("invalid_group", &group)?;
    let MapOnly(req): MapOnly<CommitRequest> = parse_json(&body)?;
    check_name("invalid_consumer", &req.consumer)?;
    let mut offsets = Vec::with_capacity(req.offsets.len());
    for o in &req.offsets {
        principal.require(Object::Consume(&o.topic))?;
        let t = topic(&state, &o.topic)?;
        crate::session::check_committable(&state, &t, o.partition, o.offset)?;
        offsets.push((t, o.partition, o.offset));
    }
    if state.cluster.is_some() {
        return commit_to_cluster(&state, &group, &req, offsets).await;
    }
    let owned: Vec<(&str, u32)> = req
        .offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.partition))
        .collect();
    state.groups.check_commit(
        &group,
        &req.consumer,
        req.generation,
        &owned,
        principal.sub.as_deref(),
        state.group_config.bind_subject,
    )?;
    if offsets.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let log = state.log.clone();
    let moved: Vec<(String, u32, u64)> = offsets
        .iter()
        .map(|(t, p, o)| (t.name().to_string(), *p, *o))
        .collect();
    call(|r| log.commit_offsets(&group, offsets, r)).await?;
    for (t, p, o) in moved {
        state.groups.set_positions(&group, &t, &[(p, o)], true);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Offsets (partition, next offset) of one topic.
type TopicOffsets = (Arc<Topic>, Vec<(u32, u64)>);

/// A commit where the cluster keeps the group: per topic, as the consumer's
/// member on it at the generation named; the cluster refuses another epoch.
/// It does not check the partitions (KIP-848 fences commits by epoch alone), so
/// they are checked here against what the member holds.
async fn commit_to_cluster(
    state: &AppState,
    group: &str,
    req: &CommitRequest,
    offsets: Vec<(Arc<Topic>, u32, u64)>,
) -> Result<StatusCode, ApiError> {
    let mut by_topic: Vec<TopicOffsets> = Vec::new();
    for (t, p, o) in offsets {
        match by_topic.iter_mut().find(|(x, _)| x.name() == t.name()) {
            Some((_, os)) => os.push((p, o)),
            None => by_topic.push((t, vec![(p, o)])),
        }
    }
    for (t, os) in by_topic {
        let partitions: Vec<u32> = os.iter().map(|(p, _)| *p).collect();
        if !state
            .shares
            .holds(group, t.name(), &req.consumer, req.generation, &partitions)
        {
            // This gateway has not seen the member hold them at that epoch
            // (another may have): the coordinator says what it holds.
            let (_, members) = crate::session::members(state, group)?;
            let held = members
                .iter()
                .find(|m| m.consumer == req.consumer && m.topic == t.name())
                .is_some_and(|m| partitions.iter().all(|p| m.assignment.contains(p)));
            if !held {
                return Err(GroupError::Stale(format!(
                    "'{}' does not hold all of partitions {partitions:?} of '{}'",
                    req.consumer,
                    t.name()
                ))
                .into());
            }
        }
        crate::session::commit_member(state, group, &t, &req.consumer, req.generation, os).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// List consumer groups: those with live members or committed offsets.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The groups the token may use, sorted by name.", body = GroupList),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_groups(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<GroupList>, ApiError> {
    let names = group_names(&state)?;
    let groups = names
        .into_iter()
        .filter(|(g, _)| principal.may(Object::Group(g)))
        .map(|(g, topics)| {
            let (generation, members) = crate::session::members(&state, &g)?;
            Ok(GroupSummary {
                members: members.len(),
                generation,
                topics: topics.into_iter().collect(),
                group: g,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(GroupList { groups }))
}

/// Describe a group: members, assignment, committed offsets and lag per partition.
#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group.", body = GroupDescription),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover the group or one of its topics.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`group_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn describe_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(group): Path<String>,
) -> Result<Json<GroupDescription>, ApiError> {
    principal.require(Object::Group(&group))?;
    let (generation, members) = crate::session::members(&state, &group)?;
    let mut topics: Vec<Arc<Topic>> = tokio::task::block_in_place(|| state.log.committed_groups())?
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(_, t)| t)
        .unwrap_or_default();
    for m in &members {
        if !topics.iter().any(|t| t.name() == m.topic)
            && let Some(t) = state.log.topic(&m.topic)
        {
            topics.push(t);
        }
    }
    if topics.is_empty() && members.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "group_not_found",
            format!("group '{group}' has no members and no committed offsets"),
        ));
    }
    // Offsets and lag tell about the topics' contents: reading them takes what
    // reading the topics does.
    for t in &topics {
        principal.require(Object::Consume(t.name()))?;
    }
    topics.sort_by(|a, b| a.name().cmp(b.name()));
    let out_topics = group_topics(&state, &group, &members, topics)?;
    Ok(Json(GroupDescription {
        generation,
        members: members
            .into_iter()
            .map(|m| MemberDescription {
                consumer: m.consumer,
                topic: m.topic,
                last_seen_ms_ago: m.idle.as_millis() as u64,
                session_timeout_ms: m.session_timeout.as_millis() as u64,
                assignment: m.assignment,
            })
            .collect(),
        topics: out_topics,
        group,
    }))
}

/// Leave a group now: the consumer's partitions go to the others at once.
#[utoipa::path(delete, path = "/v1/groups/{group}/consumers/{consumer}", tag = "groups",
    params(
        ("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("consumer" = String, Path, description = "Consumer id", pattern = "^[A-Za-z0-9._-]{1,249}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Gone; the group rebalanced."),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover the group or the topics the member reads, or the consumer id is another subject's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`member_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    principal: Principal,
    Path((group, consumer)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Group(&group))?;
    // Evicting a member takes what its polls take: read access to its topics.
    let (_, members) = crate::session::members(&state, &group)?;
    let topics: Vec<String> = members
        .into_iter()
        .filter(|m| m.consumer == consumer)
        .map(|m| m.topic)
        .collect();
    for t in &topics {
        principal.require(Object::Consume(t))?;
    }
    if let Some(cluster) = state.cluster.clone() {
        let topics: Vec<Arc<Topic>> = topics.iter().filter_map(|t| state.log.topic(t)).collect();
        if topics.is_empty() {
            return Err(GroupError::UnknownMember.into());
        }
        state.shares.forget(&group, Some(&consumer));
        tokio::task::spawn_blocking(move || {
            for t in topics {
                cluster.leave(&group, &t, &consumer)?;
            }
            Ok::<_, sluice_log::Error>(())
        })
        .await
        .map_err(|_| ApiError::internal())??;
        return Ok(StatusCode::NO_CONTENT);
    }
    state.groups.leave(
        &group,
        &consumer,
        principal.sub.as_deref(),
        state.group_config.bind_subject,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move a group's committed offsets for a topic (admin).
///
/// Refused with 409 while the group has live members on the topic: they would read
/// on from positions moved under them. Members that join after it (once the others
/// left or expired) start from the new offsets.
#[utoipa::path(post, path = "/v1/groups/{group}/offsets/reset", tag = "groups",
    params(("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    request_body = ResetRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The committed offsets, one per partition; durable.", body = ResetResponse),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_group`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_active`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reset_offsets(
    State(state): State<AppState>,
    principal: Principal,
    Path(group): Path<String>,
    Body(body, _in_flight): Body,
) -> Result<Json<ResetResponse>, ApiError> {
    principal.require(Object::Admin)?;
    check_name("invalid_group", &group)?;
    let MapOnly(req): MapOnly<ResetRequest> = parse_json(&body)?;
    let t = topic(&state, &req.topic)?;
    let (_, members) = crate::session::members(&state, &group)?;
    if members.iter().any(|m| m.topic == req.topic) {
        return Err(GroupError::Active.into());
    }
    let mut offsets = Vec::new();
    for info in t.partitions() {
        let o = match req.to {
            ResetTo::Named(ResetNamed::Earliest) => info.start_offset,
            ResetTo::Named(ResetNamed::Latest) => info.end_offset,
            ResetTo::Offset { offset } => offset.clamp(info.start_offset, info.end_offset),
            ResetTo::Timestamp { timestamp } => {
                let (log, t) = (state.log.clone(), t.clone());
                tokio::task::spawn_blocking(move || {
                    log.offset_for_timestamp(&t, info.partition, timestamp)
                })
                .await
                .map_err(|_| ApiError::internal())??
            }
        };
        offsets.push((t.clone(), info.partition, o));
    }
    let log = state.log.clone();
    let answer: Vec<TopicOffset> = offsets
        .iter()
        .map(|(t, p, o)| TopicOffset {
            topic: t.name().to_string(),
            partition: *p,
            offset: *o,
        })
        .collect();
    let positions: Vec<(u32, u64)> = offsets.iter().map(|(_, p, o)| (*p, *o)).collect();
    call(|r| log.commit_offsets(&group, offsets, r)).await?;
    state
        .groups
        .set_positions(&group, &req.topic, &positions, false);
    Ok(Json(ResetResponse { offsets: answer }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteGroupParams {
    /// Delete even while the group has live members.
    force: Option<bool>,
}

/// Delete a group: its committed offsets and membership (admin).
#[utoipa::path(delete, path = "/v1/groups/{group}", tag = "groups",
    params(
        ("group" = String, Path, description = "Group name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        DeleteGroupParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`invalid_query`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`group_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_active`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(group): Path<String>,
    Query(params): Query<DeleteGroupParams>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    let (generation, _) = crate::session::members(&state, &group)?;
    let live = generation.is_some();
    if let Some(cluster) = state.cluster.clone() {
        // The cluster deletes only a group with no members: with force, they
        // are taken out first.
        if live {
            if !params.force.unwrap_or(false) {
                return Err(GroupError::Active.into());
            }
            let g = group.clone();
            tokio::task::spawn_blocking(move || cluster.clear(&g))
                .await
                .map_err(|_| ApiError::internal())??;
        }
        state.shares.forget(&group, None);
    } else {
        state.groups.remove(&group, params.force.unwrap_or(false))?;
    }
    let log = state.log.clone();
    let stored = call(|r| log.delete_group(&group, r)).await?;
    if stored == 0 && !live {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "group_not_found",
            format!("group '{group}' has no members and no committed offsets"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
