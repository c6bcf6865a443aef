//! Topic administration: create, list, describe, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sluice_log::{Compaction, TopicConfig};
use sluice_openapi::{Cleanup, CreateTopic, MapOnly, PartitionInfo, Problem, Topic, TopicList};

use crate::api::{call, topic};
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, parse_json};
use crate::state::AppState;
use crate::views::may_see;

pub(crate) fn describe(t: &sluice_log::Topic, epoch: &str) -> Topic {
    let parts: Vec<PartitionInfo> = t
        .partitions()
        .into_iter()
        .map(|p| PartitionInfo {
            partition: p.partition,
            start_offset: p.start_offset,
            end_offset: p.end_offset,
            bytes: p.bytes,
        })
        .collect();
    let c = t.config();
    Topic {
        name: t.name().to_string(),
        partition_count: c.partitions,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        cleanup: if c.compaction.is_some() {
            Cleanup::Compact
        } else {
            Cleanup::Delete
        },
        tombstone_retention_ms: c.compaction.map(|c| c.tombstone_retention_ms),
        created_ms: t.created_ms(),
        records: parts.iter().map(|p| p.end_offset - p.start_offset).sum(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        log_epoch: epoch.to_string(),
        partitions: parts,
    }
}

/// Create a topic.
#[utoipa::path(post, path = "/v1/topics", tag = "topics",
    request_body = CreateTopic,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; durable.", body = Topic),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (bad name or partition count).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`topic_exists`.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_topic(
    State(state): State<AppState>,
    principal: Principal,
    Body(body, _in_flight): Body,
) -> Result<(StatusCode, Json<Topic>), ApiError> {
    principal.require(Object::Admin)?;
    let MapOnly(req): MapOnly<CreateTopic> = parse_json(&body)?;
    let in_range = |v: Option<u64>| v.is_none_or(|v| (1..=i64::MAX as u64).contains(&v));
    if !in_range(req.retention_ms) || !in_range(req.retention_bytes) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "retention_ms and retention_bytes must be between 1 and 2^63 - 1 when given",
        ));
    }
    if let Some(t) = req.tombstone_retention_ms {
        if req.cleanup != Cleanup::Compact {
            return Err(ApiError::bad_request(
                "invalid_request",
                "tombstone_retention_ms applies to topics with \"cleanup\": \"compact\" only",
            ));
        }
        if t > i64::MAX as u64 {
            return Err(ApiError::bad_request(
                "invalid_request",
                "tombstone_retention_ms must be at most 2^63 - 1",
            ));
        }
    }
    let config = TopicConfig {
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
        compaction: match req.cleanup {
            Cleanup::Delete => None,
            Cleanup::Compact => Some(Compaction {
                tombstone_retention_ms: req
                    .tombstone_retention_ms
                    .unwrap_or(Compaction::default().tombstone_retention_ms),
            }),
        },
    };
    let log = state.log.clone();
    let t = call(|r| log.create_topic(&req.name, config, r)).await?;
    Ok((
        StatusCode::CREATED,
        Json(describe(&t, &state.log.topic_epoch(&t))),
    ))
}

/// List topics.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The topics the token may produce to or read, sorted by name.", body = TopicList),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_topics(
    State(state): State<AppState>,
    principal: Principal,
) -> Json<TopicList> {
    Json(TopicList {
        topics: state
            .log
            .topics()
            .iter()
            .filter(|t| may_see(&principal, t.name()))
            .map(|t| describe(t, &state.log.topic_epoch(t)))
            .collect(),
    })
}

/// Describe a topic: settings and per-partition offsets.
#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The topic.", body = Topic),
        (status = 404, description = "`topic_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_topic(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Topic>, ApiError> {
    if !may_see(&principal, &name) {
        principal.require(Object::Consume(&name))?;
    }
    let t = topic(&state, &name)?;
    let (log, t2) = (state.log.clone(), t.clone());
    let _ = tokio::task::spawn_blocking(move || log.refresh_sizes(&t2)).await;
    Ok(Json(describe(&t, &state.log.topic_epoch(&t))))
}

/// Delete a topic and all its records.
#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; its records are purged in the background."),
        (status = 404, description = "`topic_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_topic(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    let log = state.log.clone();
    call(|r| log.delete_topic(&name, r)).await?;
    state.stats.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}
